"""Checks on what clients send back, before anything of it reaches the consensus."""

from typing import Any

import numpy as np

from fedkd.protocol import DP_EPSILON, DP_EXHAUSTED, NUM_EXAMPLES, TEST_ACCURACY

ACCEPTED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
PROBS_SUM_TOLERANCE = 1e-2  # float16 rows of 10 probabilities sum to 1 within ~5e-3


class InvalidReply(ValueError):
    """A client reply that must not be aggregated; the message says why."""


def check_metrics(metrics: dict[str, object], allowed: frozenset[str]) -> dict[str, float]:
    """A reply's metrics as floats; :class:`InvalidReply` unless every key is declared, every
    value a finite scalar, the example count a positive int and accuracies within [0, 1]."""
    undeclared = sorted(set(metrics) - allowed)
    if undeclared:
        raise InvalidReply(f"undeclared metrics {undeclared[:5]}: only {sorted(allowed)}")
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidReply(f"metric '{key}' must be a scalar, got {type(value).__name__}")
        if not np.isfinite(value):
            raise InvalidReply(f"metric '{key}' is not finite")
        out[key] = float(value)
    num_examples = metrics.get(NUM_EXAMPLES)
    if not isinstance(num_examples, int) or num_examples < 1:
        raise InvalidReply(f"'{NUM_EXAMPLES}' must be a positive int, got {num_examples!r}")
    accuracy = out.get(TEST_ACCURACY, 0.0)
    if not 0 <= accuracy <= 1:
        raise InvalidReply(f"'{TEST_ACCURACY}' {accuracy} is not in [0, 1]")
    if out.get(DP_EPSILON, 0.0) < 0:
        raise InvalidReply(f"'{DP_EPSILON}' {out[DP_EPSILON]} is negative")
    if out.get(DP_EXHAUSTED, 0.0) not in (0.0, 1.0):
        raise InvalidReply(f"'{DP_EXHAUSTED}' must be 0 or 1, got {out[DP_EXHAUSTED]}")
    return out


NPY_HEADER_MAX = 4096  # bytes of np.save's header (a few hundred for a 2-D array)


def check_array_header(array: Any, shape: tuple[int, ...], dtype: np.dtype, key: str) -> None:
    """Raise :class:`InvalidReply` unless a Flower ``Array`` (the reply's ``key``) declares
    ``shape`` and ``dtype`` and its payload is no bigger than such an array -- checked on the
    metadata, before anything is decoded."""
    if getattr(array, "stype", None) != "numpy.ndarray":
        raise InvalidReply(f"'{key}' serialised as {getattr(array, 'stype', '?')!r}")
    if tuple(array.shape) != shape:
        raise InvalidReply(f"'{key}' declares shape {tuple(array.shape)} != expected {shape}")
    if array.dtype != np.dtype(dtype).name:
        raise InvalidReply(f"'{key}' declares dtype {array.dtype}, expected {np.dtype(dtype)}")
    limit = int(np.prod(shape)) * np.dtype(dtype).itemsize + NPY_HEADER_MAX
    if len(array.data) > limit:
        raise InvalidReply(
            f"'{key}': payload of {len(array.data)} bytes for a {shape} {dtype} array"
        )


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
