"""DS-FL: Distillation-Based Semi-Supervised Federated Learning for Communication-Efficient
Collaborative Training with Non-IID Private Data.

Sohei Itahara, Takayuki Nishio, Yusuke Koda, Masahiro Morikura and Koji Yamamoto,
IEEE Transactions on Mobile Computing, 2021. arXiv:2008.06180.

Clients send **probabilities** on the round's public subset. The server merges them
(``algorithm.combine``, the mean by default), renormalises the rows, and sharpens the result with
entropy-reduction averaging (ERA: ``softmax(p / T_era)``, ``T_era = 0.1``; the default
``algorithm.postprocess``), then distils the global model from it. The client side
(``clients/dsfl.py``) must distil toward that consensus, train on its private data, and predict
probabilities on the next subset.
"""

import numpy as np

from fedkd import aggregation
from server.strategies.base import DistillationStrategy


class DSFL(DistillationStrategy):
    soft_label_kind = "probs"

    def to_probs(self, scores: np.ndarray) -> np.ndarray:
        """Merged probabilities, rows renormalised (a per-class merge leaves them unnormalised)."""
        return aggregation.normalize_rows(scores)
