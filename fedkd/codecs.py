"""Soft-label codecs: how a block of soft labels, shape (num_rows, num_classes), crosses the wire.

One codec (``codec=<name>`` in config, :data:`CODECS`, or a class of the user's by import path)
encodes both directions: the soft labels a client sends and the consensus the server sends back.
A codec turns the rows into a few named arrays, its *parts*, whose shapes and dtypes it declares
in advance (:meth:`Codec.layout`), so that a receiver checks every part's header before decoding
anything, and turns parts back into float32 rows (:meth:`Codec.decode`), rejecting parts that
cannot be soft labels with :class:`CodecError`. Everything a peer sends is untrusted input.

Lossless codecs give back what they were given; lossy ones bound their error:
:meth:`Codec.error_bound` is, per row, a bound on ``max_i |decode(encode(x))_i - x_i|``, which the
property tests check on random rows.

Built-ins (bytes per row for K classes):

``float32``  4K, lossless.
``float16``  2K (the default): relative error <= 2**-11.
``int8``     K + 2: one byte per value and a per-row scale (float16): probabilities as
             ``uint8 * scale`` (scale = row max / 255), renormalised; logits as
             ``int8 * scale`` (scale = max |logit| / 127).
``topk``     the k largest probabilities of a row (values as float16 or int8) and their class
             indices (one byte each up to 256 classes); the rest of the mass is spread evenly over
             the other classes (``rest=spread``) or dropped and the kept values renormalised
             (``rest=drop``). Probabilities only.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

import numpy as np
from numpy.typing import NDArray

from fedkd.schema import ConfigError

LOGITS: Final = "logits"
PROBS: Final = "probs"

FloatRows = NDArray[np.floating]
Parts = dict[str, NDArray[np.generic]]

_F16_MAX: Final = float(np.finfo(np.float16).max)
_F16_TINY: Final = 2.0**-25  # half the spacing of float16's subnormals
_F32_REL: Final = 2.0**-23  # slack for float32 products in decoding


class CodecError(ValueError):
    """Parts that do not decode to soft labels (wrong parts, shapes, dtypes or values)."""


@dataclass(frozen=True)
class Part:
    """What one encoded array must be: its shape and dtype (checked before decoding)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def num_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class Codec(ABC):
    """Encodes rows of soft labels (logits or probabilities) into named arrays, and back."""

    #: The soft-label kinds this codec can encode.
    kinds: ClassVar[frozenset[str]] = frozenset({LOGITS, PROBS})
    #: Whether decode(encode(x)) == x for float32 rows.
    lossless: ClassVar[bool] = False

    @abstractmethod
    def layout(self, num_rows: int, num_classes: int, kind: str) -> dict[str, Part]:
        """The parts :meth:`encode` produces for ``num_rows`` rows of ``num_classes``."""

    @abstractmethod
    def encode(self, rows: FloatRows, kind: str) -> Parts:
        """Rows ``(n, K)`` -> parts (as :meth:`layout` says). Raises ``ValueError`` on rows this
        codec cannot represent (non-finite values, out of range)."""

    @abstractmethod
    def _decode(self, parts: Parts, num_classes: int, kind: str) -> NDArray[np.float32]:
        """Parts already checked against the layout -> rows ``(n, K)``, float32."""

    @abstractmethod
    def error_bound(self, rows: FloatRows, kind: str) -> NDArray[np.float64]:
        """Per row ``(n,)``: a bound on the largest absolute error of encode-then-decode."""

    def decode(
        self, parts: Mapping[str, NDArray[np.generic]], num_rows: int, num_classes: int, kind: str
    ) -> NDArray[np.float32]:
        """Parts (untrusted) -> rows ``(num_rows, num_classes)``, float32; :class:`CodecError`
        unless the parts are exactly the layout's and decode to finite soft labels."""
        layout = self.layout(num_rows, num_classes, kind)
        if set(parts) != set(layout):
            raise CodecError(f"parts {sorted(parts)} != expected {sorted(layout)}")
        checked: Parts = {}
        for name, part in layout.items():
            array = np.asarray(parts[name])
            if array.shape != part.shape or array.dtype != part.dtype:
                raise CodecError(
                    f"part '{name}' is {array.dtype}{list(array.shape)}, "
                    f"expected {part.dtype}{list(part.shape)}"
                )
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise CodecError(f"part '{name}' holds NaN or infinite values")
            checked[name] = array
        rows = self._decode(checked, num_classes, kind)
        if not np.isfinite(rows).all():
            raise CodecError("decodes to non-finite values")
        return rows

    def __repr__(self) -> str:
        return type(self).__name__

    def num_bytes(self, num_rows: int, num_classes: int, kind: str) -> int:
        """Payload bytes of one encoded block (the arrays' data, without headers)."""
        return sum(p.num_bytes for p in self.layout(num_rows, num_classes, kind).values())

    def check_kind(self, kind: str, key: str) -> None:
        """Fail before a run that would ask this codec for a kind it cannot encode."""
        if kind not in self.kinds:
            raise ConfigError(
                f"{key}: {type(self).__name__} encodes {sorted(self.kinds)}, but the algorithm "
                f"sends {kind} (choose float16, float32 or int8)"
            )


def _finite(rows: FloatRows) -> NDArray[np.float64]:
    values = np.asarray(rows, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"soft labels must be 2-D (rows, classes), got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("soft labels hold NaN or infinite values")
    return values


def _row_max(values: NDArray[np.float64]) -> NDArray[np.float64]:
    if values.shape[1] == 0:
        return np.zeros(len(values))
    return np.abs(values).max(axis=1)


def _scale_up(exact: NDArray[np.float64]) -> NDArray[np.float16]:
    """Per-row scales as float16, rounded up (so that no quantised value exceeds its range)."""
    if (exact > _F16_MAX).any():
        raise ValueError(f"a row's scale exceeds float16's range ({_F16_MAX})")
    scale = exact.astype(np.float16)
    low = scale.astype(np.float64) < exact
    scale[low] = np.nextafter(scale[low], np.float16(np.inf))
    return scale


def _renormalised(rows: NDArray[np.float64]) -> NDArray[np.float32]:
    sums = rows.sum(axis=1, keepdims=True)
    if (sums <= 0).any():
        raise CodecError("a probability row decodes to all zeros")
    return (rows / sums).astype(np.float32)


class Float32(Codec):
    """float32 values: lossless for float32 rows (4 bytes per value)."""

    lossless = True

    def layout(self, num_rows: int, num_classes: int, kind: str) -> dict[str, Part]:
        return {"values": Part((num_rows, num_classes), np.dtype(np.float32))}

    def encode(self, rows: FloatRows, kind: str) -> Parts:
        return {"values": _finite(rows).astype(np.float32)}

    def _decode(self, parts: Parts, num_classes: int, kind: str) -> NDArray[np.float32]:
        return parts["values"].astype(np.float32)

    def error_bound(self, rows: FloatRows, kind: str) -> NDArray[np.float64]:
        return _row_max(_finite(rows)) * 2.0**-24 + 2.0**-149  # (float32's subnormal spacing)


class Float16(Codec):
    """float16 values (2 bytes each): relative error at most 2**-11 (exact on float16 rows)."""

    def layout(self, num_rows: int, num_classes: int, kind: str) -> dict[str, Part]:
        return {"values": Part((num_rows, num_classes), np.dtype(np.float16))}

    def encode(self, rows: FloatRows, kind: str) -> Parts:
        values = _finite(rows)
        if values.size and np.abs(values).max() > _F16_MAX:
            raise ValueError(f"soft labels exceed float16's range ({_F16_MAX})")
        return {"values": values.astype(np.float16)}

    def _decode(self, parts: Parts, num_classes: int, kind: str) -> NDArray[np.float32]:
        return parts["values"].astype(np.float32)

    def error_bound(self, rows: FloatRows, kind: str) -> NDArray[np.float64]:
        return _row_max(_finite(rows)) * 2.0**-11 + _F16_TINY


class Int8(Codec):
    """One byte per value and one float16 scale per row.

    Probabilities: ``q = round(p / s)`` as uint8 with ``s = max(row) / 255`` (rounded up), decoded
    as ``q * s`` and renormalised to sum to 1. Logits: ``q = round(x / s)`` as int8 with
    ``s = max |x| / 127``, decoded as ``q * s``.
    """

    def _levels(self, kind: str) -> tuple[int, np.dtype]:
        return (255, np.dtype(np.uint8)) if kind == PROBS else (127, np.dtype(np.int8))

    def layout(self, num_rows: int, num_classes: int, kind: str) -> dict[str, Part]:
        _, dtype = self._levels(kind)
        return {
            "values": Part((num_rows, num_classes), dtype),
            "scale": Part((num_rows,), np.dtype(np.float16)),
        }

    def encode(self, rows: FloatRows, kind: str) -> Parts:
        values = _finite(rows)
        levels, dtype = self._levels(kind)
        if kind == PROBS and (values < 0).any():
            raise ValueError("probabilities must be >= 0")
        scale = _scale_up(_row_max(values) / levels)
        step = np.where(scale > 0, scale, 1).astype(np.float64)[:, None]
        q = np.clip(np.rint(values / step), -levels, levels).astype(dtype)
        return {"values": q, "scale": scale}

    def _decode(self, parts: Parts, num_classes: int, kind: str) -> NDArray[np.float32]:
        scale = parts["scale"].astype(np.float64)
        if (scale < 0).any():
            raise CodecError("negative scale")
        values = parts["values"].astype(np.float64) * scale[:, None]
        return _renormalised(values) if kind == PROBS else values.astype(np.float32)

    def error_bound(self, rows: FloatRows, kind: str) -> NDArray[np.float64]:
        values = _finite(rows)
        levels, _ = self._levels(kind)
        top = _row_max(values)
        step = top / levels * (1 + 2.0**-10) + 2.0**-24  # the float16 scale, rounded up
        if kind != PROBS:
            return step / 2 + top * _F32_REL
        k = values.shape[1]
        # q_i = p_i + e_i, |e_i| <= s/2, sum q = 1 + E, |E| <= K s/2; renormalising gives
        # |q_i/(1+E) - p_i| = |e_i - p_i E| / (1+E) <= (s/2)(1+K) / (1 - K s/2)
        room = 1 - k * step / 2
        bound = np.where(room > 0, step / 2 * (1 + k) / np.where(room > 0, room, 1), np.inf)
        return bound + _F32_REL


@dataclass(frozen=True)
class TopK(Codec):
    """The ``k`` largest probabilities of each row and their class indices.

    Parameters
    ----------
    k : int
        Values kept per row (1 <= k <= num_classes).
    rest : "spread" or "drop"
        The mass outside the top k: spread evenly over the other classes, or dropped (the kept
        values renormalised).
    values : "float16" or "int8"
        How the kept values travel (int8: one byte each plus a float16 scale per row).
    """

    k: int = 2
    rest: str = "spread"  # spread | drop
    values: str = "float16"  # float16 | int8

    kinds: ClassVar[frozenset[str]] = frozenset({PROBS})

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"algorithm.codec.k must be an int >= 1, got {self.k!r}")
        if self.rest not in ("spread", "drop"):
            raise ConfigError(f"algorithm.codec.rest must be 'spread' or 'drop', got {self.rest!r}")
        if self.values not in ("float16", "int8"):
            raise ConfigError(
                f"algorithm.codec.values must be 'float16' or 'int8', got {self.values!r}"
            )

    def _inner(self) -> Codec:
        return Int8() if self.values == "int8" else Float16()

    def _k(self, num_classes: int) -> int:
        if self.k > num_classes:
            raise ValueError(f"codec.k = {self.k} exceeds the {num_classes} classes")
        return self.k

    @staticmethod
    def _index_dtype(num_classes: int) -> np.dtype:
        return np.dtype(np.uint8) if num_classes <= 256 else np.dtype(np.uint16)

    def layout(self, num_rows: int, num_classes: int, kind: str) -> dict[str, Part]:
        k = self._k(num_classes)
        # the kept values are >= 0 but not a whole row: int8 sends them unsigned, unnormalised
        inner = self._inner().layout(num_rows, k, PROBS)
        return {
            "indices": Part((num_rows, k), self._index_dtype(num_classes)),
            **{f"top-{name}": part for name, part in inner.items()},
        }

    def _top(self, values: NDArray[np.float64]) -> NDArray[np.intp]:
        k = self._k(values.shape[1])
        # stable order: the k largest, ties to the lower class index
        return np.argsort(-values, axis=1, kind="stable")[:, :k]

    def encode(self, rows: FloatRows, kind: str) -> Parts:
        values = _finite(rows)
        if (values < 0).any():
            raise ValueError("probabilities must be >= 0")
        top = self._top(values)
        kept = np.take_along_axis(values, top, axis=1)
        inner = self._inner().encode(kept, PROBS)  # >= 0, unnormalised: int8 sends it unsigned
        return {
            "indices": top.astype(self._index_dtype(values.shape[1])),
            **{f"top-{name}": part for name, part in inner.items()},
        }

    def _decode(self, parts: Parts, num_classes: int, kind: str) -> NDArray[np.float32]:
        indices = parts["indices"].astype(np.int64)
        k = indices.shape[1]
        if (indices >= num_classes).any():
            raise CodecError(f"class index >= {num_classes}")
        if k > 1 and (np.diff(np.sort(indices, axis=1), axis=1) == 0).any():
            raise CodecError("a row repeats a class index")
        if self.values == "float16":
            kept = parts["top-values"].astype(np.float64)
        else:
            scale = parts["top-scale"].astype(np.float64)
            if (scale < 0).any():
                raise CodecError("negative scale")
            kept = parts["top-values"].astype(np.float64) * scale[:, None]
        if (kept < 0).any():
            raise CodecError("negative probabilities")
        rows = np.zeros((len(indices), num_classes))
        others = num_classes - k
        if self.rest == "spread" and others > 0:
            rest = np.clip(1.0 - kept.sum(axis=1), 0.0, None)
            rows += (rest / others)[:, None]
        np.put_along_axis(rows, indices, kept, axis=1)
        return _renormalised(rows)

    def error_bound(self, rows: FloatRows, kind: str) -> NDArray[np.float64]:
        values = _finite(rows)
        top = self._top(values)
        kept = np.take_along_axis(values, top, axis=1)
        k = kept.shape[1]
        outside = np.clip(1.0 - kept.sum(axis=1), 0.0, None)  # the mass not sent, m
        if self.values == "float16":
            err = _row_max(kept) * 2.0**-11 + _F16_TINY
        else:
            err = (_row_max(kept) / 255 * (1 + 2.0**-10) + 2.0**-24) / 2
        if self.rest == "spread":
            # kept: |v - p| <= e, then renormalised by S in [1, 1 + k e]: <= e + k e; others
            # get r/(K-k) with 0 <= r <= m + k e, against p_j in [0, m]: <= m + k e
            return outside + (k + 1) * err + _F32_REL
        # drop: kept divided by S = sum v in [1 - m - k e, 1 + k e]; the others lose p_j <= m
        room = 1 - outside - k * err
        safe = np.where(room > 0, room, 1)
        bound = np.where(room > 0, (outside + (k + 1) * err) / safe, np.inf)
        return np.maximum(bound, outside) + _F32_REL


CODECS: Final[dict[str, type[Codec]]] = {
    "float32": Float32,
    "float16": Float16,
    "int8": Int8,
    "topk": TopK,
}
