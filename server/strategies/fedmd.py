"""FedMD: Heterogenous Federated Learning via Model Distillation.

Daliang Li and Junpu Wang, NeurIPS 2019 Workshop on Federated Learning. arXiv:1910.03581.

Clients send **logits** on the round's public subset; the consensus is their merge
(``algorithm.combine``: the mean by default), softened by the distillation temperature ``T``:
``softmax(mean / T)``. The client side (``clients/fedmd.py``) must digest the consensus (distil
toward it at the same ``T``), then revisit its private data, then predict logits on the next
subset.
"""

import numpy as np

from fedkd import aggregation
from fedkd.algorithms import LogitDistillation
from server.strategies.base import DistillationStrategy


class FedMD(DistillationStrategy):
    soft_label_kind = "logits"

    def prepare(self, stack: np.ndarray) -> np.ndarray:
        """The clients' logits centred and bounded in scale (``algorithm.bound_logits``)."""
        bound = isinstance(self.algorithm, LogitDistillation) and self.algorithm.bound_logits
        return aggregation.bound_logit_scale(stack) if bound else stack

    def to_probs(self, scores: np.ndarray) -> np.ndarray:
        """Merged logits softened by ``T``: ``softmax(scores / T)``."""
        return aggregation.softmax(scores, self.algorithm.temperature).astype(np.float32)
