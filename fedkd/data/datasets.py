"""Offline dataset loaders and the private / public / test splits used by every experiment.

Nothing here downloads anything: Fashion-MNIST is read from IDX files already on disk
(Debian's ``dataset-fashion-mnist`` package, or any directory the user points at), and the
8x8 digits ship inside the scikit-learn wheel.

The public proxy set is the data on which clients exchange soft predictions. Its labels are
kept only so that the server can *evaluate* on it; no client may train on them.

References
----------
Han Xiao, Kashif Rasul, Roland Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms", 2017. https://arxiv.org/abs/1708.07747

Yann LeCun, Corinna Cortes, Christopher J.C. Burges, "The MNIST database" (IDX file
format). http://yann.lecun.com/exdb/mnist/
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_FMNIST_DIR",
    "FMNIST_MEAN",
    "FMNIST_STD",
    "ArrayDataset",
    "DatasetNotFoundError",
    "DatasetSplits",
    "ImageSet",
    "check_labels",
    "find_fmnist_dir",
    "load_digits_arrays",
    "load_fmnist",
    "load_npz",
    "normalize",
    "read_idx",
]

logger = logging.getLogger(__name__)

DEFAULT_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_DIR_ENV = "FEDKD_DATA_DIR"

# Per-pixel statistics of the Fashion-MNIST training set after scaling to [0, 1]: what the
# benchmark experiments pin (normalize.mean / normalize.std) so published numbers stay put.
FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530
_FMNIST_NUM_CLASSES = 10
_FMNIST_IMAGE_SHAPE = (28, 28)


# Stems of the four Fashion-MNIST IDX files; each may be present raw or with a ``.gz`` suffix.
_FMNIST_TRAIN_IMAGES = "train-images-idx3-ubyte"
_FMNIST_TRAIN_LABELS = "train-labels-idx1-ubyte"
_FMNIST_TEST_IMAGES = "t10k-images-idx3-ubyte"
_FMNIST_TEST_LABELS = "t10k-labels-idx1-ubyte"
_FMNIST_FILES = (
    _FMNIST_TRAIN_IMAGES,
    _FMNIST_TRAIN_LABELS,
    _FMNIST_TEST_IMAGES,
    _FMNIST_TEST_LABELS,
)

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UINT8 = 0x08


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset's files cannot be found on disk.

    The message lists every directory searched, what was missing from each, and how to
    install or point at the data.
    """


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """An in-memory image classification dataset.

    ``frozen`` protects the fields, not the array contents: the arrays are stored as given,
    without a copy. Equality is identity (``eq=False``) because element-wise array comparison
    has no single truth value.

    Parameters
    ----------
    x : numpy.ndarray
        Images, float32, shape ``(N, C, H, W)``, already normalised.
    y : numpy.ndarray
        Integer class labels, int64, shape ``(N,)``.

    Raises
    ------
    ValueError
        If the shapes or dtypes do not match the description above.
    """

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(
                f"ArrayDataset.x must have shape (N, C, H, W), got shape {self.x.shape}"
            )
        if self.y.ndim != 1:
            raise ValueError(f"ArrayDataset.y must have shape (N,), got shape {self.y.shape}")
        if len(self.x) != len(self.y):
            raise ValueError(
                f"ArrayDataset.x and ArrayDataset.y disagree on the number of samples: "
                f"{len(self.x)} images but {len(self.y)} labels"
            )
        if self.x.dtype != np.float32:
            raise ValueError(f"ArrayDataset.x must be float32, got {self.x.dtype}")
        if self.y.dtype != np.int64:
            raise ValueError(f"ArrayDataset.y must be int64, got {self.y.dtype}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: npt.NDArray[np.integer]) -> ArrayDataset:
        """Return the samples at ``indices`` as a new dataset (the arrays are copied).

        Parameters
        ----------
        indices : numpy.ndarray
            1-D integer indices into this dataset, e.g. one client's partition.

        Returns
        -------
        ArrayDataset
            ``ArrayDataset(x[indices], y[indices])``.
        """
        indices = np.asarray(indices)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(
                f"indices must be a 1-D integer array, got dtype {indices.dtype} "
                f"and shape {indices.shape}"
            )
        return ArrayDataset(x=self.x[indices], y=self.y[indices])


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images ``x`` (float32, ``(N, C, H, W)``) with labels ``y`` (int64, ``(N,)``) or without
    (``None``: an unlabelled public proxy set)."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64] | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.dtype != np.float32:
            raise ValueError(f"x must be float32 (N, C, H, W), got {self.x.dtype} {self.x.shape}")
        if self.y is not None and (self.y.shape != (len(self.x),) or self.y.dtype != np.int64):
            raise ValueError(
                f"y must be int64 ({len(self.x)},) to match x, got {self.y.dtype} {self.y.shape}"
            )

    def __len__(self) -> int:
        return len(self.x)

    def take(self, indices: npt.NDArray[np.integer]) -> ImageSet:
        """The samples at ``indices`` (copied)."""
        return ImageSet(self.x[indices], None if self.y is None else self.y[indices])

    def labelled(self, what: str) -> ArrayDataset:
        """As an :class:`ArrayDataset`; raises naming ``what`` when there are no labels."""
        if self.y is None:
            raise ValueError(f"{what} needs labels, but its source has none (no 'y')")
        return ArrayDataset(self.x, self.y)


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """The three splits a federated distillation run uses, normalised alike.

    Parameters
    ----------
    private : ArrayDataset
        The pool that is partitioned across clients for local training. Empty where it is not
        needed (a deployment server whose public and test sets come from their own sources).
    public : ImageSet
        The public proxy set on which clients exchange soft predictions. Its labels, when its
        source is the private task's, exist only for evaluation; clients never train on them.
    test : ArrayDataset
        Held-out evaluation data of the private task.
    num_classes : int
        Number of classes; labels lie in ``[0, num_classes)``.
    input_shape : tuple[int, int, int]
        ``(C, H, W)`` of every image.
    name : str
        What the data is, for logs (e.g. ``"fmnist"``, ``"npz private + folder public"``).
    mean, std : tuple[float, ...]
        Per-channel statistics every split was normalised with (``(x - mean) / std``), computed
        from the public set or given in config; a node's own private data gets the same.

    Raises
    ------
    ValueError
        If a split's image shape differs from ``input_shape`` or a label is out of range.
    """

    private: ArrayDataset
    public: ImageSet
    test: ArrayDataset
    num_classes: int
    input_shape: tuple[int, int, int]
    name: str
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        for split_name, split in (
            ("private", self.private),
            ("public", self.public),
            ("test", self.test),
        ):
            if len(split) and tuple(split.x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"{split_name} images have shape {split.x.shape[1:]}, "
                    f"expected input_shape {self.input_shape}"
                )
            if split.y is not None and len(split.y):
                check_labels(split.y, self.num_classes, f"{split_name} labels")

    def normalize(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Raw-scale images (N, C, H, W) -> the space every split lives in."""
        return normalize(x, self.mean, self.std)


def check_labels(y: npt.NDArray[np.integer], num_classes: int, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` unless every label is in ``[0, num_classes)``."""
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{what} must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")


def normalize(
    x: npt.NDArray[np.float32], mean: tuple[float, ...], std: tuple[float, ...]
) -> npt.NDArray[np.float32]:
    """``(x - mean) / std`` per channel, in float32 (a new array)."""
    channels = x.shape[1]
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise ValueError(
            f"normalisation has {len(mean)} means and {len(std)} stds for {channels} channels"
        )
    shape = (1, -1, 1, 1)
    m = np.asarray(mean, dtype=np.float32).reshape(shape)
    s = np.asarray(std, dtype=np.float32).reshape(shape)
    out = x - m
    out /= s
    return out


def read_idx(path: Path) -> npt.NDArray[np.uint8]:
    """Read an IDX file (the MNIST / Fashion-MNIST container format), gzipped or raw.

    The header is ``00 00 <dtype code> <ndim>`` followed by ``ndim`` big-endian uint32
    dimensions; the data starts at byte ``4 + 4 * ndim``. Gzip is detected from the file's
    magic bytes, not its name. Only dtype code ``0x08`` (unsigned byte) is supported, which
    is all that MNIST-style datasets use.

    Parameters
    ----------
    path : pathlib.Path
        The file to read.

    Returns
    -------
    numpy.ndarray
        A writable uint8 array of the shape stored in the header.

    Raises
    ------
    ValueError
        If the header is malformed, the dtype is unsupported, or the data is truncated or has
        trailing bytes. The message names ``path``.
    """
    path = Path(path)
    raw = _read_maybe_gzipped(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(raw)} bytes, header needs 4)")
    zero_a, zero_b, dtype_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero_a != 0 or zero_b != 0:
        raise ValueError(
            f"{path}: not an IDX file (magic must start with 00 00, got {raw[:2].hex(' ')})"
        )
    if dtype_code != _IDX_UINT8:
        raise ValueError(
            f"{path}: unsupported IDX data type code 0x{dtype_code:02x}; "
            f"only 0x{_IDX_UINT8:02x} (uint8) is supported"
        )
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    data_offset = 4 + 4 * ndim
    if len(raw) < data_offset:
        raise ValueError(
            f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions need {data_offset})"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape)
    found = len(raw) - data_offset
    if found != expected:
        problem = "truncated" if found < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX data {problem}: shape {shape} needs {expected} bytes, found {found}"
        )
    # copy(): frombuffer views the immutable bytes, and callers expect a writable array.
    data = np.frombuffer(raw, dtype=np.uint8, count=expected, offset=data_offset)
    return data.reshape(shape).copy()


def find_fmnist_dir(data_dir: str | Path | None = None) -> Path:
    """Locate a directory holding the four Fashion-MNIST IDX files.

    Search order: ``data_dir`` if given, then ``$FEDKD_DATA_DIR``, then
    :data:`DEFAULT_FMNIST_DIR` (where Debian's ``dataset-fashion-mnist`` installs them). A
    directory qualifies if it holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or gzipped (``.gz``).

    Parameters
    ----------
    data_dir : str or pathlib.Path or None
        A directory chosen by the user (``dataset.data_dir=...``). ``None`` or the empty
        string (what Hydra yields for ``dataset.data_dir=``) means "not given".

    Returns
    -------
    pathlib.Path
        The first qualifying directory.

    Raises
    ------
    DatasetNotFoundError
        Immediately if ``data_dir`` was given but does not qualify (a silent fall-back would
        train on data the user did not ask for); otherwise if no candidate qualifies. The
        message lists the directories searched, the files missing from each, and the fix.
    """
    if data_dir is not None and str(data_dir) != "":
        candidate = Path(data_dir).expanduser()
        missing = _missing_fmnist_files(candidate)
        if not missing:
            return candidate
        raise DatasetNotFoundError(
            _not_found_message([(f"{candidate} (data_dir argument)", missing)])
        )

    searched: list[tuple[str, list[str]]] = []
    env_value = os.environ.get(DATA_DIR_ENV, "")
    if env_value:
        candidate = Path(env_value).expanduser()
        missing = _missing_fmnist_files(candidate)
        if not missing:
            return candidate
        logger.warning(
            "$%s=%s does not hold Fashion-MNIST (missing %s); trying %s",
            DATA_DIR_ENV,
            candidate,
            ", ".join(missing),
            DEFAULT_FMNIST_DIR,
        )
        searched.append((f"{candidate} (${DATA_DIR_ENV})", missing))
    else:
        searched.append((f"${DATA_DIR_ENV} (not set)", []))

    missing = _missing_fmnist_files(DEFAULT_FMNIST_DIR)
    if not missing:
        return DEFAULT_FMNIST_DIR
    searched.append((f"{DEFAULT_FMNIST_DIR} (default)", missing))
    raise DatasetNotFoundError(_not_found_message(searched))


def load_fmnist(
    data_dir: str | Path | None = None,
) -> tuple[ImageSet, ImageSet]:
    """Load the official Fashion-MNIST train (60k) and test (10k) sets from IDX files.

    Pixels are scaled to ``[0, 1]``; normalisation comes later (:mod:`fedkd.data.splits`).

    Parameters
    ----------
    data_dir : str or pathlib.Path or None
        Where to look first; see :func:`find_fmnist_dir` for the search order.

    Returns
    -------
    tuple[ImageSet, ImageSet]
        ``(train, test)`` with ``x`` of shape ``(N, 1, 28, 28)`` float32 and ``y`` int64.

    Raises
    ------
    DatasetNotFoundError
        If the files cannot be found.
    ValueError
        If a file is malformed or images and labels disagree.
    """
    directory = find_fmnist_dir(data_dir)
    logger.info("Loading Fashion-MNIST from %s", directory)
    train = _load_fmnist_pair(directory, _FMNIST_TRAIN_IMAGES, _FMNIST_TRAIN_LABELS)
    test = _load_fmnist_pair(directory, _FMNIST_TEST_IMAGES, _FMNIST_TEST_LABELS)
    return train, test


def load_digits_arrays() -> ImageSet:
    """Load scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), offline.

    Pixels (integers in ``[0, 16]``) are scaled to ``[0, 1]``. There is no official
    train/test split.

    Returns
    -------
    ImageSet
        ``x`` of shape ``(1797, 1, 8, 8)`` float32, ``y`` of shape ``(1797,)`` int64.
    """
    # Imported here so that merely importing fedkd.data does not pay for scikit-learn.
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.asarray(digits.images, dtype=np.float32)[:, None, :, :] / np.float32(16.0)
    return ImageSet(x=x, y=np.asarray(digits.target, dtype=np.int64))


def load_npz(path: str | Path, *, require_labels: bool = True) -> ImageSet:
    """Load a user dataset stored as a simple ``.npz`` archive.

    The archive holds ``x`` -- images ``(N, H, W)`` (a channel axis is added), ``(N, C, H, W)``,
    or flat vectors ``(N, D)`` (stored as ``(N, 1, 1, D)``: models that flatten accept them) --
    of dtype uint8 (scaled by ``1 / 255``) or floating point (used as is), and ``y``: integer
    labels ``(N,)``, all non-negative; ``y`` may be absent when ``require_labels`` is false
    (an unlabelled public set). Create one with ``numpy.savez(path, x=images, y=labels)``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If a key is missing or an array has the wrong shape or dtype; the message names the
        file and the key.
    """
    path = Path(path)
    # allow_pickle=False: a data file must never be able to execute code.
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable .npz archive ({err})") from err
    with archive:
        if not hasattr(archive, "files"):
            raise ValueError(f"{path}: not an .npz archive (a single array; use numpy.savez)")
        required = ("x", "y") if require_labels else ("x",)
        for key in required:
            if key not in archive.files:
                raise ValueError(
                    f"{path}: missing array {key!r} (found {sorted(archive.files)}); "
                    "expected 'x' (N, H, W), (N, C, H, W) or (N, D) and 'y' (N,)"
                )
        x_raw = archive["x"]
        y_raw = archive["y"] if "y" in archive.files else None

    if x_raw.ndim == 3:
        x_raw = x_raw[:, None, :, :]
    elif x_raw.ndim == 2:
        x_raw = x_raw[:, None, None, :]
    if x_raw.ndim != 4:
        raise ValueError(
            f"{path}: array 'x' must have shape (N, H, W), (N, C, H, W) or (N, D), "
            f"got {x_raw.shape}"
        )
    if x_raw.dtype == np.uint8:
        x = x_raw.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(x_raw.dtype, np.floating):
        x = np.ascontiguousarray(x_raw, dtype=np.float32)
    else:
        raise ValueError(f"{path}: array 'x' must be uint8 or floating point, got {x_raw.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{path}: array 'x' holds NaN or infinite values")
    if y_raw is None:
        return ImageSet(x=x)
    if y_raw.ndim != 1 or not np.issubdtype(y_raw.dtype, np.integer):
        raise ValueError(
            f"{path}: array 'y' must be a 1-D integer array, got dtype {y_raw.dtype} "
            f"and shape {y_raw.shape}"
        )
    if len(y_raw) != len(x):
        raise ValueError(f"{path}: 'x' holds {len(x)} samples but 'y' holds {len(y_raw)}")
    if len(y_raw) and y_raw.min() < 0:
        raise ValueError(f"{path}: array 'y' holds negative labels (min {y_raw.min()})")
    return ImageSet(x=x, y=y_raw.astype(np.int64))


def _read_maybe_gzipped(path: Path) -> bytes:
    with path.open("rb") as handle:
        raw = handle.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: corrupt gzip data ({error})") from error


def _fmnist_file(directory: Path, stem: str) -> Path | None:
    # The raw file wins over the .gz when both exist: it needs no decompression.
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_fmnist_files(directory: Path) -> list[str]:
    if not directory.is_dir():
        return [f"{stem}[.gz]" for stem in _FMNIST_FILES]
    return [f"{stem}[.gz]" for stem in _FMNIST_FILES if _fmnist_file(directory, stem) is None]


def _not_found_message(searched: list[tuple[str, list[str]]]) -> str:
    lines = ["Fashion-MNIST not found. Directories searched:"]
    for where, missing in searched:
        detail = f"missing {', '.join(missing)}" if missing else "skipped"
        lines.append(f"  - {where}: {detail}")
    lines.append(
        "To fix: on Debian/Ubuntu run `apt-get install dataset-fashion-mnist` (installs to "
        f"{DEFAULT_FMNIST_DIR}), or put the four IDX files ({', '.join(_FMNIST_FILES)}, raw "
        f"or .gz) in a directory and pass `dataset.data_dir=<dir>` or set {DATA_DIR_ENV}=<dir>."
    )
    return "\n".join(lines)


def _load_fmnist_pair(directory: Path, images_stem: str, labels_stem: str) -> ImageSet:
    images_path = _fmnist_file(directory, images_stem)
    labels_path = _fmnist_file(directory, labels_stem)
    # find_fmnist_dir has just checked both; only a concurrent deletion can get here.
    if images_path is None or labels_path is None:
        raise DatasetNotFoundError(
            _not_found_message([(str(directory), _missing_fmnist_files(directory))])
        )
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != _FMNIST_IMAGE_SHAPE:
        raise ValueError(f"{images_path}: expected images of shape (N, 28, 28), got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"{labels_path}: expected {len(images)} labels to match {images_path}, "
            f"got shape {labels.shape}"
        )
    if len(labels) and labels.max() >= _FMNIST_NUM_CLASSES:
        raise ValueError(f"{labels_path}: label {labels.max()} is not a Fashion-MNIST class")
    x = images.astype(np.float32)[:, None, :, :]
    x /= np.float32(255.0)  # in place: the 60k training images are 188 MB as float32
    return ImageSet(x=x, y=labels.astype(np.int64))
