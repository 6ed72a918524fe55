"""Typed experiment configuration: frozen dataclass schemas, validation, and Hydra composition.

This is the one place that knows about Hydra. Everything else receives an
:class:`ExperimentConfig` (or one of its typed sections), never a raw ``DictConfig``.

Validation happens before anything starts: an unknown key, a wrong type or an out-of-range value
raises :class:`ConfigError` with the dotted key in the message (``partition.alpha must be > 0``).
"""

import dataclasses
import importlib
import inspect
import json
import shlex
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar, Union, get_args, get_origin, get_type_hints

from fedkd.augment import Augment

# The packaged configs: inside the package when installed from a wheel, beside it in a checkout.
_PACKAGE = Path(__file__).resolve().parent
CONF_DIR: Final = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"
# Hydra warns when the search path's conf/ (a user project's overlay) is absent: that is normal.
_NO_OVERLAY_WARNING: Final = r"provider=hydra\.searchpath in main, path=conf is not available"

ALGORITHMS: Final = ("fedmd", "dsfl", "feddf", "fedavg", "local", "centralized")
IN_PROCESS: Final = ("local", "centralized")  # non-federated baselines: no Flower involved
KD_SCHEDULES: Final = ("sequential", "joint")  # how a client combines digest and revisit
WEIGHT_SHARING: Final = ("fedavg",)  # baselines whose clients all train model.architecture
AGGREGATIONS: Final = ("mean", "weighted_mean", "era")
MODES: Final = ("simulation", "deploy")


T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key is unknown, mistyped or out of range. The message names the key."""


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


def _one_of(value: str, choices: Sequence[str], key: str) -> None:
    _require(value in choices, key, f"must be one of {list(choices)}, got {value!r}")


TARGET_KEY: Final = "_target_"  # Hydra's convention: a pluggable part by import path
NAME_KEY: Final = "name"  # ... or by a built-in short name


def import_object(path: str, key: str) -> Any:
    """The object at import path ``pkg.module.Name``; a failure raises naming ``key``."""
    module, _, attr = path.rpartition(".")
    if not module or not attr:
        raise ConfigError(f"{key}: {path!r} is not an import path (package.module.Name)")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{key}: cannot import {path!r} ({type(err).__name__}: {err})") from err


def _frozen(value: Any) -> Any:
    """A hashable copy of a JSON-like value (lists -> tuples, mappings -> sorted pairs)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thawed(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class Component:
    """A pluggable part (data source, model, ...): a class and the keyword arguments it takes.

    ``kind`` is what the config said: a built-in short name (``npz``, ``cnn``) or an import path
    (``mypkg.nets.TinyNet``); ``args`` are the validated keyword arguments, frozen so that a
    config stays hashable. :meth:`instantiate` is the one way such a part is built.
    """

    kind: str
    target: str  # import path of the class
    args: tuple[tuple[str, Any], ...] = ()

    @property
    def cls(self) -> Any:
        return import_object(self.target, self.kind)

    @property
    def kwargs(self) -> dict[str, Any]:
        return {k: _thawed(v) for k, v in self.args}

    def instantiate(self, **extra: Any) -> Any:
        cls = self.cls
        if dataclasses.is_dataclass(cls):
            return _build(cls, {**self.kwargs, **extra})  # type: ignore[arg-type]
        return cls(**self.kwargs, **extra)

    def node(self, builtins: Mapping[str, Any]) -> dict[str, Any]:
        """The config node this component was built from (for ``config.json``)."""
        head = {NAME_KEY: self.kind} if self.kind in builtins else {TARGET_KEY: self.kind}
        return {**head, **self.kwargs}


def build_component(
    node: Mapping[str, Any],
    key: str,
    builtins: Mapping[str, Any],
    context_args: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> Component:
    """Validate ``{name: <built-in> | _target_: <import path>, **kwargs}`` into a Component.

    The class is imported now (so a typo fails before anything runs, naming ``key``) and its
    keyword arguments are checked against its own schema: a dataclass's typed fields, else the
    signature of ``__init__``. ``context_args`` are the arguments fedkd itself passes when it
    builds the part (e.g. a model's ``input_shape`` and ``num_classes``): the class must take
    them, and the config may not set them; ``optional`` ones are passed only to a class that
    takes them, and may not be set either.
    """
    node = dict(node)
    if (TARGET_KEY in node) == (NAME_KEY in node):
        raise ConfigError(
            f"{key} needs exactly one of '{NAME_KEY}' (built-in: {sorted(builtins)}) or "
            f"'{TARGET_KEY}' (an import path), got keys {sorted(node)}"
        )
    kind = str(node.pop(TARGET_KEY, None) or node.pop(NAME_KEY))
    if TARGET_KEY not in node and kind in builtins:
        cls = builtins[kind]
    elif "." in kind:
        cls = import_object(kind, f"{key}.{TARGET_KEY}")
    else:
        raise ConfigError(
            f"{key}: unknown name {kind!r}; built-in: {sorted(builtins)}, or an import path"
        )
    if not callable(cls):
        raise ConfigError(f"{key}: {kind!r} is not a class")
    reserved = sorted(set(node) & {*context_args, *optional})
    if reserved:
        raise ConfigError(f"{key}.{reserved[0]} is set by fedkd and cannot be configured")
    target = f"{cls.__module__}.{cls.__qualname__}"
    if dataclasses.is_dataclass(cls):
        try:
            instance = _build(cls, node, key + ".")  # type: ignore[arg-type]
        except (TypeError, ValueError) as err:
            if isinstance(err, ConfigError):
                raise
            # "alpha must be > 0" from the class -> "partition.alpha must be > 0"
            field = str(err).split(" ", 1)[0]
            names = {f.name for f in dataclasses.fields(cls)}
            raise ConfigError(f"{key}.{err}" if field in names else f"{key}: {err}") from err
        args = {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}
    else:
        _check_signature(cls, node, key, context_args, optional)
        args = node
    return Component(kind, target, _frozen(args))


def _check_signature(
    cls: Any,
    node: Mapping[str, Any],
    key: str,
    context_args: Sequence[str],
    optional: Sequence[str] = (),
) -> None:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # a builtin without a signature: trust it
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    names = set(params)
    unknown = sorted(set(node) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {key}.{unknown[0]}: {cls.__qualname__} takes {sorted(names)}"
        )
    missing = [c for c in context_args if c not in names]
    if missing:
        raise ConfigError(
            f"{key}: {cls.__qualname__} must take {list(context_args)} keyword arguments "
            f"(fedkd passes them), it lacks {missing}"
        )
    required = [
        n
        for n, p in params.items()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in node
        and n not in context_args
        and n not in optional
    ]
    if required:
        raise ConfigError(f"{key}.{required[0]} is required by {cls.__qualname__}")


def _sources() -> Mapping[str, Any]:
    from fedkd.data.sources import SOURCES

    return SOURCES


def _builtin_source(name: str) -> Component:
    return build_component({NAME_KEY: name}, "dataset", _sources())


def _models() -> Mapping[str, Any]:
    from fedkd.models import ARCHITECTURES  # torch: imported only once a config is built

    return ARCHITECTURES


MODEL_CONTEXT_ARGS: Final = ("input_shape", "num_classes")  # what fedkd passes every model


def model_component(value: Any, key: str) -> Component:
    """A model: a built-in name (``cnn``), an import path (``mypkg.nets.TinyNet``: a name with a
    dot), or a ``{_target_: ..., **kwargs}`` node. It is called as ``Class(input_shape=(C, H,
    W), num_classes=K, **kwargs)``."""
    if isinstance(value, str):
        value = {TARGET_KEY if "." in value else NAME_KEY: value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a model name, an import path or a mapping, got {value!r}")
    return build_component(value, key, _models(), MODEL_CONTEXT_ARGS)


def model_node(component: Component) -> Any:
    """How a model component is written back: its name alone when it has no arguments."""
    return component.kind if not component.args else component.node(_models())


def _split_node(cls: type[T], node: Any, key: str) -> T:
    """A data node: a source (``name``/``_target_`` + its arguments) plus ``cls``' own keys."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{key} must be a mapping, got {node!r}")
    own = {f.name for f in dataclasses.fields(cls) if f.name != "source"}  # type: ignore[arg-type]
    source = build_component({k: v for k, v in node.items() if k not in own}, key, _sources())
    return _build(cls, {k: v for k, v in node.items() if k in own}, key + ".", source=source)


class _SplitNode:
    """Mixin: a data node serialises as its source's keys plus its own."""

    source: Component

    def to_node(self) -> dict[str, Any]:
        own = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.name != "source"
        }
        return {**self.source.node(_sources()), **own}


@dataclasses.dataclass(frozen=True)
class DatasetConfig(_SplitNode):
    """The private data's source (the task being learned) and what is held out of it.

    The node holds the source's own keys (``name: npz``, ``path: ...``) beside these.
    """

    source: Component = dataclasses.field(default_factory=lambda: _builtin_source("fmnist"))
    num_public: int = 10_000  # held out as the public set; 0 when `public` has its own source
    num_private: int | None = None  # None: the rest of the training pool
    num_test: int | None = None  # None: the source's test split, else its default hold-out

    def __post_init__(self) -> None:
        _require(self.num_public >= 0, "dataset.num_public", f"must be >= 0, got {self.num_public}")
        for key in ("num_private", "num_test"):
            value = getattr(self, key)
            _require(value is None or value >= 1, f"dataset.{key}", f"must be >= 1, got {value}")

    @classmethod
    def from_node(cls, node: Any, key: str) -> "DatasetConfig":
        return _split_node(cls, node, key)


@dataclasses.dataclass(frozen=True)
class PublicConfig(_SplitNode):
    """A public proxy set from a source of its own (``public=folder public.path=DIR``)."""

    source: Component = dataclasses.field(default_factory=lambda: _builtin_source("fmnist"))
    num_samples: int | None = None  # None: the whole source
    resize: bool = True  # images of another shape: resize them (false: refuse)
    task_labels: bool = False  # its labels are the private task's classes (consensus accuracy)

    def __post_init__(self) -> None:
        _require(
            self.num_samples is None or self.num_samples >= 1, "public.num_samples", "must be >= 1"
        )

    @classmethod
    def from_node(cls, node: Any, key: str) -> "PublicConfig":
        return _split_node(cls, node, key)


@dataclasses.dataclass(frozen=True)
class TestConfig(_SplitNode):
    """A test set from a source of its own (``test=npz test.path=FILE``): its test split if it
    has one, else its pool. Its labels must be the private task's classes."""

    source: Component = dataclasses.field(default_factory=lambda: _builtin_source("fmnist"))
    num_samples: int | None = None  # None: all of it
    resize: bool = True

    def __post_init__(self) -> None:
        _require(
            self.num_samples is None or self.num_samples >= 1, "test.num_samples", "must be >= 1"
        )

    @classmethod
    def from_node(cls, node: Any, key: str) -> "TestConfig":
        return _split_node(cls, node, key)


@dataclasses.dataclass(frozen=True)
class NormalizeConfig:
    """Per-channel input statistics; null: computed from the public set (never private data)."""

    mean: list[float] | None = None
    std: list[float] | None = None

    def __post_init__(self) -> None:
        _require(
            (self.mean is None) == (self.std is None),
            "normalize",
            "needs both mean and std, or neither",
        )
        if self.std is not None and self.mean is not None:
            _require(len(self.mean) == len(self.std) >= 1, "normalize.std", "must match mean")
            _require(all(s > 0 for s in self.std), "normalize.std", "must be > 0")

    @property
    def given(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        if self.mean is None or self.std is None:
            return None
        return tuple(self.mean), tuple(self.std)


def _partitioners() -> Mapping[str, Any]:
    from fedkd.data.partition import PARTITIONERS

    return PARTITIONERS


PARTITIONER_CONTEXT_ARGS: Final = ("num_partitions", "seed")  # passed to classes that take them


@dataclasses.dataclass(frozen=True)
class PartitionConfig:
    """How the private pool is split across clients: a partitioner and only its own keys.

    Built-in: ``iid``, ``dirichlet`` (``alpha``, ``min_size``), ``shards``
    (``shards_per_client``); or any class by import path (``_target_``), for example a
    ``flwr_datasets.partitioner`` class (``pip install 'fedkd[flwr-datasets]'``), which fedkd
    builds with ``num_partitions`` (and ``seed``, if it takes one).
    """

    partitioner: Component = dataclasses.field(
        default_factory=lambda: build_component(
            {NAME_KEY: "dirichlet"}, "partition", _partitioners()
        )
    )

    @property
    def name(self) -> str:
        return self.partitioner.kind

    @classmethod
    def from_node(cls, node: Any, key: str) -> "PartitionConfig":
        if not isinstance(node, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {node!r}")
        return cls(build_component(node, key, _partitioners(), optional=PARTITIONER_CONTEXT_ARGS))

    def to_node(self) -> dict[str, Any]:
        return self.partitioner.node(_partitioners())


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
    """Which federated-distillation algorithm runs, and its distillation settings."""

    name: str = "dsfl"
    aggregation: str = "era"
    temperature: float = 1.0  # distillation temperature T (FedMD also softens the mean logits by T)
    era_temperature: float = 0.1  # DS-FL's sharpening temperature for ERA
    consensus_memory: bool = False  # average each public sample's consensus over rounds
    memory_decay: float = 1.0  # each round, earlier rounds' weight in it is multiplied by this
    client_teacher: str = "consensus"  # what clients digest: "consensus" | "global" (model)
    distill_on_memory: bool = False  # server distils on every remembered public sample
    class_weighting: bool = False  # weight clients per class by their class counts
    holdout_fraction: float = 0.2  # feddf: public share held out for early stopping
    patience: int = 2  # feddf: distillation epochs without improvement before stopping

    @property
    def shares_weights(self) -> bool:
        """Weight averaging (a baseline): every client trains the global architecture."""
        return self.name in WEIGHT_SHARING

    def __post_init__(self) -> None:
        _one_of(self.name, ALGORITHMS, "algorithm.name")
        _one_of(self.aggregation, AGGREGATIONS, "algorithm.aggregation")
        _require(self.temperature > 0, "algorithm.temperature", "must be > 0")
        _require(self.era_temperature > 0, "algorithm.era_temperature", "must be > 0")
        _one_of(self.client_teacher, ("consensus", "global"), "algorithm.client_teacher")
        _require(0 < self.memory_decay <= 1, "algorithm.memory_decay", "must be in (0, 1]")
        _require(
            self.consensus_memory or not self.distill_on_memory,
            "algorithm.distill_on_memory",
            "needs algorithm.consensus_memory=true",
        )
        _require(0 < self.holdout_fraction < 1, "algorithm.holdout_fraction", "must be in (0, 1)")
        _require(self.patience >= 1, "algorithm.patience", "must be >= 1")
        _require(
            self.name == "dsfl" or self.aggregation != "era",
            "algorithm.aggregation",
            "'era' averages probabilities and only applies to dsfl",
        )


class _Augmented:
    """Mixin of the configs with ``augment_shift`` / ``augment_flip`` keys."""

    augment_shift: int
    augment_flip: bool

    @property
    def augment(self) -> Augment:
        return Augment(self.augment_shift, self.augment_flip)


@dataclasses.dataclass(frozen=True)
class ClientsConfig(_Augmented):
    """The federation: how many clients, their architectures and their local training."""

    num_clients: int = 10
    fraction: float = 1.0  # share of clients sampled each round ...
    min_clients: int = 2  # ... but never fewer than this
    architectures: list[Component] = dataclasses.field(
        default_factory=lambda: [
            model_component(a, "clients.architectures")
            for a in ("cnn", "mlp", "wide_cnn", "resnet")
        ]
    )  # assigned round-robin by client id: names, import paths or _target_ nodes
    architecture_map: dict[str, Component] = dataclasses.field(default_factory=dict)  # id ->
    batch_size: int = 64
    lr: float = 1e-3
    revisit_epochs: int = 1  # local training on private data per round
    digest_epochs: int = 1  # distillation toward the consensus per round
    # sequential: digest, then revisit. joint: revisit_epochs over the private data mixed with
    # as many teacher-labelled public samples, in one pass (digest_epochs unused).
    kd_schedule: str = "sequential"
    augment_shift: int = 0  # random translation (pixels) of private images in training
    augment_flip: bool = False  # random horizontal mirror of private images in training
    num_eval_samples: int = 2_000  # first samples of the test set each client reports on; 0: off
    num_threads: int = 1  # torch threads per client process

    def __post_init__(self) -> None:
        _require(self.num_clients >= 1, "clients.num_clients", "must be >= 1")
        _require(
            0 < self.fraction <= 1, "clients.fraction", f"must be in (0, 1], got {self.fraction}"
        )
        _require(self.min_clients >= 1, "clients.min_clients", "must be >= 1")
        _require(
            self.min_clients <= self.num_clients,
            "clients.min_clients",
            f"({self.min_clients}) must be <= clients.num_clients ({self.num_clients})",
        )
        _require(len(self.architectures) >= 1, "clients.architectures", "must not be empty")
        for client_id in self.architecture_map:
            _require(
                client_id.isdigit(),
                "clients.architecture_map",
                f"keys must be client ids (integers), got {client_id!r}",
            )
        for key in ("batch_size", "num_threads"):
            _require(getattr(self, key) >= 1, f"clients.{key}", "must be >= 1")
        for key in ("revisit_epochs", "digest_epochs", "num_eval_samples", "augment_shift"):
            _require(getattr(self, key) >= 0, f"clients.{key}", "must be >= 0")
        _require(self.lr > 0, "clients.lr", "must be > 0")
        _require(
            self.kd_schedule in KD_SCHEDULES,
            "clients.kd_schedule",
            f"must be one of {KD_SCHEDULES}, got {self.kd_schedule!r}",
        )

    def architecture_of(self, client_id: int) -> Component:
        """The architecture client ``client_id`` trains: the explicit map, else round-robin."""
        return self.architecture_map.get(
            str(client_id), self.architectures[client_id % len(self.architectures)]
        )

    def num_sampled(self, num_available: int) -> int:
        """How many of ``num_available`` clients take part in a round."""
        return min(num_available, max(self.min_clients, round(self.fraction * num_available)))


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Augmented):
    """The global (server) model and how the server distils it from the consensus."""

    architecture: Component = dataclasses.field(
        default_factory=lambda: model_component("cnn", "model.architecture")
    )
    distill_epochs: int = 2
    batch_size: int = 128
    lr: float = 1e-3
    augment_shift: int = 0  # random translation (pixels) of public images in distillation
    augment_flip: bool = False  # random horizontal mirror of public images in distillation
    ema_decay: float = 0.0  # > 0: serve an exponential moving average of the model over rounds

    def __post_init__(self) -> None:
        _require(self.distill_epochs >= 0, "model.distill_epochs", "must be >= 0")
        _require(0 <= self.ema_decay < 1, "model.ema_decay", "must be in [0, 1)")
        _require(self.augment_shift >= 0, "model.augment_shift", "must be >= 0")
        _require(self.batch_size >= 1, "model.batch_size", "must be >= 1")
        _require(self.lr > 0, "model.lr", "must be > 0")


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """Resources of Flower's simulation engine on this machine."""

    num_cpus: int = 2  # CPUs Ray may use in total
    client_num_cpus: int = 1  # CPUs per client actor (whole CPUs: Flower's rule)

    def __post_init__(self) -> None:
        _require(self.num_cpus >= 1, "simulation.num_cpus", "must be >= 1")
        _require(self.client_num_cpus >= 1, "simulation.client_num_cpus", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One fedkd run: everything the ServerApp and every ClientApp need to know."""

    dataset: DatasetConfig = dataclasses.field(default_factory=DatasetConfig)
    public: PublicConfig | None = None  # None: held out of `dataset` (dataset.num_public)
    test: TestConfig | None = None  # None: the dataset's test split, or held out of it
    normalize: NormalizeConfig = dataclasses.field(default_factory=NormalizeConfig)
    partition: PartitionConfig = dataclasses.field(default_factory=PartitionConfig)
    algorithm: AlgorithmConfig = dataclasses.field(default_factory=AlgorithmConfig)
    clients: ClientsConfig = dataclasses.field(default_factory=ClientsConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    simulation: SimulationConfig = dataclasses.field(default_factory=SimulationConfig)
    name: str = "default"
    seed: int = 0
    num_rounds: int = 10
    public_per_round: int | None = None  # public samples queried per round; None: all of them
    round_timeout: float = 600.0  # seconds the server waits for replies in one round
    node_wait_timeout: float = 120.0  # seconds to wait for clients.num_clients nodes to connect
    mode: str = "simulation"
    connection: str = "local"  # Flower connection (in $FLWR_HOME/config.toml) for mode=deploy
    output_dir: str = ""  # run folder; empty: ./outputs/run-<flower run id>

    def __post_init__(self) -> None:
        _require(self.num_rounds >= 1, "num_rounds", f"must be >= 1, got {self.num_rounds}")
        if self.public is None:
            _require(
                self.dataset.num_public >= 1,
                "dataset.num_public",
                "must be >= 1 (the public set is held out of the dataset unless `public` is set)",
            )
        else:
            _require(
                self.dataset.num_public == 0,
                "dataset.num_public",
                f"must be 0 when `public` has its own source, got {self.dataset.num_public}",
            )
        if self.test is not None:
            _require(
                self.dataset.num_test is None,
                "dataset.num_test",
                f"must be null when `test` has its own source, got {self.dataset.num_test}",
            )
        if self.public_per_round is not None:
            known = self.public.num_samples if self.public else self.dataset.num_public
            _require(
                self.public_per_round >= 1 and (known is None or self.public_per_round <= known),
                "public_per_round",
                f"({self.public_per_round}) must be in [1, the public set's size ({known})]",
            )
        _require(self.round_timeout > 0, "round_timeout", "must be > 0")
        _require(self.node_wait_timeout >= 0, "node_wait_timeout", "must be >= 0")
        _one_of(self.mode, MODES, "mode")


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a type annotation, coercing int -> float; raise naming ``key``."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        (inner,) = (o for o in options if o is not type(None))
        return _convert(value, inner, key)
    if annotation is Component:  # the only bare Component fields are models
        return model_component(value, key)
    if hasattr(annotation, "from_node"):
        return annotation.from_node(value, key)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return _build(annotation, value, key + ".")  # type: ignore[arg-type]
    if origin is list:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = get_args(annotation)
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        _, item = get_args(annotation)
        return {str(k): _convert(v, item, f"{key}.{k}") for k, v in value.items()}
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if type(value) is not annotation:
        raise ConfigError(f"{key} must be of type {annotation.__name__}, got {value!r}")
    return value


def _build(cls: type[T], data: Mapping[str, Any], prefix: str = "", **fixed: Any) -> T:
    """``cls(**data)`` with every value checked against its annotation; ``fixed`` arguments are
    already built. Unknown keys and out-of-range values raise :class:`ConfigError`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(prefix + k for k in unknown)}; valid keys under "
            f"'{prefix.rstrip('.') or '<root>'}': {sorted(fields)}"
        )
    hints = get_type_hints(cls)
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs, **fixed)


def _is_path_key(key: str) -> bool:
    return key in ("path", "data_dir") or key.endswith(("_path", "_dir"))


def with_absolute_paths(cfg: ExperimentConfig, base: Path) -> ExperimentConfig:
    """``cfg`` with relative paths made absolute against ``base`` (where the command ran): the
    run folder and the data sources' ``path`` / ``*_path`` / ``*_dir`` arguments. Flower's
    processes run elsewhere, so a relative path would mean nothing to them."""

    def absolute(node: Any) -> Any:
        if node is None:
            return None
        args = tuple(
            (k, str((base / v).resolve()) if _is_path_key(k) and isinstance(v, str) and v else v)
            for k, v in node.source.args
        )
        return dataclasses.replace(node, source=dataclasses.replace(node.source, args=args))

    output = str((base / cfg.output_dir).resolve()) if cfg.output_dir else ""
    return dataclasses.replace(
        cfg,
        dataset=absolute(cfg.dataset),
        public=absolute(cfg.public),
        test=absolute(cfg.test),
        output_dir=output,
    )


def from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a plain (JSON-like) mapping and build the typed config. Raises ConfigError."""
    return _build(ExperimentConfig, data)


def _node(value: Any) -> Any:
    if isinstance(value, Component):
        return model_node(value)
    if hasattr(value, "to_node"):
        return value.to_node()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _node(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_node(v) for v in value]
    if isinstance(value, dict):
        return {k: _node(v) for k, v in value.items()}
    return value


def to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as the plain mapping it was built from (``from_dict`` reads it back)."""
    result: dict[str, Any] = _node(cfg)
    return result


def to_json(cfg: ExperimentConfig) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True)


def from_json(blob: str) -> ExperimentConfig:
    return from_dict(json.loads(blob))


def compose(
    overrides: Sequence[str] = (), config_name: str = "config", run_dir: bool = False
) -> ExperimentConfig:
    """Compose ``conf/<config_name>.yaml`` (and the working directory's ``conf/`` overlay) with
    Hydra overrides and validate it.

    ``run_dir=True`` fills an empty ``output_dir`` with the folder the ``fedkd`` command would
    use (``outputs/<date>/<time>-<name>``, Hydra's ``hydra.run.dir``); otherwise ``output_dir``
    stays as composed and must be set by the caller before a run.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with (
        warnings.catch_warnings(),
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"),
    ):
        warnings.filterwarnings("ignore", _NO_OVERLAY_WARNING)
        cfg = hydra_compose(
            config_name=config_name, overrides=list(overrides), return_hydra_config=run_dir
        )
        if run_dir:
            from omegaconf import open_dict

            with open_dict(cfg):
                cfg.output_dir = cfg.output_dir or str(cfg.hydra.run.dir)
                del cfg["hydra"]
    return from_dictconfig(cfg)


def from_dictconfig(cfg: Any) -> ExperimentConfig:
    """Resolve a Hydra ``DictConfig`` (dropping the ``hydra`` node) and validate it."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    return from_dict({str(k): v for k, v in data.items()})


def hydra_main(task_fn: Callable[[ExperimentConfig], Any]) -> Callable[[], Any]:
    """Wrap ``task_fn`` as a Hydra command-line entry point over ``conf/config.yaml``.

    Hydra parses the overrides (and ``-m`` sweeps), the composed config is validated into an
    :class:`ExperimentConfig` with ``output_dir`` set to Hydra's job folder, then ``task_fn`` runs.
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf, open_dict

    warnings.filterwarnings("ignore", _NO_OVERLAY_WARNING)

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> Any:
        with open_dict(cfg):
            if not cfg.get("output_dir"):
                cfg.output_dir = HydraConfig.get().runtime.output_dir
        OmegaConf.resolve(cfg)
        return task_fn(from_dictconfig(cfg))

    return _main


def from_run_config(run_config: Mapping[str, Any]) -> ExperimentConfig:
    """The experiment config a Flower app received in its ``run_config``.

    The launcher (``fedkd``) puts the whole validated config under ``cfg-json``. A bare
    ``flwr run .`` leaves it empty; then the packaged ``conf/`` is composed with the Hydra
    overrides given as one string, e.g. ``--run-config 'overrides="experiment=digits_quick"'``.
    """
    from fedkd.protocol import RUN_CONFIG_KEY, RUN_OVERRIDES_KEY

    blob = str(run_config.get(RUN_CONFIG_KEY, "") or "")
    if blob.strip():
        return from_json(blob)
    return compose(shlex.split(str(run_config.get(RUN_OVERRIDES_KEY, "") or "")))
