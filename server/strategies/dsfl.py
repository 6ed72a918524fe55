"""DS-FL: Distillation-Based Semi-Supervised Federated Learning for Communication-Efficient
Collaborative Training with Non-IID Private Data.

Sohei Itahara, Takayuki Nishio, Yusuke Koda, Masahiro Morikura and Koji Yamamoto,
IEEE Transactions on Mobile Computing, 2021. arXiv:2008.06180.

Clients send **probabilities** on the round's public subset. The server merges them with
entropy-reduction averaging (ERA: ``softmax(mean_probs / T_era)``, ``T_era = 0.1``) -- or, as an
ablation, a plain/example-weighted mean -- and distils the global model from the result. The
client side (``clients/dsfl.py``) must distil toward that consensus, train on its private data,
and predict probabilities on the next subset.
"""

import numpy as np

from fedkd import aggregation
from server.strategies.base import DistillationStrategy


class DSFL(DistillationStrategy):
    soft_label_kind = "probs"

    def aggregate(self, soft_labels: np.ndarray, num_examples: np.ndarray) -> np.ndarray:
        algo = self.cfg.algorithm
        if algo.aggregation == "era":
            return aggregation.era(soft_labels, temperature=algo.era_temperature)
        weights = num_examples if algo.aggregation == "weighted_mean" else None
        return aggregation.weighted_mean(soft_labels, weights)

    def to_probs(self, soft_labels: np.ndarray) -> np.ndarray:
        return soft_labels.astype(np.float64)

    def sharpen(self, probs: np.ndarray) -> np.ndarray:
        algo = self.cfg.algorithm
        if algo.aggregation != "era":
            return probs
        return aggregation.softmax(probs, temperature=algo.era_temperature).astype(np.float32)
