"""A SuperNode's own private data, read from a local directory (deployment).

Two layouts are accepted in ``data-dir``:

* ``private.npz`` with ``x`` (N, H, W) or (N, C, H, W) and ``y`` (N,) integer labels. Float
  ``x`` is used as is: it must already be normalised the way fedkd normalises the configured
  dataset (``fedkd-export-partitions`` writes such files). ``uint8`` ``x`` holds raw pixels
  (0-255) and is scaled and normalised with the dataset's statistics (Fashion-MNIST only).
* Fashion-MNIST-style IDX files ``train-images-idx3-ubyte[.gz]`` and
  ``train-labels-idx1-ubyte[.gz]``.

The public proxy set and the test set never come from here: every node and the server load them
from the configured dataset, so they are identical everywhere.
"""

from pathlib import Path
from typing import Final

import numpy as np

from fedkd.data.datasets import (
    FMNIST_MEAN,
    FMNIST_STD,
    ArrayDataset,
    DatasetNotFoundError,
    DatasetSplits,
    load_npz,
    read_idx,
)

NODE_NPZ: Final = "private.npz"
_IDX_STEMS: Final = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


def _idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _standardise(x_unit: np.ndarray, dataset: str, source: Path) -> np.ndarray:
    """Pixels scaled to [0, 1] -> the normalised space of fedkd's loader for ``dataset``."""
    if dataset != "fmnist":
        raise ValueError(
            f"{source}: raw uint8 pixels are only understood for fmnist; for {dataset!r} store "
            "float32 images normalised like fedkd's loader (see fedkd-export-partitions)"
        )
    return ((x_unit - np.float32(FMNIST_MEAN)) / np.float32(FMNIST_STD)).astype(np.float32)


def load_node_private(data_dir: str | Path, splits: DatasetSplits) -> ArrayDataset:
    """This node's private training data from ``data_dir``, checked against ``splits``' shape.

    Raises
    ------
    DatasetNotFoundError
        ``data_dir`` is missing or holds neither layout.
    ValueError
        The files are malformed or do not match the dataset (shape, labels).
    """
    directory = Path(data_dir).expanduser()
    if not directory.is_dir():
        raise DatasetNotFoundError(f"data-dir {directory} does not exist or is not a directory")
    npz = directory / NODE_NPZ
    images, labels = (_idx_file(directory, stem) for stem in _IDX_STEMS)
    if npz.is_file():
        data = load_npz(npz)
        with np.load(npz, allow_pickle=False) as archive:
            raw = archive["x"].dtype == np.uint8
        if raw:  # load_npz scaled the pixels to [0, 1]
            data = ArrayDataset(x=_standardise(data.x, splits.name, npz), y=data.y)
    elif images is not None and labels is not None:
        x_raw, y = read_idx(images), read_idx(labels)
        if len(x_raw) != len(y):
            raise ValueError(f"{images} holds {len(x_raw)} images but {labels} {len(y)} labels")
        x_unit = x_raw[:, None].astype(np.float32) / np.float32(255.0)
        data = ArrayDataset(x=_standardise(x_unit, splits.name, images), y=y.astype(np.int64))
    else:
        raise DatasetNotFoundError(
            f"data-dir {directory} holds neither {NODE_NPZ} (arrays x, y) nor the IDX files "
            f"{' + '.join(s + '[.gz]' for s in _IDX_STEMS)}"
        )
    if data.x.shape[1:] != splits.input_shape:
        raise ValueError(
            f"{directory}: images have shape {data.x.shape[1:]}, but the {splits.name} "
            f"public/test sets have {splits.input_shape}"
        )
    if len(data) == 0:
        raise ValueError(f"{directory}: no samples")
    if data.y.max() >= splits.num_classes:
        raise ValueError(
            f"{directory}: label {data.y.max()} is not one of {splits.num_classes} classes"
        )
    return data
