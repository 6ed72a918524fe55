import numpy as np
import pytest

from fedkd.validation import InvalidReply, check_soft_labels


def _probs(n=4, k=3):
    return np.full((n, k), 1.0 / k, dtype=np.float16)


def test_accepts_valid_probs_and_logits_and_only_as_what_they_are():
    probs = _probs()  # float16 rows of 1/3: they sum to 1 only within float16 rounding
    check_soft_labels(probs, 4, 3, "probs")
    off = probs.astype(np.float32)
    off[0, 0] += 0.05  # one row now sums to 1.05: no longer a probability row
    with pytest.raises(InvalidReply, match="sum to 1"):
        check_soft_labels(off, 4, 3, "probs")
    logits = (np.random.default_rng(0).normal(size=(4, 3)) * 5).astype(np.float32)
    check_soft_labels(logits, 4, 3, "logits")
    with pytest.raises(InvalidReply):  # the same numbers are not probabilities
        check_soft_labels(logits, 4, 3, "probs")


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


def test_an_arrays_header_is_checked_before_its_payload_is_decoded():
    import numpy as np
    import pytest
    from flwr.app import Array

    from fedkd.validation import InvalidReply, check_array_header

    good = Array(np.zeros((5, 10), np.float16))
    f16 = np.dtype(np.float16)
    check_array_header(good, (5, 10), f16, "soft-labels.values")
    padded = Array(
        dtype="float16", shape=(5, 10), stype="numpy.ndarray", data=good.data + bytes(10**6)
    )
    with pytest.raises(InvalidReply, match="payload of"):
        check_array_header(padded, (5, 10), f16, "soft-labels.values")
    with pytest.raises(InvalidReply, match=r"'soft-labels\.values' declares shape"):
        check_array_header(Array(np.zeros((6, 10), np.float16)), (5, 10), f16, "soft-labels.values")
    with pytest.raises(InvalidReply, match="declares dtype float64, expected float16"):
        check_array_header(Array(np.zeros((5, 10), np.float64)), (5, 10), f16, "soft-labels.values")
