"""A SuperNode's own private data, read from a local directory (deployment).

Two layouts are accepted in ``data-dir``:

* ``private.npz`` with ``x`` (N, H, W), (N, C, H, W) or (N, D) and ``y`` (N,) integer labels,
  in the raw scale of the configured sources: ``uint8`` pixels (scaled to [0, 1]) or floats
  (used as is; ``fedkd-export-partitions`` writes such files).
* MNIST-style IDX files ``train-images-idx3-ubyte[.gz]`` and ``train-labels-idx1-ubyte[.gz]``.

Either way the images are normalised with the run's shared statistics (``splits.mean``/``std``,
from the public set or the config), exactly like every split on the server. The public proxy set
and the test set never come from here: every node and the server load them from the configured
sources, so they are identical everywhere.
"""

from pathlib import Path
from typing import Final

import numpy as np

from fedkd.data.datasets import (
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
        raw = load_npz(npz)
        assert raw.y is not None  # load_npz requires labels by default
        x, y = raw.x, raw.y
    elif images is not None and labels is not None:
        x_raw, y_raw = read_idx(images), read_idx(labels)
        if len(x_raw) != len(y_raw):
            raise ValueError(f"{images} holds {len(x_raw)} images but {labels} {len(y_raw)} labels")
        x = x_raw[:, None].astype(np.float32) / np.float32(255.0)
        y = y_raw.astype(np.int64)
    else:
        raise DatasetNotFoundError(
            f"data-dir {directory} holds neither {NODE_NPZ} (arrays x, y) nor the IDX files "
            f"{' + '.join(s + '[.gz]' for s in _IDX_STEMS)}"
        )
    if x.shape[1:] != splits.input_shape:
        raise ValueError(
            f"{directory}: images have shape {x.shape[1:]}, but the run's public/test sets "
            f"({splits.name}) have {splits.input_shape}"
        )
    if len(y) == 0:
        raise ValueError(f"{directory}: no samples")
    if y.max() >= splits.num_classes:
        raise ValueError(f"{directory}: label {y.max()} is not one of {splits.num_classes} classes")
    return ArrayDataset(x=splits.normalize(x), y=y)
