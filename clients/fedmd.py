"""FedMD client (Li & Wang, NeurIPS 2019 FL workshop, arXiv:1910.03581).

Shares raw **logits** on the public subset; digests the server's consensus
``softmax(mean_logits / T)`` by distillation at the same temperature ``T``, then revisits its
private data. The server side is ``server/strategies/fedmd.py``.
"""

import numpy as np
from torch import Tensor

from clients.base import KDClient


class FedMDClient(KDClient):
    soft_label_kind = "logits"

    def soft_labels(self, logits: Tensor) -> np.ndarray:
        return logits.numpy()  # (n, K) float32
