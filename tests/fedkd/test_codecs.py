"""Soft-label codecs: round trips within the stated bounds (property-based), exact answers on
hand-built rows, and untrusted parts rejected."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedkd.codecs import CODECS, LOGITS, PROBS, Codec, CodecError, Float16, Float32, Int8, TopK
from fedkd.schema import ConfigError

CODEC_CASES = [
    Float32(),
    Float16(),
    Int8(),
    TopK(k=1),
    TopK(k=2),
    TopK(k=3, rest="drop"),
    TopK(k=2, values="int8"),
    TopK(k=4, rest="drop", values="int8"),
]


@st.composite
def logit_rows(draw, min_classes: int = 1) -> np.ndarray:
    num_rows = draw(st.integers(0, 12))
    num_classes = draw(st.integers(min_classes, 12))
    return draw(
        arrays(
            np.float64,
            (num_rows, num_classes),
            elements=st.floats(-30, 30, allow_nan=False, allow_infinity=False),
        )
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True, initial=0.0))
    return z / z.sum(axis=1, keepdims=True)


def round_trip(codec: Codec, rows: np.ndarray, kind: str) -> np.ndarray:
    parts = codec.encode(rows, kind)
    layout = codec.layout(*rows.shape, kind)
    assert {n: (p.shape, p.dtype) for n, p in parts.items()} == {
        n: (p.shape, p.dtype) for n, p in layout.items()
    }
    assert sum(p.nbytes for p in parts.values()) == codec.num_bytes(*rows.shape, kind)
    return codec.decode(parts, *rows.shape, kind)


def usable(codec: Codec, rows: np.ndarray) -> bool:
    return not isinstance(codec, TopK) or codec.k <= rows.shape[1]


@pytest.mark.parametrize("codec", CODEC_CASES, ids=repr)
@settings(max_examples=60, deadline=None)
@given(logits=logit_rows())
def test_probabilities_round_trip_within_the_bound(codec: Codec, logits: np.ndarray) -> None:
    probs = softmax(logits)
    if not usable(codec, probs):
        return
    decoded = round_trip(codec, probs, PROBS)
    assert decoded.dtype == np.float32 and decoded.shape == probs.shape
    error = np.abs(decoded.astype(np.float64) - probs).max(axis=1, initial=0.0)
    assert (error <= codec.error_bound(probs, PROBS)).all()
    if len(probs) and not isinstance(codec, Float16 | Float32):
        np.testing.assert_allclose(decoded.sum(axis=1), 1.0, atol=1e-5)  # renormalised


@pytest.mark.parametrize("codec", [c for c in CODEC_CASES if LOGITS in c.kinds], ids=repr)
@settings(max_examples=60, deadline=None)
@given(logits=logit_rows())
def test_logits_round_trip_within_the_bound(codec: Codec, logits: np.ndarray) -> None:
    decoded = round_trip(codec, logits, LOGITS)
    error = np.abs(decoded.astype(np.float64) - logits).max(axis=1, initial=0.0)
    assert (error <= codec.error_bound(logits, LOGITS)).all()


@settings(max_examples=60, deadline=None)
@given(logits=logit_rows())
def test_lossless_codecs_are_exact(logits: np.ndarray) -> None:
    rows32 = logits.astype(np.float32)
    np.testing.assert_array_equal(round_trip(Float32(), rows32, LOGITS), rows32)
    rows16 = logits.astype(np.float16)  # float16 is exact on what it can represent
    np.testing.assert_array_equal(round_trip(Float16(), rows16, LOGITS), rows16.astype(np.float32))
    assert Float32.lossless and not Float16.lossless


def test_topk_on_hand_built_rows() -> None:
    rows = np.array([[0.6, 0.3, 0.05, 0.05], [0.1, 0.2, 0.3, 0.4]])
    spread = round_trip(TopK(k=2, values="float16"), rows, PROBS)
    np.testing.assert_allclose(spread, [[0.6, 0.3, 0.05, 0.05], [0.15, 0.15, 0.3, 0.4]], atol=1e-3)
    dropped = round_trip(TopK(k=2, rest="drop"), rows, PROBS)
    np.testing.assert_allclose(dropped, [[2 / 3, 1 / 3, 0, 0], [0, 0, 3 / 7, 4 / 7]], atol=1e-3)
    parts = TopK(k=2).encode(rows, PROBS)
    np.testing.assert_array_equal(parts["indices"], [[0, 1], [3, 2]])
    assert parts["indices"].dtype == np.uint8


def test_int8_on_hand_built_rows() -> None:
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25]])
    np.testing.assert_allclose(round_trip(Int8(), probs, PROBS), probs, atol=1e-3)
    parts = Int8().encode(probs, PROBS)
    np.testing.assert_array_equal(parts["values"], [[255, 0, 0], [255, 127, 127]])
    logits = np.array([[127.0, -63.0, 0.0]])  # scale 1: integers travel exactly
    np.testing.assert_array_equal(round_trip(Int8(), logits, LOGITS), logits)
    huge = np.array([[1e6, -1e6, 3.0]])  # float16 cannot carry these; a per-row scale can
    assert (
        np.abs(round_trip(Int8(), huge, LOGITS) - huge).max() <= Int8().error_bound(huge, LOGITS)[0]
    )
    with pytest.raises(ValueError, match="float16"):
        Float16().encode(huge, LOGITS)


def test_bytes_per_row() -> None:
    assert Float32().num_bytes(100, 10, PROBS) == 4000
    assert Float16().num_bytes(100, 10, PROBS) == 2000
    assert Int8().num_bytes(100, 10, PROBS) == 1200
    assert TopK(k=2, values="int8").num_bytes(100, 10, PROBS) == 100 * (2 + 2 + 2)
    assert TopK(k=1).num_bytes(100, 300, PROBS) == 100 * (2 + 2)  # uint16 indices above 256


def _parts(codec: Codec) -> dict[str, np.ndarray]:
    return codec.encode(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]), PROBS)


@pytest.mark.parametrize(
    ("codec", "tamper", "message"),
    [
        (Float16(), lambda p: p.pop("values"), "parts"),
        (Float16(), lambda p: p.update(extra=np.zeros(2)), "parts"),
        (Float16(), lambda p: p.update(values=p["values"].astype(np.float32)), "float32"),
        (Float16(), lambda p: p.update(values=p["values"][:1]), r"\[1, 3\]"),
        (Float16(), lambda p: p["values"].__setitem__((0, 0), np.nan), "NaN"),
        (Int8(), lambda p: p["scale"].__setitem__(0, -1.0), "negative scale"),
        (Int8(), lambda p: p["values"].__setitem__(0, 0), "all zeros"),
        (TopK(k=2), lambda p: p["indices"].__setitem__((0, 0), 3), "class index"),
        (TopK(k=2), lambda p: p["indices"].__setitem__((0, 1), p["indices"][0, 0]), "repeats"),
        (TopK(k=2), lambda p: p["top-values"].__setitem__((1, 0), -0.5), "negative"),
        (TopK(k=2, values="int8"), lambda p: p["top-scale"].__setitem__(1, np.inf), "infinite"),
    ],
)
def test_untrusted_parts_are_rejected(codec: Codec, tamper, message: str) -> None:
    parts = _parts(codec)
    tamper(parts)
    with pytest.raises(CodecError, match=message):
        codec.decode(parts, 2, 3, PROBS)


def test_bad_rows_and_settings_fail_clearly() -> None:
    with pytest.raises(ValueError, match="NaN"):
        Int8().encode(np.array([[np.nan, 1.0]]), LOGITS)
    with pytest.raises(ValueError, match="exceeds the 3 classes"):
        TopK(k=4).encode(np.full((1, 3), 1 / 3), PROBS)
    with pytest.raises(ConfigError, match=r"codec\.rest"):
        TopK(k=2, rest="smear")
    with pytest.raises(ConfigError, match=r"codec\.k"):
        TopK(k=0)
    with pytest.raises(ConfigError, match="sends logits"):
        TopK().check_kind(LOGITS, "codec")
    Int8().check_kind(LOGITS, "codec")
    assert set(CODECS) == {"float32", "float16", "int8", "topk"}
