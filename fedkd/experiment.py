"""Glue from the typed config to data and models, shared by the ServerApp and the ClientApps.

Loading and partitioning are memoised per process: in simulation one Ray actor serves many
virtual clients and rounds, and re-reading Fashion-MNIST for each message would dominate.
"""

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from fedkd.config import DatasetConfig, ExperimentConfig, PartitionConfig
from fedkd.data import ArrayDataset, DatasetSplits, load_splits, make_partitions
from fedkd.models import build_model
from fedkd.training import derive_seed


@lru_cache(maxsize=2)
def load_data(dataset: DatasetConfig, seed: int) -> DatasetSplits:
    """The private pool / public set / test set of ``dataset``, split with ``seed``."""
    return load_splits(
        dataset.name,
        data_dir=dataset.data_dir,
        num_public=dataset.num_public,
        num_private=dataset.num_private,
        num_test=dataset.num_test,
        seed=seed,
    )


@lru_cache(maxsize=2)
def _partitions(
    dataset: DatasetConfig, partition: PartitionConfig, num_partitions: int, seed: int
) -> tuple[np.ndarray, ...]:
    labels = load_data(dataset, seed).private.y
    return tuple(
        make_partitions(
            partition.name,
            labels,
            num_partitions,
            seed=seed,
            alpha=partition.alpha,
            shards_per_partition=partition.shards_per_client,
            min_partition_size=partition.min_size,
        )
    )


def client_private_data(cfg: ExperimentConfig, client_id: int, num_partitions: int) -> ArrayDataset:
    """Client ``client_id``'s share of the private pool (a demo of data that never leaves it)."""
    if not 0 <= client_id < num_partitions:
        raise ValueError(f"client id {client_id} is not in [0, {num_partitions})")
    parts = _partitions(cfg.dataset, cfg.partition, num_partitions, cfg.seed)
    return load_data(cfg.dataset, cfg.seed).private.subset(parts[client_id])


def sample_client_ids(cfg: ExperimentConfig, server_round: int, client_ids: list[int]) -> list[int]:
    """The clients taking part in ``server_round``: a seeded sample by client id (node ids are
    random in Flower), so the same seed picks the same clients in every run and harness."""
    known = sorted(client_ids)
    num = cfg.clients.num_sampled(len(known))
    rng = np.random.default_rng([cfg.seed, server_round, 0])
    return [known[i] for i in np.sort(rng.choice(len(known), size=num, replace=False))]


def client_architecture(cfg: ExperimentConfig, client_id: int) -> str:
    """The architecture client ``client_id`` trains (weight averaging: the global one)."""
    if cfg.algorithm.shares_weights:
        return cfg.model.architecture
    return cfg.clients.architecture_of(client_id)


def build_client_model(cfg: ExperimentConfig, client_id: int, splits: DatasetSplits) -> nn.Module:
    """A freshly initialised student of the architecture configured for ``client_id``."""
    torch.manual_seed(derive_seed(cfg.seed, client_id, 7))
    return build_model(client_architecture(cfg, client_id), splits.input_shape, splits.num_classes)


def build_global_model(cfg: ExperimentConfig, splits: DatasetSplits) -> nn.Module:
    torch.manual_seed(derive_seed(cfg.seed, 2**31, 7))
    return build_model(cfg.model.architecture, splits.input_shape, splits.num_classes)
