"""One copy of a run's data for every process on this machine.

A simulated run has many processes that need the same splits: the ServerApp and every Ray actor
serving virtual clients. Each used to load, split and normalise the dataset itself, holding its
own ~0.75 GB copy of Fashion-MNIST. Instead the launcher writes the normalised splits once, as
``.npy`` files in a folder that lives as long as the run, and names that folder in the
environment (:data:`SHARED_DATA_ENV`) that Flower's processes inherit; each process then maps
the files (copy-on-write) instead of building its own, so the operating system keeps one copy
in its page cache for all of them.

A folder holds splits under a key computed from what they are built from (sources, sizes,
statistics, seed), so a process only maps splits of its own config, and falls back to building
them when the folder has none (a deployment, or a config the launcher did not share).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

import numpy as np

from fedkd.data.datasets import ArrayDataset, DatasetSplits, ImageSet

#: The environment variable naming the folder of shared splits (set by the launcher).
SHARED_DATA_ENV: Final = "FEDKD_SHARED_DATA"

_META = "meta.json"


def data_key(*parts: object) -> str:
    """A short stable name for the splits built from ``parts`` (frozen config nodes and plain
    values, whose ``repr`` is the same in every process)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


def share_splits(splits: DatasetSplits, key: str, root: Path) -> Path:
    """Write ``splits`` under ``root/key`` (atomically: a half-written folder is never read)
    and return that folder."""
    folder = root / key
    if (folder / _META).is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    arrays = {
        "private_x": splits.private.x,
        "private_y": splits.private.y,
        "public_x": splits.public.x,
        "public_y": splits.public.y,
        "test_x": splits.test.x,
        "test_y": splits.test.y,
    }
    for name, array in arrays.items():
        if array is not None:
            np.save(staging / f"{name}.npy", np.ascontiguousarray(array))
    meta = {
        "num_classes": splits.num_classes,
        "input_shape": list(splits.input_shape),
        "name": splits.name,
        "mean": list(splits.mean),
        "std": list(splits.std),
    }
    (staging / _META).write_text(json.dumps(meta))
    try:
        staging.rename(folder)
    except OSError:  # another process shared the same splits first
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def open_shared(key: str, root: str | Path | None = None) -> DatasetSplits | None:
    """The splits shared under ``key`` in ``root`` (default: the folder the environment
    names), mapped copy-on-write; ``None`` when there are none."""
    where = root if root is not None else os.environ.get(SHARED_DATA_ENV)
    if not where:
        return None
    folder = Path(where) / key
    if not (folder / _META).is_file():
        return None
    meta = json.loads((folder / _META).read_text())

    def load(name: str) -> Any:
        # "c": pages are shared until a process writes to its copy, which it keeps to itself
        return np.load(folder / f"{name}.npy", mmap_mode="c").view(np.ndarray)

    public_y = load("public_y") if (folder / "public_y.npy").is_file() else None
    return DatasetSplits(
        private=ArrayDataset(load("private_x"), load("private_y")),
        public=ImageSet(load("public_x"), public_y),
        test=ArrayDataset(load("test_x"), load("test_y")),
        num_classes=int(meta["num_classes"]),
        input_shape=tuple(meta["input_shape"]),
        name=str(meta["name"]),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
    )
