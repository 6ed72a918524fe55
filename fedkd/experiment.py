"""Glue from the typed config to data and models, shared by the ServerApp and the ClientApps.

Loading and partitioning are memoised per process: in simulation one Ray actor serves many
virtual clients and rounds, and re-reading Fashion-MNIST for each message would dominate.
"""

import inspect
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedkd.algorithms import Distillation
from fedkd.config import (
    Component,
    ConfigError,
    DatasetConfig,
    ExperimentConfig,
    PartitionConfig,
    PublicConfig,
    TestConfig,
)
from fedkd.data import (
    ArrayDataset,
    DatasetSplits,
    ExternalSplit,
    SourceData,
    SplitSizes,
    build_splits,
    make_partitions,
)
from fedkd.data.partition import FlowerDatasetsPartitioner, Partitioner
from fedkd.data.shared import data_key, open_shared, share_splits
from fedkd.schema import import_object
from fedkd.training import derive_seed


def load_data(cfg: ExperimentConfig, private: bool = True) -> DatasetSplits:
    """The private pool / public set / test set of ``cfg``, split and normalised with its seed.

    ``private=False`` (a deployment server) skips the private data's source when the public and
    test sets both have sources of their own; its private pool is then empty.
    """
    return _load_data(*_data_args(cfg, private))


def share_data(cfg: ExperimentConfig, root: Path) -> Path:
    """Write this process's splits of ``cfg`` (loading them if need be) where every process
    that names ``root`` in its environment maps them instead of loading its own copy (see
    :mod:`fedkd.data.shared`); returns their folder."""
    args = _data_args(cfg, private=True)
    return share_splits(_load_data(*args), data_key(*args), root)


def _data_args(cfg: ExperimentConfig, private: bool) -> tuple[Any, ...]:
    need_private = private or cfg.public is None or cfg.test is None
    dataset = cfg.dataset if need_private else None
    return dataset, cfg.public, cfg.test, cfg.normalize.given, cfg.seed


@lru_cache(maxsize=2)
def _load_data(
    dataset: DatasetConfig | None,
    public: PublicConfig | None,
    test: TestConfig | None,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None,
    seed: int,
) -> DatasetSplits:
    shared = open_shared(data_key(dataset, public, test, stats, seed))
    if shared is not None:
        return shared

    def source(node: DatasetConfig | PublicConfig | TestConfig) -> SourceData:
        data: SourceData = node.source.instantiate().load()
        return data

    parts = [f"{dataset.source.kind} private" if dataset else ""]
    parts += [f"{public.source.kind} public" if public else ""]
    parts += [f"{test.source.kind} test" if test else ""]
    return build_splits(
        None if dataset is None else source(dataset),
        SplitSizes(0, None, None)
        if dataset is None
        else SplitSizes(dataset.num_public, dataset.num_private, dataset.num_test),
        public=None
        if public is None
        else ExternalSplit(source(public), public.num_samples, public.resize, public.task_labels),
        test=None if test is None else ExternalSplit(source(test), test.num_samples, test.resize),
        mean=None if stats is None else stats[0],
        std=None if stats is None else stats[1],
        seed=seed,
        name=" + ".join(p for p in parts if p) or "?",
    )


def build_partitioner(spec: Component, num_partitions: int, seed: int) -> Partitioner:
    """A partitioner from its config: a built-in (or any class that takes no run context) as
    is; a class that takes ``num_partitions`` (a ``flwr_datasets.partitioner`` class) built with
    it, and with ``seed`` if it takes one, behind an adapter over the pool's labels."""
    params = inspect.signature(spec.cls).parameters
    if "num_partitions" not in params:
        partitioner: Partitioner = spec.instantiate()
        return partitioner
    extra: dict[str, Any] = {"num_partitions": num_partitions}
    if "seed" in params:
        extra["seed"] = seed
    return FlowerDatasetsPartitioner(spec.instantiate(**extra))


@lru_cache(maxsize=2)
def _partitions(
    data: tuple[Any, ...], partition: PartitionConfig, num_partitions: int, seed: int
) -> tuple[np.ndarray, ...]:
    labels = _load_data(*data).private.y
    partitioner = build_partitioner(partition.partitioner, num_partitions, seed)
    return tuple(make_partitions(partitioner, labels, num_partitions, seed))


def client_private_data(cfg: ExperimentConfig, client_id: int, num_partitions: int) -> ArrayDataset:
    """Client ``client_id``'s share of the private pool (a demo of data that never leaves it)."""
    if not 0 <= client_id < num_partitions:
        raise ValueError(f"client id {client_id} is not in [0, {num_partitions})")
    data = _data_args(cfg, private=True)
    parts = _partitions(data, cfg.partition, num_partitions, cfg.seed)
    return load_data(cfg).private.subset(parts[client_id])


def sample_client_ids(cfg: ExperimentConfig, server_round: int, client_ids: list[int]) -> list[int]:
    """The clients taking part in ``server_round``: a seeded sample by client id (node ids are
    random in Flower), so the same seed picks the same clients in every run and harness."""
    known = sorted(client_ids)
    num = cfg.clients.num_sampled(len(known))
    rng = np.random.default_rng([cfg.seed, server_round, 0])
    return [known[i] for i in np.sort(rng.choice(len(known), size=num, replace=False))]


def client_architecture(cfg: ExperimentConfig, client_id: int) -> Component:
    """The architecture client ``client_id`` trains (weight averaging: the global one)."""
    if cfg.algorithm.shares_weights:
        return cfg.model.architecture
    return cfg.clients.architecture_of(client_id)


def build_model(spec: Component, splits: DatasetSplits) -> nn.Module:
    """``Class(input_shape=(C, H, W), num_classes=K, **kwargs)`` of a model component."""
    model = spec.instantiate(input_shape=splits.input_shape, num_classes=splits.num_classes)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec.kind} built a {type(model).__name__}, not a torch.nn.Module")
    return model


def build_client_model(cfg: ExperimentConfig, client_id: int, splits: DatasetSplits) -> nn.Module:
    """A freshly initialised student of the architecture configured for ``client_id`` (with
    ``pretrain.epochs``, its self-supervised start)."""
    torch.manual_seed(derive_seed(cfg.seed, client_id, 7))
    spec = client_architecture(cfg, client_id)
    return _started(build_model(spec, splits), spec, cfg, splits)


def build_global_model(cfg: ExperimentConfig, splits: DatasetSplits) -> nn.Module:
    torch.manual_seed(derive_seed(cfg.seed, 2**31, 7))
    spec = cfg.model.architecture
    return _started(build_model(spec, splits), spec, cfg, splits)


def _started(
    model: nn.Module, spec: Component, cfg: ExperimentConfig, splits: DatasetSplits
) -> nn.Module:
    """``model`` with the self-supervised start on the public images (``pretrain.*``) loaded."""
    if cfg.pretrain.epochs == 0:
        return model
    from fedkd.pretrain import pretrained_state

    state = pretrained_state(
        lambda: build_model(spec, splits),
        repr((spec.target, spec.args, splits.input_shape)),
        splits.public.x,
        splits.num_classes,
        cfg.pretrain.epochs,
        cfg.pretrain.seed,
    )
    model.load_state_dict(state)
    return model


def model_keys(cfg: ExperimentConfig) -> list[tuple[str, Component]]:
    """Every model the config names, with its config key (for checks that name the key)."""
    keys = [("model.architecture", cfg.model.architecture)]
    if not cfg.algorithm.shares_weights:
        keys += [
            (f"clients.architectures[{i}]", a) for i, a in enumerate(cfg.clients.architectures)
        ]
        keys += [
            (f"clients.architecture_map.{k}", a) for k, a in cfg.clients.architecture_map.items()
        ]
    return keys


def preflight(cfg: ExperimentConfig, private: bool = True) -> DatasetSplits:
    """Load the data and build every model once, before Flower starts: missing or malformed
    data, a model that cannot be built, one whose output is not (batch, num_classes), or (with
    ``dp.*``) a client model DP-SGD cannot train, fails here with a :class:`ConfigError`
    naming the key. ``private=False``: as a deployment server
    loads it (the private data lives on the SuperNodes)."""
    try:
        splits = load_data(cfg, private=private)
    except (OSError, ValueError) as err:
        raise ConfigError(f"data ({_data_keys(cfg)}): {err}") from err
    probe = torch.from_numpy(splits.test.x[:2])
    for key, spec in model_keys(cfg):
        try:
            model = build_model(spec, splits)
            model.eval()
            with torch.no_grad():
                out = model(probe)
        except Exception as err:
            raise ConfigError(
                f"{key}: {spec.kind} failed on input {tuple(probe.shape)}: {err}"
            ) from err
        want = (len(probe), splits.num_classes)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                f"{key}: {spec.kind} must map (batch, C, H, W) to logits (batch, num_classes) = "
                f"{want}, got {got}"
            )
        if cfg.dp.enabled and key != "model.architecture":  # the global model sees no records
            from fedkd.privacy import unsupported_layers  # Opacus: only DP runs import it

            problems = unsupported_layers(model)
            if problems:
                raise ConfigError(
                    f"{key}: {spec.kind} cannot be trained with DP-SGD (dp.*): {problems[0]} "
                    "Use a model without such layers (GroupNorm instead of BatchNorm)."
                )
    if private:
        _check_partitions(cfg)
    _check_codec(cfg, splits.num_classes)
    if cfg.pretrain.epochs:  # paid here, once: every process of the run then reads the cache
        for spec in {(s.target, s.args): s for _, s in model_keys(cfg)}.values():
            _started(build_model(spec, splits), spec, cfg, splits)
    return splits


def _check_partitions(cfg: ExperimentConfig) -> None:
    """The private pool splits into ``clients.num_clients`` partitions, none of them empty (a
    split that cannot give every client a sample fails here, not in a ClientApp mid-run)."""
    data = _data_args(cfg, private=True)
    num = cfg.clients.num_clients
    try:
        parts = _partitions(data, cfg.partition, num, cfg.seed)
    except ValueError as err:
        raise ConfigError(f"partition (with clients.num_clients={num}): {err}") from err
    empty = [i for i, part in enumerate(parts) if len(part) == 0]
    if empty:
        raise ConfigError(
            f"partition (with clients.num_clients={num}): {len(empty)} clients get no private "
            f"example (client {empty[0]} first); use fewer clients or a less skewed split"
        )


def _check_codec(cfg: ExperimentConfig, num_classes: int) -> None:
    """The soft-label codec can encode what the algorithm's clients share, for these classes."""
    algorithm = cfg.algorithm
    if not isinstance(algorithm, Distillation) or not algorithm.client:
        return
    kind = getattr(import_object(algorithm.client, "algorithm"), "soft_label_kind", None)
    codec = algorithm.soft_label_codec
    if kind is not None:
        codec.check_kind(kind, "algorithm.codec")
    try:
        codec.layout(1, num_classes, kind or "probs")
    except ValueError as err:
        raise ConfigError(f"algorithm.codec: {err}") from err


def forget_data() -> None:
    """Drop this process's cached data (a launcher need not hold it while Flower runs)."""
    _partitions.cache_clear()
    _load_data.cache_clear()


def _data_keys(cfg: ExperimentConfig) -> str:
    keys = ["dataset"] + (["public"] if cfg.public else []) + (["test"] if cfg.test else [])
    return ", ".join(keys)


def planned_rounds(cfg: ExperimentConfig, client_id: int) -> list[int]:
    """The rounds ``client_id`` is sampled in when all ``clients.num_clients`` clients take part
    throughout (what a client can know in advance: a differential-privacy budget is spread over
    them)."""
    everyone = list(range(cfg.clients.num_clients))
    return [
        r for r in range(1, cfg.num_rounds + 1) if client_id in sample_client_ids(cfg, r, everyone)
    ]
