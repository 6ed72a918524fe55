"""Label-preserving image augmentation for training batches: pure functions of tensors.

Used by :func:`fedkd.training.train` when asked for: the server distilling the global model on
the public set (``model.augment_*``) and clients training on their private data
(``clients.augment_*``). A shifted or mirrored public image keeps its consensus target, so the
global model sees more than the 10 k distinct public images without asking clients for anything.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Augment:
    """Random translation by up to ``shift`` pixels (edge padded) and, with ``flip``, a random
    horizontal mirror. ``Augment()`` is the identity."""

    shift: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0, got {self.shift}")

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.flip

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Augment a batch ``x`` (B, C, H, W); ``generator`` makes it reproducible."""
        if self.shift > 0:
            x = random_shift(x, self.shift, generator)
        if self.flip:
            mirror = torch.rand(len(x), generator=generator) < 0.5  # (B,)
            x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
        return x


def random_shift(x: Tensor, shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image of ``x`` (B, C, H, W) by its own offset in [-shift, shift]² pixels.

    The uncovered border repeats the edge pixels: after normalisation the background is not 0,
    and the images here have background at their edges."""
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")  # (B, C, H + 2s, W + 2s)
    dy = torch.randint(0, 2 * shift + 1, (b,), generator=generator)  # (B,)
    dx = torch.randint(0, 2 * shift + 1, (b,), generator=generator)
    rows = (torch.arange(h)[None, :] + dy[:, None])[:, :, None]  # (B, H, 1)
    cols = (torch.arange(w)[None, :] + dx[:, None])[:, None, :]  # (B, 1, W)
    batch = torch.arange(b)[:, None, None]  # (B, 1, 1)
    # Advanced indices split by a slice put their broadcast dims first: (B, H, W, C).
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()
