"""The model zoo: four small image classifiers for heterogeneous clients and the server model.

Every architecture is built as ``Model(input_shape, num_classes)`` with ``input_shape = (C, H, W)``
and maps a float32 batch ``(N, C, H, W)`` to **logits** ``(N, num_classes)``. The four differ in
type, depth and width so that federated distillation really mixes heterogeneous learners:

============  =========================================================  ============
name          network                                                    parameters
============  =========================================================  ============
``mlp``       flatten -> 256 -> 128 -> K, ReLU, dropout                       235,146
``cnn``       two 3x3 conv blocks (32, 64) with max-pooling -> 128 -> K       151,306
``wide_cnn``  two 5x5 conv layers (48, 96), dropout -> linear                 131,914
``resnet``    stem + three BasicBlocks (16, 32, 64) with GroupNorm             77,754
============  =========================================================  ============

(Parameter counts for 1x28x28 inputs and K = 10; only the MLP's depends on the input size.)

Design choices, all driven by CPU training cost (many clients share two cores):

* Downsample early. On CPU, element-wise work and max-pooling at full 28x28 resolution cost more
  than the convolutions themselves (NCHW ``max_pool2d`` alone took ~9 ms of a ~35 ms step on a
  batch of 64), so each network strides its first convolution and runs its widest layers on 7x7
  or 4x4 maps. Max-pooling comes before the ReLU: the two commute (ReLU is monotone), and the
  ReLU then runs on a quarter of the elements.
* Small inputs still work: a layer only halves a feature map while the result keeps at least
  ``_MIN_SPATIAL`` pixels per side, so 8x8 sklearn digits stop at 4x4 while Fashion-MNIST goes
  28 -> 14 -> 7 -> 4. Convolutions pad to "same" size and the CNN heads pool adaptively onto a
  fixed grid, so the parameter count of the convolutional models does not depend on the input's
  spatial size.
* No BatchNorm. Clients distil from soft predictions on a public set; GroupNorm (Wu & He, 2018,
  arXiv:1803.08494) makes those predictions independent of batch composition and identical in
  train and eval mode, and the shallower networks train fine without normalisation.

All models are deterministic on CPU given ``torch.manual_seed`` before construction.
"""

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

import torch
from torch import Tensor, nn

ModelFn = Callable[[tuple[int, int, int], int], nn.Module]
"""Builds a classifier from ``(input_shape, num_classes)``."""

# Feature maps are never halved below this side length, so that 3x3 and 5x5 kernels still see
# spatial context on small inputs such as 8x8 digits.
_MIN_SPATIAL: Final = 4
# Convolutional features are pooled onto this grid before the head, which fixes the head's size.
_HEAD_GRID: Final = (4, 4)
# GroupNorm groups in the ResNet: every stage width (16, 32, 64) is a multiple of it.
_GN_GROUPS: Final = 8


def _check_dims(input_shape: tuple[int, int, int], num_classes: int) -> tuple[int, int, int]:
    """Validate ``(C, H, W)`` and ``num_classes``; return the shape as a plain int tuple."""
    if len(input_shape) != 3 or any(int(d) < 1 for d in input_shape):
        raise ValueError(f"input_shape must be three positive ints (C, H, W), got {input_shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    channels, height, width = (int(d) for d in input_shape)
    return channels, height, width


def _halved(size: tuple[int, int]) -> tuple[int, int]:
    """Size after a stride-2 step; "same"-padded convs and ceil-mode pools both give ceil(n / 2)."""
    return (size[0] + 1) // 2, (size[1] + 1) // 2


def _can_halve(size: tuple[int, int]) -> bool:
    """Whether a ``(H, W)`` map may be downsampled by 2 and keep ``_MIN_SPATIAL`` per side."""
    return min(_halved(size)) >= _MIN_SPATIAL


def _pool_to_head_grid(size: tuple[int, int]) -> nn.Module:
    """Adaptive average pool onto :data:`_HEAD_GRID`, skipped when the map already has that size."""
    # Skipping saves a forward and backward pass that would copy the tensor unchanged.
    return nn.Identity() if size == _HEAD_GRID else nn.AdaptiveAvgPool2d(_HEAD_GRID)


class MLP(nn.Module):
    """Fully connected classifier: flatten -> 256 -> 128 -> ``num_classes``.

    The only zoo member without spatial inductive bias; its input layer grows with ``C * H * W``.

    Parameters
    ----------
    input_shape : tuple[int, int, int]
        ``(C, H, W)`` of one image.
    num_classes : int
        Number of output logits ``K``.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = _check_dims(input_shape, num_classes)
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * height * width, 256),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, K)``."""
        return self.layers(x)


class CNN(nn.Module):
    """Small two-block CNN with max-pooling and a one-hidden-layer head.

    ``conv3x3(C->32, stride 2) -> maxpool2 -> ReLU -> conv3x3(32->64) -> maxpool2 -> ReLU ->
    pool to 4x4 -> 1024 -> 128 -> K``. On 28x28 inputs the maps go 28 -> 14 -> 7 -> 4; strides and
    pools are dropped where the map is already small (see :func:`_can_halve`).

    Parameters
    ----------
    input_shape : tuple[int, int, int]
        ``(C, H, W)`` of one image.
    num_classes : int
        Number of output logits ``K``.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = _check_dims(input_shape, num_classes)
        size = (height, width)
        layers: list[nn.Module] = []
        in_channels = channels
        for i, out_channels in enumerate((32, 64)):
            # The first conv strides instead of running at full resolution (see module docstring).
            stride = 2 if i == 0 and _can_halve(size) else 1
            if stride == 2:
                size = _halved(size)
            layers.append(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1))
            if _can_halve(size):
                # ceil_mode keeps the last row/column of odd maps (7x7 -> 4x4, not 3x3).
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                size = _halved(size)
            layers.append(nn.ReLU())
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            _pool_to_head_grid(size),
            nn.Flatten(),
            nn.Linear(in_channels * _HEAD_GRID[0] * _HEAD_GRID[1], 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, K)``."""
        features = self.features(x)  # (N, 64, h, w)
        return self.head(features)  # (N, K)


class WideCNN(nn.Module):
    """Shallow, wide CNN with large 5x5 kernels, dropout and a linear head.

    ``conv5x5(C->48, stride 2) -> maxpool2 -> ReLU -> conv5x5(48->96, stride 2) -> ReLU ->
    pool to 4x4 -> dropout -> linear(1536 -> K)``. Compared with :class:`CNN` it has 1.5x the
    channels, a larger receptive field per layer, no hidden fully connected layer, and relies on
    dropout rather than depth. On 28x28 inputs the maps go 28 -> 14 -> 7 -> 4.

    Parameters
    ----------
    input_shape : tuple[int, int, int]
        ``(C, H, W)`` of one image.
    num_classes : int
        Number of output logits ``K``.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = _check_dims(input_shape, num_classes)
        size = (height, width)
        layers: list[nn.Module] = []
        in_channels = channels
        # 48/96 rather than 64/128 channels: the second 5x5 conv dominates the step, and 64/128
        # took ~25 ms per batch of 64 (forward + backward, one CPU thread) against ~15-17 ms.
        for i, out_channels in enumerate((48, 96)):
            # Both convs stride: the second costs ~3x more at a 7x7 output than at 4x4.
            stride = 2 if _can_halve(size) else 1
            if stride == 2:
                size = _halved(size)
            layers.append(nn.Conv2d(in_channels, out_channels, 5, stride=stride, padding=2))
            if i == 0 and _can_halve(size):
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                size = _halved(size)
            layers.append(nn.ReLU())
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            _pool_to_head_grid(size),
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(in_channels * _HEAD_GRID[0] * _HEAD_GRID[1], num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, K)``."""
        features = self.features(x)  # (N, 96, h, w)
        return self.head(features)  # (N, K)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with GroupNorm and an identity or 1x1 projection shortcut.

    From "Deep Residual Learning for Image Recognition", He, Zhang, Ren & Sun, CVPR 2016,
    https://arxiv.org/abs/1512.03385, with GroupNorm in place of BatchNorm.

    Parameters
    ----------
    in_channels : int
    out_channels : int
    stride : int
        1, or 2 to halve the spatial size (the shortcut then projects with a strided 1x1 conv).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        # Convs followed by a norm need no bias: the norm's shift would absorb it.
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(_GN_GROUPS, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(_GN_GROUPS, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.GroupNorm(_GN_GROUPS, out_channels),
            )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(N, C_in, H, W)`` to ``(N, C_out, H / stride, W / stride)``."""
        out = self.relu(self.norm1(self.conv1(x)))  # (N, C_out, H', W')
        out = self.norm2(self.conv2(out))  # (N, C_out, H', W')
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Small ResNet: stem conv, three BasicBlock stages (16, 32, 64), global average pool, linear.

    The deepest zoo member (7 convs on the main path) and the narrowest. On 28x28 inputs the maps
    go 28 -> 14 (stem) -> 14 -> 7 -> 4; on 8x8 the stem halves once and the stages keep 4x4.

    Parameters
    ----------
    input_shape : tuple[int, int, int]
        ``(C, H, W)`` of one image.
    num_classes : int
        Number of output logits ``K``.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = _check_dims(input_shape, num_classes)
        size = (height, width)
        widths = (16, 32, 64)
        # A full-resolution first stage would dominate CPU time, so the stem strides (see
        # module docstring); the residual stages then work on 14x14 maps for Fashion-MNIST.
        stem_stride = 2 if _can_halve(size) else 1
        if stem_stride == 2:
            size = _halved(size)
        self.stem = nn.Sequential(
            nn.Conv2d(channels, widths[0], 3, stride=stem_stride, padding=1, bias=False),
            nn.GroupNorm(_GN_GROUPS, widths[0]),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        in_channels = widths[0]
        for i, out_channels in enumerate(widths):
            stride = 2 if i > 0 and _can_halve(size) else 1
            if stride == 2:
                size = _halved(size)
            blocks.append(BasicBlock(in_channels, out_channels, stride))
            in_channels = out_channels
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, K)``."""
        features = self.stages(self.stem(x))  # (N, 64, h, w)
        pooled = torch.flatten(self.pool(features), 1)  # (N, 64)
        return self.fc(pooled)  # (N, K)


ARCHITECTURES: Final[Mapping[str, ModelFn]] = MappingProxyType(
    {
        "mlp": MLP,
        "cnn": CNN,
        "wide_cnn": WideCNN,
        "resnet": ResNet,
    }
)
"""Registry of the zoo, keyed by the lowercase names used in configs (read-only)."""


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build a freshly initialised classifier from the zoo.

    Seed with ``torch.manual_seed`` beforehand for a reproducible initialisation.

    Parameters
    ----------
    name : str
        A key of :data:`ARCHITECTURES`.
    input_shape : tuple[int, int, int]
        ``(C, H, W)`` of one image.
    num_classes : int
        Number of output logits ``K``.

    Returns
    -------
    nn.Module
        Maps float32 images ``(N, C, H, W)`` to logits ``(N, K)``.

    Raises
    ------
    ValueError
        If ``name`` is not a known architecture, or the dimensions are not positive.
    """
    try:
        model_fn = ARCHITECTURES[name]
    except KeyError:
        valid = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {name!r}; valid names: {valid}") from None
    return model_fn(input_shape, num_classes)


def count_parameters(model: nn.Module) -> int:
    """Total number of scalar parameters in ``model`` (trainable or not).

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    int
    """
    return sum(p.numel() for p in model.parameters())
