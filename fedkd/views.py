"""Consistent views of the public set: every node builds the same augmented images from a seed.

Distillation teaches best when teacher and student see the *same* augmented input (Beyer et al.
2022, "Knowledge distillation: a good teacher is patient and consistent", arXiv:2106.05237). In
federated distillation the teacher is the clients' consensus, so "the same input" means a view
the server and every client build bit for bit from a seed, without any image crossing the wire:
the server sends a round's seed (``protocol.VIEW_SEED``), clients return soft labels on those
exact views, and the global model is distilled on them.

A view of public sample ``i`` depends only on ``(seed, i)``: a nearest-neighbour zoom into a
random window (factor in ``[1, zoom]``), a shift of up to ``shift`` pixels, an optional mirror,
then optionally a mix with the same kind of view of a random partner sample, ``lam * a + (1 -
lam) * b`` with ``lam ~ Beta(mixup, mixup)`` folded to ``lam >= 0.5`` (the view stays mostly
sample ``i``, so its label is still ``i``'s for the accuracy the server logs). Every step is
integer indexing or one float32 multiply-add, so the views are identical on every machine.

Views matter most when the public set comes from another domain: a teacher trained on
Fashion-MNIST labels zoomed, mixed MNIST strokes far more diversely than the plain digits, which
it mostly calls "T-shirt" (``benchmarks/ceiling.py``, the ``mnist-*`` rows).
"""

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedkd.sampling import Seed


@dataclass(frozen=True)
class Views:
    """How a public sample's view is drawn. ``Views()`` is the identity (the sample itself)."""

    zoom: float = 1.0  # largest magnification of a random window (1: none)
    shift: int = 0  # largest translation in pixels (edges repeat)
    flip: bool = False  # mirror half of the views horizontally
    mixup: float = 0.0  # > 0: mix with a partner's view, lam ~ Beta(mixup, mixup), lam >= 0.5

    def __post_init__(self) -> None:
        if not self.zoom >= 1.0:
            raise ValueError(f"zoom must be >= 1, got {self.zoom}")
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0, got {self.shift}")
        if not self.mixup >= 0.0:
            raise ValueError(f"mixup must be >= 0, got {self.mixup}")

    @property
    def active(self) -> bool:
        return self.zoom > 1.0 or self.shift > 0 or self.flip or self.mixup > 0

    def __call__(self, x: NDArray[np.float32], idx: NDArray[np.integer], seed: Seed) -> np.ndarray:
        """The views (len(idx), C, H, W) float32 of samples ``idx`` of ``x`` (N, C, H, W)."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= len(x))):
            raise ValueError(f"view indices must be in [0, {len(x)})")
        if not self.active:
            return np.ascontiguousarray(x[idx])
        draw = _Draw(self, len(x), seed)
        views = self._geometric(x, idx, draw)
        if self.mixup > 0:
            partners = self._geometric(x, draw.partner[idx], draw)
            lam = draw.lam[idx].astype(np.float32)[:, None, None, None]
            views = lam * views + (np.float32(1.0) - lam) * partners
        return np.ascontiguousarray(views, dtype=np.float32)

    def _geometric(self, x: np.ndarray, idx: np.ndarray, draw: "_Draw") -> np.ndarray:
        """Zoom, shift and mirror samples ``idx`` by their own drawn parameters."""
        _, _, h, w = x.shape
        scale = draw.scale[idx][:, None]  # (n, 1)
        rows = _source(np.arange(h), h, scale, draw.centre[idx, :1], draw.offset[idx, :1])
        cols = _source(np.arange(w), w, scale, draw.centre[idx, 1:], draw.offset[idx, 1:])
        cols = np.where(draw.mirror[idx][:, None], cols[:, ::-1], cols)  # (n, W)
        # (n, H, W, C) by advanced indexing around the channel slice -> (n, C, H, W)
        out = x[idx[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        return out.transpose(0, 3, 1, 2)


class _Draw:
    """Every sample's view parameters for one seed: drawn for all N samples in a fixed order,
    so a sample's view does not depend on which other samples are asked for."""

    def __init__(self, views: Views, n: int, seed: Seed) -> None:
        rng = np.random.default_rng([int(s) for s in seed])
        self.scale = 1.0 + (views.zoom - 1.0) * rng.random(n)  # (N,)
        self.centre = rng.uniform(-1.0, 1.0, (n, 2))  # where the window sits, in its free room
        self.offset = rng.integers(-views.shift, views.shift + 1, (n, 2))
        self.mirror = (rng.random(n) < 0.5) & views.flip
        self.partner = rng.integers(0, n, n)
        lam = rng.beta(views.mixup, views.mixup, n) if views.mixup > 0 else np.ones(n)
        self.lam = np.maximum(lam, 1.0 - lam)


def _source(
    out: np.ndarray, size: int, scale: np.ndarray, centre: np.ndarray, offset: np.ndarray
) -> np.ndarray:
    """Source pixel (n, size) of each output pixel along one axis: a window ``size / scale``
    wide placed at ``centre`` in [-1, 1] of the room it has, moved by ``offset`` pixels, read by
    nearest neighbour; beyond the image the edge repeats."""
    half = size / 2.0
    room = half - half / scale  # (n, 1) how far the window's centre may move
    pos = (out[None, :] + 0.5 - half) / scale + half + centre * room - offset
    return np.clip(np.floor(pos), 0, size - 1).astype(np.int64)
