"""Partitioners that split the private pool across clients, in pure numpy.

Every partitioner returns one sorted int64 index array per client (indices into the private
pool), the arrays are pairwise disjoint, and the result depends only on the arguments and
``seed``.

References
----------
H. Brendan McMahan, Eider Moore, Daniel Ramage, Seth Hampson, Blaise Agüera y Arcas,
"Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS 2017.
https://arxiv.org/abs/1602.05629 (label-sorted shards)

Tzu-Ming Harry Hsu, Hang Qi, Matthew Brown, "Measuring the Effects of Non-Identical Data
Distribution for Federated Visual Classification", 2019. https://arxiv.org/abs/1909.06335
(per-class Dirichlet split)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "IID",
    "PARTITIONERS",
    "Dirichlet",
    "Partitioner",
    "Shards",
    "make_partitions",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
]

logger = logging.getLogger(__name__)


def partition_iid(num_samples: int, num_partitions: int, seed: int) -> list[npt.NDArray[np.int64]]:
    """Split ``range(num_samples)`` uniformly at random into near-equal partitions.

    Parameters
    ----------
    num_samples : int
        Size of the pool.
    num_partitions : int
        Number of clients, ``1 <= num_partitions <= num_samples``.
    seed : int
        Seed for :func:`numpy.random.default_rng`.

    Returns
    -------
    list[numpy.ndarray]
        ``num_partitions`` sorted int64 index arrays covering every sample exactly once; sizes
        differ by at most one.

    Raises
    ------
    ValueError
        If ``num_samples`` or ``num_partitions`` is out of range.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    _check_num_partitions(num_partitions, num_samples)
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, num_partitions)]


def partition_dirichlet(
    labels: npt.NDArray[np.integer],
    num_partitions: int,
    alpha: float,
    seed: int,
    min_partition_size: int = 10,
    max_retries: int = 100,
) -> list[npt.NDArray[np.int64]]:
    """Split by label with per-class proportions drawn from a symmetric Dirichlet(alpha).

    For each class, proportions ``p ~ Dir(alpha * 1_K)`` over the ``K = num_partitions``
    clients are drawn and that class's shuffled indices are cut accordingly. Small ``alpha``
    (e.g. 0.05) gives each client only one or two dominant classes; large ``alpha`` (e.g. 100)
    approaches an IID split. The whole draw is repeated until every partition holds at least
    ``min_partition_size`` samples.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer labels of the pool, shape ``(N,)``.
    num_partitions : int
        Number of clients, ``1 <= num_partitions <= N``.
    alpha : float
        Dirichlet concentration, ``> 0``.
    seed : int
        Seed for :func:`numpy.random.default_rng`; retries continue the same stream, so the
        result is still a function of the seed.
    min_partition_size : int
        Smallest acceptable partition; ``num_partitions * min_partition_size <= N``.
    max_retries : int
        How many draws to try before giving up, ``>= 1``.

    Returns
    -------
    list[numpy.ndarray]
        ``num_partitions`` sorted int64 index arrays covering every sample exactly once.

    Raises
    ------
    ValueError
        If an argument is out of range, or no draw within ``max_retries`` gives every
        partition ``min_partition_size`` samples.
    """
    labels = _check_labels(labels)
    num_samples = len(labels)
    _check_num_partitions(num_partitions, num_samples)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
    if min_partition_size < 0:
        raise ValueError(f"min_partition_size must be >= 0, got {min_partition_size}")
    if num_partitions * min_partition_size > num_samples:
        raise ValueError(
            f"min_partition_size={min_partition_size} is impossible: {num_partitions} partitions "
            f"of at least {min_partition_size} need {num_partitions * min_partition_size} "
            f"samples, but there are only {num_samples}"
        )
    if max_retries < 1:
        raise ValueError(f"max_retries must be >= 1, got {max_retries}")

    rng = np.random.default_rng(seed)
    class_indices = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    concentration = np.full(num_partitions, alpha)
    smallest = 0
    for attempt in range(1, max_retries + 1):
        buckets: list[list[npt.NDArray[np.intp]]] = [[] for _ in range(num_partitions)]
        for indices in class_indices:
            shuffled = rng.permutation(indices)
            proportions = rng.dirichlet(concentration)
            # cumsum * n rounded down gives cut points whose pieces sum to exactly n.
            cuts = (np.cumsum(proportions)[:-1] * len(shuffled)).astype(np.int64)
            for bucket, piece in zip(buckets, np.split(shuffled, cuts), strict=True):
                bucket.append(piece)
        partitions = [np.sort(np.concatenate(bucket)).astype(np.int64) for bucket in buckets]
        smallest = min(len(part) for part in partitions)
        if smallest >= min_partition_size:
            logger.debug("Dirichlet(alpha=%g) partition accepted after %d draw(s)", alpha, attempt)
            return partitions
    raise ValueError(
        f"could not give every one of {num_partitions} partitions at least "
        f"{min_partition_size} samples with Dirichlet(alpha={alpha}) in {max_retries} draws "
        f"(smallest in the last draw: {smallest}); raise alpha, lower the number of "
        "partitions, or lower min_partition_size"
    )


def partition_shards(
    labels: npt.NDArray[np.integer],
    num_partitions: int,
    shards_per_partition: int,
    seed: int,
) -> list[npt.NDArray[np.int64]]:
    """Sort by label, cut into equal shards and deal each client ``shards_per_partition``.

    This is the pathological non-IID split of McMahan et al. (2017): with label-pure shards a
    client sees at most ``shards_per_partition`` classes. Samples of the same class are
    shuffled before sorting so that which samples form a shard depends on ``seed``.

    Equal shards cannot always cover the pool: the ``N mod (num_partitions *
    shards_per_partition)`` samples left over (fewer than one per shard) are dropped, chosen
    uniformly at random, so the partitions may not cover every sample.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer labels of the pool, shape ``(N,)``.
    num_partitions : int
        Number of clients, ``>= 1``.
    shards_per_partition : int
        Shards per client, ``>= 1``; ``num_partitions * shards_per_partition <= N``.
    seed : int
        Seed for :func:`numpy.random.default_rng`.

    Returns
    -------
    list[numpy.ndarray]
        ``num_partitions`` sorted, disjoint int64 index arrays of equal size.

    Raises
    ------
    ValueError
        If an argument is out of range.
    """
    labels = _check_labels(labels)
    num_samples = len(labels)
    _check_num_partitions(num_partitions, num_samples)
    if shards_per_partition < 1:
        raise ValueError(f"shards_per_partition must be >= 1, got {shards_per_partition}")
    num_shards = num_partitions * shards_per_partition
    if num_shards > num_samples:
        raise ValueError(
            f"shards_per_partition={shards_per_partition} is too large: {num_partitions} "
            f"partitions x {shards_per_partition} shards = {num_shards} shards exceed the "
            f"{num_samples} samples"
        )
    shard_size = num_samples // num_shards
    rng = np.random.default_rng(seed)
    # Dropping a random subset (rather than the tail of the sorted order) keeps the
    # remainder from always coming out of the highest class.
    kept = rng.permutation(num_samples)[: num_shards * shard_size]
    by_label = kept[np.argsort(labels[kept], kind="stable")]
    shards = by_label.reshape(num_shards, shard_size)
    assignment = rng.permutation(num_shards).reshape(num_partitions, shards_per_partition)
    return [np.sort(shards[shard_ids].ravel()).astype(np.int64) for shard_ids in assignment]


@dataclass(frozen=True)
class IID:
    """Uniformly random, near-equal partitions (the labels' values are not looked at)."""

    def __call__(
        self, labels: npt.NDArray[np.integer], num_partitions: int, seed: int
    ) -> list[npt.NDArray[np.int64]]:
        return partition_iid(len(_check_labels(labels)), num_partitions, seed)


@dataclass(frozen=True)
class Dirichlet:
    """Label skew: each class spread over clients with proportions ~ Dirichlet(alpha)."""

    alpha: float = 0.5  # small => skewed label distributions
    min_size: int = 10  # redraw until every client holds at least this many samples

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")

    def __call__(
        self, labels: npt.NDArray[np.integer], num_partitions: int, seed: int
    ) -> list[npt.NDArray[np.int64]]:
        return partition_dirichlet(
            labels, num_partitions, self.alpha, seed, min_partition_size=self.min_size
        )


@dataclass(frozen=True)
class Shards:
    """Pathological non-IID: sort by label, deal ``shards_per_client`` shards to each client."""

    shards_per_client: int = 2

    def __post_init__(self) -> None:
        if self.shards_per_client < 1:
            raise ValueError(f"shards_per_client must be >= 1, got {self.shards_per_client}")

    def __call__(
        self, labels: npt.NDArray[np.integer], num_partitions: int, seed: int
    ) -> list[npt.NDArray[np.int64]]:
        return partition_shards(labels, num_partitions, self.shards_per_client, seed)


class Partitioner(Protocol):
    """Splits a labelled pool: ``(labels (N,), num_partitions, seed) -> one index array each``."""

    def __call__(
        self, labels: npt.NDArray[np.integer], num_partitions: int, seed: int
    ) -> list[npt.NDArray[np.int64]]: ...


@dataclass(frozen=True, eq=False)
class FlowerDatasetsPartitioner:
    """Flower Datasets' partitioners (``flwr_datasets.partitioner``: Dirichlet, Pathological,
    InnerDirichlet, Shard, Linear, ...) over fedkd's pool: the pool's labels become a Hugging
    Face dataset with a ``label`` column (set ``partition_by: label`` where asked) and an index
    column, and each partition's indices come back. Needs ``pip install 'fedkd[flwr-datasets]'``.
    """

    partitioner: Any  # a flwr_datasets.partitioner.Partitioner, built with num_partitions

    def __call__(
        self, labels: npt.NDArray[np.integer], num_partitions: int, seed: int
    ) -> list[npt.NDArray[np.int64]]:
        from datasets import Dataset

        del seed  # the partitioner was built with it, where it takes one
        self.partitioner.dataset = Dataset.from_dict(
            {"label": np.asarray(labels).tolist(), _INDEX: np.arange(len(labels)).tolist()}
        )
        return [
            np.asarray(self.partitioner.load_partition(i)[_INDEX], dtype=np.int64)
            for i in range(num_partitions)
        ]


_INDEX: Final = "fedkd_index"

#: Built-in partitioners by the short name a config uses (``partition=dirichlet``); anything else
#: is an import path (``_target_``), e.g. a ``flwr_datasets.partitioner`` class.
PARTITIONERS: Final[dict[str, type[Partitioner]]] = {
    "iid": IID,
    "dirichlet": Dirichlet,
    "shards": Shards,
}


def make_partitions(
    partitioner: Partitioner, labels: npt.NDArray[np.integer], num_partitions: int, seed: int
) -> list[npt.NDArray[np.int64]]:
    """Partition a labelled pool with ``partitioner`` and check what it returned: one sorted
    int64 index array per client, pairwise disjoint, all within the pool.

    Raises
    ------
    ValueError
        If an argument is out of range, or the partitioner returned something else.
    """
    labels = _check_labels(labels)
    partitions = [
        np.sort(np.asarray(p, dtype=np.int64)) for p in partitioner(labels, num_partitions, seed)
    ]
    if len(partitions) != num_partitions:
        raise ValueError(
            f"{partitioner!r} returned {len(partitions)} partitions, not {num_partitions}"
        )
    flat = np.concatenate(partitions) if partitions else np.zeros(0, np.int64)
    if len(flat) and (
        flat.min() < 0 or flat.max() >= len(labels) or len(np.unique(flat)) != len(flat)
    ):
        raise ValueError(f"{partitioner!r} returned overlapping or out-of-range indices")
    logger.info(
        "Partitioned %d samples with %r into %d clients (sizes %d..%d)",
        len(labels),
        partitioner,
        num_partitions,
        min(len(part) for part in partitions),
        max(len(part) for part in partitions),
    )
    return partitions


def _check_labels(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.integer]:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 1-D integer array, got dtype {labels.dtype} and shape {labels.shape}"
        )
    if len(labels) == 0:
        raise ValueError("labels must not be empty")
    return labels


def _check_num_partitions(num_partitions: int, num_samples: int) -> None:
    if not 1 <= num_partitions <= num_samples:
        raise ValueError(
            f"num_partitions must be between 1 and the number of samples ({num_samples}), "
            f"got {num_partitions}"
        )
