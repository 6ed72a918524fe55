"""DS-FL client (Itahara et al., IEEE TMC 2021, arXiv:2008.06180).

Shares **probabilities** ``softmax(logits)`` on the public subset; distils toward the server's
ERA consensus (already sharpened, so the digest runs at the configured temperature, 1 by
default), then trains on its private data. The server side is ``server/strategies/dsfl.py``.
"""

import numpy as np
import torch
from torch import Tensor

from clients.base import KDClient


class DSFLClient(KDClient):
    soft_label_kind = "probs"

    def soft_labels(self, logits: Tensor) -> np.ndarray:
        return torch.softmax(logits.double(), dim=-1).numpy()  # (n, K) float64
