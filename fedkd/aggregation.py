"""Aggregation of client soft labels into a consensus: pure numpy.

Every function takes a stack of client predictions of shape ``(num_clients, num_samples,
num_classes)`` and returns ``(num_samples, num_classes)``. Inputs may be float16 (as sent on the
wire); all arithmetic is done in float64 and the result is float32.
"""

from collections.abc import Callable
from typing import Final

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating]

ERA_TEMPERATURE: Final = 0.1


def softmax(logits: FloatArray, temperature: float = 1.0, axis: int = -1) -> NDArray[np.float64]:
    """Numerically stable ``softmax(logits / temperature)`` in float64."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _check_stack(stack: FloatArray) -> NDArray[np.float64]:
    arr = np.asarray(stack, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ValueError(
            f"expected (num_clients >= 1, num_samples, num_classes), got shape {arr.shape}"
        )
    return arr


def mean(stack: FloatArray, weights: FloatArray | None = None) -> NDArray[np.float32]:
    """Plain mean over clients (FedMD's consensus on logits). ``weights`` is ignored."""
    return _check_stack(stack).mean(axis=0).astype(np.float32)


def weighted_mean(stack: FloatArray, weights: FloatArray | None) -> NDArray[np.float32]:
    """Mean over clients weighted by ``weights`` (e.g. example counts), shape (num_clients,)."""
    arr = _check_stack(stack)
    if weights is None:
        return arr.mean(axis=0).astype(np.float32)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (arr.shape[0],) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(
            f"weights must be non-negative with a positive sum and shape ({arr.shape[0]},), "
            f"got {w!r}"
        )
    return np.tensordot(w / w.sum(), arr, axes=1).astype(np.float32)


def era(
    probs: FloatArray, weights: FloatArray | None = None, temperature: float = ERA_TEMPERATURE
) -> NDArray[np.float32]:
    """Entropy-reduction averaging (Itahara et al., DS-FL, IEEE TMC 2021, arXiv:2008.06180).

    ``softmax(mean_c probs[c] / T)``: averaging the clients' probabilities and sharpening the
    result with a low temperature (``T = 0.1`` in the paper) lowers the consensus' entropy,
    which counters the blurring that averaging non-IID clients causes.
    """
    return softmax(weighted_mean(probs, weights), temperature=temperature).astype(np.float32)


def class_weighted_mean(
    probs: FloatArray, class_weights: FloatArray
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Per-class weighted average of client probabilities, rows renormalised.

    ``consensus[n, c] ∝ sum_k w[k, c] * probs[k, n, c] / sum_k w[k, c]``: for each class, the
    clients that hold more examples of it speak louder about it. Under label skew a client that
    never saw class ``c`` cannot tell a ``c`` from its own classes, so its say on ``c`` is ~0.
    Classes no client holds fall back to the plain mean.

    Parameters
    ----------
    probs : (num_clients, num_samples, num_classes)
    class_weights : (num_clients, num_classes), non-negative (e.g. per-class example counts)

    Returns
    -------
    (consensus (num_samples, num_classes) float32, total weight per class (num_classes,))
    """
    arr = _check_stack(probs)
    w = np.asarray(class_weights, dtype=np.float64)
    if w.shape != (arr.shape[0], arr.shape[2]) or (w < 0).any():
        raise ValueError(
            f"class_weights must be non-negative with shape {(arr.shape[0], arr.shape[2])}, "
            f"got {w.shape}"
        )
    totals = w.sum(axis=0)  # (K,)
    safe = np.where(totals > 0, totals, 1.0)
    weighted = np.einsum("kc,knc->nc", w, arr) / safe  # (n, K)
    weighted = np.where(totals > 0, weighted, arr.mean(axis=0))
    rows = weighted.sum(axis=1, keepdims=True)
    return (weighted / np.where(rows > 0, rows, 1.0)).astype(np.float32), totals


AggregateFn = Callable[[FloatArray, FloatArray | None], NDArray[np.float32]]
