"""Checks on what clients send back, before anything of it reaches the consensus."""

import numpy as np

ACCEPTED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
PROBS_SUM_TOLERANCE = 1e-2  # float16 rows of 10 probabilities sum to 1 within ~5e-3


class InvalidReply(ValueError):
    """A client reply that must not be aggregated; the message says why."""


def check_soft_labels(
    soft_labels: np.ndarray, num_samples: int, num_classes: int, kind: str
) -> None:
    """Raise :class:`InvalidReply` unless ``soft_labels`` is a finite (num_samples, num_classes)
    float16/float32 array -- and, for ``kind == "probs"``, a stack of probability rows."""
    if soft_labels.dtype not in ACCEPTED_DTYPES:
        raise InvalidReply(f"dtype {soft_labels.dtype} is not float16/float32")
    if soft_labels.shape != (num_samples, num_classes):
        raise InvalidReply(f"shape {soft_labels.shape} != expected ({num_samples}, {num_classes})")
    if not np.isfinite(soft_labels).all():
        raise InvalidReply("contains NaN or infinite values")
    if kind == "probs":
        values = soft_labels.astype(np.float64)
        if (values < 0).any() or (values > 1).any():
            raise InvalidReply("probabilities outside [0, 1]")
        worst = float(np.abs(values.sum(axis=1) - 1.0).max())
        if worst > PROBS_SUM_TOLERANCE:
            raise InvalidReply(f"probability rows do not sum to 1 (off by up to {worst:.3g})")
