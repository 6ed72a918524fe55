"""FedMD: Heterogenous Federated Learning via Model Distillation.

Daliang Li and Junpu Wang, NeurIPS 2019 Workshop on Federated Learning. arXiv:1910.03581.

Clients send **logits** on the round's public subset; the consensus is their (optionally
example-weighted) mean, softened by the distillation temperature ``T``: ``softmax(mean / T)``.
The client side (``clients/fedmd.py``) must digest the consensus (distil toward it at the same
``T``), then revisit its private data, then predict logits on the next subset.
"""

import numpy as np

from fedkd import aggregation
from server.strategies.base import DistillationStrategy


class FedMD(DistillationStrategy):
    soft_label_kind = "logits"

    def aggregate(self, soft_labels: np.ndarray, num_examples: np.ndarray) -> np.ndarray:
        weights = num_examples if self.cfg.algorithm.aggregation == "weighted_mean" else None
        mean_logits = aggregation.weighted_mean(soft_labels, weights)  # (n, K)
        return aggregation.softmax(mean_logits, self.cfg.algorithm.temperature).astype(np.float32)

    def to_probs(self, soft_labels: np.ndarray) -> np.ndarray:
        return aggregation.softmax(soft_labels, self.cfg.algorithm.temperature)
