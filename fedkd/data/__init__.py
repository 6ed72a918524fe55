"""Data: sources (built-in and the user's), the private / public / test splits, partitioners."""

from fedkd.data.datasets import (
    DATA_DIR_ENV,
    DEFAULT_FMNIST_DIR,
    FMNIST_MEAN,
    FMNIST_STD,
    ArrayDataset,
    DatasetNotFoundError,
    DatasetSplits,
    ImageSet,
    find_fmnist_dir,
    load_digits_arrays,
    load_fmnist,
    load_npz,
    read_idx,
)
from fedkd.data.partition import (
    PARTITIONERS,
    make_partitions,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)
from fedkd.data.sources import SOURCES, DataSource, SourceData
from fedkd.data.splits import ExternalSplit, SplitSizes, build_splits

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_FMNIST_DIR",
    "FMNIST_MEAN",
    "FMNIST_STD",
    "PARTITIONERS",
    "SOURCES",
    "ArrayDataset",
    "DataSource",
    "DatasetNotFoundError",
    "DatasetSplits",
    "ExternalSplit",
    "ImageSet",
    "SourceData",
    "SplitSizes",
    "build_splits",
    "find_fmnist_dir",
    "load_digits_arrays",
    "load_fmnist",
    "load_npz",
    "make_partitions",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
    "read_idx",
]
