import numpy as np
import pytest

from fedkd.validation import InvalidReply, check_soft_labels


def _probs(n=4, k=3):
    return np.full((n, k), 1.0 / k, dtype=np.float16)


def test_accepts_valid_probs_and_logits():
    check_soft_labels(_probs(), 4, 3, "probs")
    check_soft_labels(
        np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32), 4, 3, "logits"
    )


@pytest.mark.parametrize(
    ("array", "kind", "match"),
    [
        (_probs().astype(np.float64), "probs", "dtype"),
        (_probs(5), "probs", "shape"),
        (_probs(4, 2), "probs", "shape"),
        (np.array([[np.nan, 0, 0]] * 4, dtype=np.float32), "logits", "NaN"),
        (np.array([[np.inf, 0, 0]] * 4, dtype=np.float32), "logits", "NaN or infinite"),
        (np.array([[1.5, -0.5, 0.0]] * 4, dtype=np.float32), "probs", r"outside \[0, 1\]"),
        (np.array([[0.5, 0.2, 0.1]] * 4, dtype=np.float32), "probs", "sum to 1"),
        (np.zeros((4, 3), dtype=np.int64), "logits", "dtype"),
    ],
)
def test_rejects_malformed(array, kind, match):
    with pytest.raises(InvalidReply, match=match):
        check_soft_labels(array, 4, 3, kind)
