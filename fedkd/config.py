"""Typed experiment configuration: frozen dataclass schemas, validation, and Hydra composition.

This is the one place that knows about Hydra. Everything else receives an
:class:`ExperimentConfig` (or one of its typed sections), never a raw ``DictConfig``.

Validation happens before anything starts: an unknown key, a wrong type or an out-of-range value
raises :class:`ConfigError` with the dotted key in the message (``partition.alpha must be > 0``).
"""

import dataclasses
import json
import shlex
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar, Union, get_args, get_origin, get_type_hints

from fedkd.augment import Augment

CONF_DIR: Final = Path(__file__).resolve().parent.parent / "conf"

ALGORITHMS: Final = ("fedmd", "dsfl", "feddf", "fedavg", "local", "centralized")
IN_PROCESS: Final = ("local", "centralized")  # non-federated baselines: no Flower involved
KD_SCHEDULES: Final = ("sequential", "joint")  # how a client combines digest and revisit
WEIGHT_SHARING: Final = ("fedavg",)  # baselines whose clients all train model.architecture
AGGREGATIONS: Final = ("mean", "weighted_mean", "era")
DATASETS: Final = ("fmnist", "digits")
PARTITIONS: Final = ("iid", "dirichlet", "shards")
MODES: Final = ("simulation", "deploy")


class ConfigError(ValueError):
    """A configuration key is unknown, mistyped or out of range. The message names the key."""


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


def _one_of(value: str, choices: Sequence[str], key: str) -> None:
    _require(value in choices, key, f"must be one of {list(choices)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Where the data comes from and how it is split into private pool / public set / test set."""

    name: str = "fmnist"
    data_dir: str | None = None  # None: $FEDKD_DATA_DIR, then the Debian package's directory
    num_public: int = 10_000  # public proxy set, drawn from the training set, unlabeled for clients
    num_private: int | None = None  # None: the rest of the training set
    num_test: int | None = None  # None: the official test set (digits: 360)

    def __post_init__(self) -> None:
        _one_of(self.name, DATASETS, "dataset.name")
        _require(self.num_public >= 1, "dataset.num_public", f"must be >= 1, got {self.num_public}")
        for key in ("num_private", "num_test"):
            value = getattr(self, key)
            _require(value is None or value >= 1, f"dataset.{key}", f"must be >= 1, got {value}")


@dataclasses.dataclass(frozen=True)
class PartitionConfig:
    """How the private pool is split across clients."""

    name: str = "dirichlet"
    alpha: float = 0.5  # Dirichlet concentration: small => skewed label distributions
    shards_per_client: int = 2
    min_size: int = 10

    def __post_init__(self) -> None:
        _one_of(self.name, PARTITIONS, "partition.name")
        _require(self.alpha > 0, "partition.alpha", f"must be > 0, got {self.alpha}")
        _require(
            self.shards_per_client >= 1,
            "partition.shards_per_client",
            f"must be >= 1, got {self.shards_per_client}",
        )
        _require(self.min_size >= 1, "partition.min_size", f"must be >= 1, got {self.min_size}")


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
    architectures: list[str] = dataclasses.field(
        default_factory=lambda: ["cnn", "mlp", "wide_cnn", "resnet"]
    )  # assigned round-robin by client id
    architecture_map: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> name
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

    def architecture_of(self, client_id: int) -> str:
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

    architecture: str = "cnn"
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
        if self.public_per_round is not None:
            _require(
                1 <= self.public_per_round <= self.dataset.num_public,
                "public_per_round",
                f"({self.public_per_round}) must be in [1, dataset.num_public="
                f"{self.dataset.num_public}]",
            )
        _require(self.round_timeout > 0, "round_timeout", "must be > 0")
        _require(self.node_wait_timeout >= 0, "node_wait_timeout", "must be >= 0")
        _one_of(self.mode, MODES, "mode")
        from fedkd.models import ARCHITECTURES  # torch: imported only once a config is built

        archs = [("model.architecture", self.model.architecture)]
        archs += [
            (f"clients.architectures[{i}]", a) for i, a in enumerate(self.clients.architectures)
        ]
        archs += [
            (f"clients.architecture_map.{k}", a) for k, a in self.clients.architecture_map.items()
        ]
        for key, arch in archs:
            _one_of(arch, sorted(ARCHITECTURES), key)


T = TypeVar("T")


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a type annotation, coercing int -> float; raise naming ``key``."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        (inner,) = (o for o in options if o is not type(None))
        return _convert(value, inner, key)
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


def _build(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
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
    return cls(**kwargs)


def from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a plain (JSON-like) mapping and build the typed config. Raises ConfigError."""
    return _build(ExperimentConfig, data)


def to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_json(cfg: ExperimentConfig) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True)


def from_json(blob: str) -> ExperimentConfig:
    return from_dict(json.loads(blob))


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> ExperimentConfig:
    """Compose ``conf/<config_name>.yaml`` with Hydra overrides and validate it.

    Used by tests and by the apps when no config came with the run. ``hydra.*`` interpolations
    (such as the run folder) are not available here: ``output_dir`` must be set by the caller.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
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
