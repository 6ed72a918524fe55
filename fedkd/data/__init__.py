"""Datasets (offline loaders, the private / public / test splits) and client partitioners."""

from fedkd.data.datasets import (
    DATA_DIR_ENV,
    DATASET_NAMES,
    DEFAULT_FMNIST_DIR,
    FMNIST_MEAN,
    FMNIST_STD,
    ArrayDataset,
    DatasetNotFoundError,
    DatasetSplits,
    find_fmnist_dir,
    load_digits_arrays,
    load_fmnist,
    load_npz,
    load_splits,
    read_idx,
)
from fedkd.data.partition import (
    PARTITION_NAMES,
    make_partitions,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)

__all__ = [
    "DATASET_NAMES",
    "DATA_DIR_ENV",
    "DEFAULT_FMNIST_DIR",
    "FMNIST_MEAN",
    "FMNIST_STD",
    "PARTITION_NAMES",
    "ArrayDataset",
    "DatasetNotFoundError",
    "DatasetSplits",
    "find_fmnist_dir",
    "load_digits_arrays",
    "load_fmnist",
    "load_npz",
    "load_splits",
    "make_partitions",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
    "read_idx",
]
