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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

__all__ = [
    "DATASET_NAMES",
    "DATA_DIR_ENV",
    "DEFAULT_FMNIST_DIR",
    "FMNIST_MEAN",
    "FMNIST_STD",
    "ArrayDataset",
    "DatasetNotFoundError",
    "DatasetSplits",
    "find_fmnist_dir",
    "load_digits_arrays",
    "load_fmnist",
    "load_npz",
    "load_splits",
    "read_idx",
]

logger = logging.getLogger(__name__)

DEFAULT_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_DIR_ENV = "FEDKD_DATA_DIR"

# Per-pixel statistics of the Fashion-MNIST training set after scaling to [0, 1]; fixed
# constants (not recomputed) so that every split and every client normalises identically.
FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530
_FMNIST_NUM_CLASSES = 10
_FMNIST_IMAGE_SHAPE = (28, 28)

_DIGITS_NUM_CLASSES = 10
_DIGITS_DEFAULT_NUM_TEST = 360

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
class DatasetSplits:
    """The three disjoint splits of one dataset used by a federated distillation run.

    Parameters
    ----------
    private : ArrayDataset
        The pool that is partitioned across clients for local training.
    public : ArrayDataset
        The public proxy set on which clients exchange soft predictions. Its labels exist only
        for evaluation; clients must not train on them.
    test : ArrayDataset
        Held-out evaluation data.
    num_classes : int
        Number of classes; labels lie in ``[0, num_classes)``.
    input_shape : tuple[int, int, int]
        ``(C, H, W)`` of every image.
    name : str
        Dataset name, e.g. ``"fmnist"``.

    Raises
    ------
    ValueError
        If a split's image shape differs from ``input_shape`` or a label is out of range.
    """

    private: ArrayDataset
    public: ArrayDataset
    test: ArrayDataset
    num_classes: int
    input_shape: tuple[int, int, int]
    name: str

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        for split_name, split in (
            ("private", self.private),
            ("public", self.public),
            ("test", self.test),
        ):
            if tuple(split.x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"{split_name} images have shape {split.x.shape[1:]}, "
                    f"expected input_shape {self.input_shape}"
                )
            if len(split) and (split.y.min() < 0 or split.y.max() >= self.num_classes):
                raise ValueError(
                    f"{split_name} labels must lie in [0, {self.num_classes}), "
                    f"got range [{split.y.min()}, {split.y.max()}]"
                )


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
) -> tuple[ArrayDataset, ArrayDataset]:
    """Load the official Fashion-MNIST train (60k) and test (10k) sets from IDX files.

    Pixels are scaled to ``[0, 1]`` and then normalised with :data:`FMNIST_MEAN` and
    :data:`FMNIST_STD`.

    Parameters
    ----------
    data_dir : str or pathlib.Path or None
        Where to look first; see :func:`find_fmnist_dir` for the search order.

    Returns
    -------
    tuple[ArrayDataset, ArrayDataset]
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


def load_digits_arrays() -> ArrayDataset:
    """Load scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), offline.

    Pixels (integers in ``[0, 16]``) are divided by 16 and then normalised by the mean and
    standard deviation of the whole set. The data is fixed, so those statistics are the same
    on every call; there is no official train/test split (see :func:`load_splits`).

    Returns
    -------
    ArrayDataset
        ``x`` of shape ``(1797, 1, 8, 8)`` float32, ``y`` of shape ``(1797,)`` int64.
    """
    # Imported here so that merely importing fedkd.data does not pay for scikit-learn.
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Statistics in float64, then one cast, so the normalised mean and std are exactly 0 and 1
    # up to float32 rounding.
    x = np.asarray(digits.images, dtype=np.float64)[:, None, :, :] / 16.0
    x = (x - x.mean()) / x.std()
    return ArrayDataset(x=x.astype(np.float32), y=np.asarray(digits.target, dtype=np.int64))


def load_npz(path: str | Path) -> ArrayDataset:
    """Load a user dataset stored as a simple ``.npz`` archive.

    The archive must hold two arrays:

    - ``x``: images of shape ``(N, H, W)`` (a channel axis is added) or ``(N, C, H, W)``,
      dtype uint8 (scaled by ``1 / 255``) or floating point (used as is);
    - ``y``: integer labels of shape ``(N,)``, all non-negative.

    No normalisation is applied beyond the uint8 scaling: store data that is already
    normalised the way your models expect. Create one with
    ``numpy.savez(path, x=images, y=labels)``.

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.npz`` file.

    Returns
    -------
    ArrayDataset
        ``x`` float32 of shape ``(N, C, H, W)``, ``y`` int64.

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
    with np.load(path, allow_pickle=False) as archive:
        for key in ("x", "y"):
            if key not in archive.files:
                raise ValueError(
                    f"{path}: missing array {key!r} (found {sorted(archive.files)}); "
                    "expected 'x' (N, H, W) or (N, C, H, W) and 'y' (N,)"
                )
        x_raw = archive["x"]
        y_raw = archive["y"]

    if x_raw.ndim == 3:
        x_raw = x_raw[:, None, :, :]
    if x_raw.ndim != 4:
        raise ValueError(
            f"{path}: array 'x' must have shape (N, H, W) or (N, C, H, W), got {x_raw.shape}"
        )
    if x_raw.dtype == np.uint8:
        x = x_raw.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(x_raw.dtype, np.floating):
        x = x_raw.astype(np.float32)
    else:
        raise ValueError(f"{path}: array 'x' must be uint8 or floating point, got {x_raw.dtype}")

    if y_raw.ndim != 1 or not np.issubdtype(y_raw.dtype, np.integer):
        raise ValueError(
            f"{path}: array 'y' must be a 1-D integer array, got dtype {y_raw.dtype} "
            f"and shape {y_raw.shape}"
        )
    if len(y_raw) != len(x):
        raise ValueError(f"{path}: 'x' holds {len(x)} samples but 'y' holds {len(y_raw)}")
    if len(y_raw) and y_raw.min() < 0:
        raise ValueError(f"{path}: array 'y' holds negative labels (min {y_raw.min()})")
    return ArrayDataset(x=x, y=y_raw.astype(np.int64))


def load_splits(
    name: str,
    *,
    data_dir: str | Path | None = None,
    num_public: int,
    num_private: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
) -> DatasetSplits:
    """Build the private / public / test splits of a named dataset, deterministically.

    ``fmnist``: the public set is ``num_public`` samples drawn (seeded permutation) from the
    60k training set, the private pool is the rest (or the first ``num_private`` of the
    rest), and the test set is the official 10k (or ``num_test`` of them, drawn by a seeded
    permutation).

    ``digits`` (no official split): one seeded permutation of the 1797 samples gives the test
    set (``num_test``, 360 when ``None``), then the public set (``num_public``), then the
    private pool (the rest, or ``num_private`` of it).

    Within each split, samples keep their original relative order.

    Parameters
    ----------
    name : str
        One of :data:`DATASET_NAMES`.
    data_dir : str or pathlib.Path or None
        Where to find files, for datasets read from disk (see :func:`find_fmnist_dir`).
    num_public : int
        Size of the public proxy set.
    num_private : int or None
        Size of the private pool; ``None`` takes everything left over.
    num_test : int or None
        Size of the test set; ``None`` takes the dataset's default.
    seed : int
        Seed for :func:`numpy.random.default_rng`; the same seed gives the same splits.

    Returns
    -------
    DatasetSplits
        Disjoint splits.

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists the valid names), or a size is < 1 or
        exceeds what is available (the message names the argument).
    DatasetNotFoundError
        If a dataset's files cannot be found.
    """
    builder = _SPLIT_BUILDERS.get(name)
    if builder is None:
        raise ValueError(
            f"unknown dataset name {name!r}; valid names: {', '.join(sorted(_SPLIT_BUILDERS))}"
        )
    _check_size("num_public", num_public)
    _check_size("num_private", num_private)
    _check_size("num_test", num_test)
    splits = builder(data_dir, num_public, num_private, num_test, np.random.default_rng(seed))
    logger.info(
        "Dataset %s (seed %d): %d private, %d public, %d test samples",
        name,
        seed,
        len(splits.private),
        len(splits.public),
        len(splits.test),
    )
    return splits


def _fmnist_splits(
    data_dir: str | Path | None,
    num_public: int,
    num_private: int | None,
    num_test: int | None,
    rng: np.random.Generator,
) -> DatasetSplits:
    train, test = load_fmnist(data_dir)
    public_idx, private_idx = _draw_public_private(
        rng.permutation(len(train)), num_public, num_private
    )
    if num_test is not None:
        if num_test > len(test):
            raise ValueError(
                f"num_test={num_test} exceeds the {len(test)} samples of the fmnist test set"
            )
        test = test.subset(np.sort(rng.permutation(len(test))[:num_test]))
    return DatasetSplits(
        private=train.subset(private_idx),
        public=train.subset(public_idx),
        test=test,
        num_classes=_FMNIST_NUM_CLASSES,
        input_shape=(1, *_FMNIST_IMAGE_SHAPE),
        name="fmnist",
    )


def _digits_splits(
    data_dir: str | Path | None,
    num_public: int,
    num_private: int | None,
    num_test: int | None,
    rng: np.random.Generator,
) -> DatasetSplits:
    del data_dir  # the digits ship inside scikit-learn
    full = load_digits_arrays()
    num_test = _DIGITS_DEFAULT_NUM_TEST if num_test is None else num_test
    if num_test >= len(full):
        raise ValueError(
            f"num_test={num_test} leaves no training data: digits has {len(full)} samples"
        )
    order = rng.permutation(len(full))
    test_idx, rest = order[:num_test], order[num_test:]
    public_idx, private_idx = _draw_public_private(
        rest, num_public, num_private, context=f"after the {num_test} test samples"
    )
    return DatasetSplits(
        private=full.subset(private_idx),
        public=full.subset(public_idx),
        test=full.subset(np.sort(test_idx)),
        num_classes=_DIGITS_NUM_CLASSES,
        input_shape=(1, *full.x.shape[2:]),
        name="digits",
    )


def _draw_public_private(
    order: npt.NDArray[np.integer],
    num_public: int,
    num_private: int | None,
    context: str = "",
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Take the public set, then the private pool, from the front of a permuted index pool.

    Returns both as sorted int64 arrays so that each split keeps the dataset's original order.
    """
    where = f"the {len(order)} samples available" + (f" {context}" if context else "")
    if num_public >= len(order):
        raise ValueError(
            f"num_public={num_public} leaves no private samples: it must be below {where}"
        )
    public_idx, rest = order[:num_public], order[num_public:]
    if num_private is not None:
        if num_private > len(rest):
            raise ValueError(
                f"num_private={num_private} exceeds the {len(rest)} samples left from {where} "
                f"after num_public={num_public}"
            )
        rest = rest[:num_private]
    return np.sort(public_idx).astype(np.int64), np.sort(rest).astype(np.int64)


def _check_size(argument: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{argument} must be >= 1, got {value}")


_SplitBuilder = Callable[
    [str | Path | None, int, int | None, int | None, np.random.Generator], DatasetSplits
]

# Read-only so that the set of datasets cannot be changed at run time behind the config's back.
_SPLIT_BUILDERS: Mapping[str, _SplitBuilder] = MappingProxyType(
    {"fmnist": _fmnist_splits, "digits": _digits_splits}
)

DATASET_NAMES: tuple[str, ...] = tuple(sorted(_SPLIT_BUILDERS))


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


def _load_fmnist_pair(directory: Path, images_stem: str, labels_stem: str) -> ArrayDataset:
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
    # In-place float32 arithmetic: the 60k training images would otherwise be copied 3 times.
    x = images.astype(np.float32)[:, None, :, :]
    x /= np.float32(255.0)
    x -= np.float32(FMNIST_MEAN)
    x /= np.float32(FMNIST_STD)
    return ArrayDataset(x=x, y=labels.astype(np.int64))
