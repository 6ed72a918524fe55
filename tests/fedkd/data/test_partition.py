"""Tests for fedkd.data.partition: coverage, disjointness, determinism and skew."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from fedkd.data.partition import (
    IID,
    PARTITIONERS,
    Dirichlet,
    Partitioner,
    Shards,
    make_partitions,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)

NUM_CLASSES = 10


def _labels(num_samples: int = 1000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, NUM_CLASSES, num_samples)


def _assert_valid(partitions: list[np.ndarray], num_partitions: int) -> None:
    assert len(partitions) == num_partitions
    for part in partitions:
        assert part.dtype == np.int64
        assert part.ndim == 1
        assert len(part) > 0
        assert np.all(np.diff(part) > 0)  # sorted, and no duplicates within a client
    merged = np.concatenate(partitions)
    assert len(np.unique(merged)) == len(merged)  # disjoint across clients


def _assert_covers(partitions: list[np.ndarray], num_samples: int) -> None:
    np.testing.assert_array_equal(np.sort(np.concatenate(partitions)), np.arange(num_samples))


def _mean_max_class_fraction(labels: np.ndarray, partitions: list[np.ndarray]) -> float:
    fractions = [
        np.bincount(labels[part], minlength=NUM_CLASSES).max() / len(part) for part in partitions
    ]
    return float(np.mean(fractions))


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for part_a, part_b in zip(a, b, strict=True):
        np.testing.assert_array_equal(part_a, part_b)


def _differs(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# --- iid --------------------------------------------------------------------------------------


def test_iid_covers_and_balances() -> None:
    partitions = partition_iid(103, 10, seed=0)
    _assert_valid(partitions, 10)
    _assert_covers(partitions, 103)
    assert sorted(len(part) for part in partitions) == [10] * 7 + [11] * 3


def test_iid_one_sample_per_partition() -> None:
    partitions = partition_iid(5, 5, seed=1)
    _assert_valid(partitions, 5)
    _assert_covers(partitions, 5)


def test_iid_deterministic_per_seed() -> None:
    _assert_same(partition_iid(500, 7, seed=3), partition_iid(500, 7, seed=3))
    assert _differs(partition_iid(500, 7, seed=3), partition_iid(500, 7, seed=4))


@pytest.mark.parametrize(
    ("num_samples", "num_partitions", "match"),
    [(0, 1, "num_samples"), (10, 0, "num_partitions"), (10, 11, "num_partitions")],
)
def test_iid_rejects_bad_args(num_samples: int, num_partitions: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        partition_iid(num_samples, num_partitions, seed=0)


# --- dirichlet --------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.1, 0.5, 100.0])
def test_dirichlet_covers_with_min_size(alpha: float) -> None:
    labels = _labels()
    partitions = partition_dirichlet(labels, 8, alpha, seed=0, min_partition_size=10)
    _assert_valid(partitions, 8)
    _assert_covers(partitions, len(labels))
    assert min(len(part) for part in partitions) >= 10


def test_dirichlet_deterministic_per_seed() -> None:
    labels = _labels()
    _assert_same(
        partition_dirichlet(labels, 5, 0.5, seed=11), partition_dirichlet(labels, 5, 0.5, seed=11)
    )
    assert _differs(
        partition_dirichlet(labels, 5, 0.5, seed=11), partition_dirichlet(labels, 5, 0.5, seed=12)
    )


def test_dirichlet_small_alpha_is_more_skewed() -> None:
    labels = _labels(2000)
    skewed = partition_dirichlet(labels, 5, 0.05, seed=0, min_partition_size=1)
    near_iid = partition_dirichlet(labels, 5, 100.0, seed=0, min_partition_size=1)
    skewed_score = _mean_max_class_fraction(labels, skewed)
    near_iid_score = _mean_max_class_fraction(labels, near_iid)
    # With alpha=100 every client sees roughly 1/10 of each class; with alpha=0.05 each
    # client is dominated by a few classes.
    assert near_iid_score < 0.2
    assert skewed_score > 0.4
    assert skewed_score > 2 * near_iid_score


def test_dirichlet_gives_up_with_helpful_message() -> None:
    # Two classes and tiny alpha put each class on ~one client, so 10 clients cannot all get
    # 10 samples.
    labels = np.repeat([0, 1], 100)
    with pytest.raises(ValueError, match="raise alpha, lower the number of partitions"):
        partition_dirichlet(labels, 10, 0.001, seed=0, min_partition_size=10, max_retries=5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_partitions": 0}, "num_partitions"),
        ({"num_partitions": 101}, "num_partitions"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"min_partition_size": -1}, "min_partition_size"),
        ({"min_partition_size": 30}, "min_partition_size=30 is impossible"),
        ({"max_retries": 0}, "max_retries"),
    ],
)
def test_dirichlet_rejects_bad_args(kwargs: dict[str, float], match: str) -> None:
    arguments: dict[str, float] = {
        "num_partitions": 4,
        "alpha": 0.5,
        "min_partition_size": 1,
        "max_retries": 10,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        partition_dirichlet(_labels(100), seed=0, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "labels", [np.array([]), np.zeros((4, 2), dtype=np.int64), np.array([0.0, 1.0, 1.0])]
)
def test_dirichlet_rejects_bad_labels(labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="labels"):
        partition_dirichlet(labels, 1, 0.5, seed=0, min_partition_size=0)


# --- shards -----------------------------------------------------------------------------------


def test_shards_label_pure_gives_at_most_k_classes() -> None:
    # 10 classes x 20 samples, 5 clients x 2 shards of 20: every shard is a single class.
    labels = np.repeat(np.arange(NUM_CLASSES), 20)
    np.random.default_rng(0).shuffle(labels)
    partitions = partition_shards(labels, 5, 2, seed=0)
    _assert_valid(partitions, 5)
    _assert_covers(partitions, len(labels))
    for part in partitions:
        assert len(part) == 40
        assert len(np.unique(labels[part])) <= 2


def test_shards_drops_only_the_remainder() -> None:
    labels = _labels(1003)
    partitions = partition_shards(labels, 10, 3, seed=0)
    _assert_valid(partitions, 10)
    shard_size = 1003 // 30
    assert all(len(part) == 3 * shard_size for part in partitions)
    assert 1003 - sum(len(part) for part in partitions) == 1003 % 30


def test_shards_deterministic_per_seed() -> None:
    labels = _labels()
    _assert_same(partition_shards(labels, 10, 2, seed=5), partition_shards(labels, 10, 2, seed=5))
    assert _differs(
        partition_shards(labels, 10, 2, seed=5), partition_shards(labels, 10, 2, seed=6)
    )


@pytest.mark.parametrize(
    ("num_partitions", "shards_per_partition", "match"),
    [(0, 2, "num_partitions"), (5, 0, "shards_per_partition"), (30, 4, "shards_per_partition")],
)
def test_shards_rejects_bad_args(
    num_partitions: int, shards_per_partition: int, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        partition_shards(_labels(100), num_partitions, shards_per_partition, seed=0)


# --- make_partitions --------------------------------------------------------------------------


def test_partitioner_names() -> None:
    assert set(PARTITIONERS) == {"iid", "dirichlet", "shards"}


@pytest.mark.parametrize(
    ("partitioner", "direct"),
    [
        (IID(), lambda labels: partition_iid(len(labels), 6, 9)),
        (
            Dirichlet(alpha=0.3, min_size=5),
            lambda labels: partition_dirichlet(labels, 6, 0.3, 9, 5),
        ),
        (Shards(shards_per_client=3), lambda labels: partition_shards(labels, 6, 3, 9)),
    ],
)
def test_make_partitions_dispatches(
    partitioner: Partitioner, direct: Callable[[np.ndarray], list[np.ndarray]]
) -> None:
    labels = _labels()
    partitions = make_partitions(partitioner, labels, 6, seed=9)
    _assert_valid(partitions, 6)
    _assert_same(partitions, direct(labels))


def test_partitioners_validate_their_arguments() -> None:
    with pytest.raises(ValueError, match="alpha"):
        Dirichlet(alpha=0.0)
    with pytest.raises(ValueError, match="shards_per_client"):
        Shards(shards_per_client=0)
    with pytest.raises(ValueError, match="num_partitions"):
        make_partitions(IID(), _labels(10), 11, seed=0)


def test_make_partitions_checks_what_a_partitioner_returns() -> None:
    def overlapping(labels, num_partitions, seed):
        return [np.arange(5)] * num_partitions

    def too_few(labels, num_partitions, seed):
        return [np.arange(len(labels))]

    with pytest.raises(ValueError, match="overlapping"):
        make_partitions(overlapping, _labels(), 3, seed=0)
    with pytest.raises(ValueError, match="returned 1 partitions"):
        make_partitions(too_few, _labels(), 3, seed=0)


def test_flower_datasets_partitioner_by_import_path() -> None:
    """A flwr_datasets partitioner named in config partitions fedkd's pool (optional extra)."""
    from fedkd.experiment import client_private_data
    from tests.conftest import digits_config

    cfg = digits_config("partition=flwr_dirichlet", "partition.alpha=0.3", "clients.num_clients=4")
    assert cfg.partition.name == "flwr_datasets.partitioner.DirichletPartitioner"
    parts = [client_private_data(cfg, i, 4) for i in range(4)]
    assert sum(len(p) for p in parts) == 937  # every private sample, once
    again = client_private_data(cfg, 2, 4)
    np.testing.assert_array_equal(again.y, parts[2].y)  # seeded
    skew = [np.bincount(p.y, minlength=10).max() / len(p) for p in parts]
    assert max(skew) > 0.2  # Dirichlet(0.3) skews labels (iid would give ~0.1)
