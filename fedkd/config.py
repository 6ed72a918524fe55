"""Typed experiment configuration: frozen dataclass schemas, validation, and Hydra composition.

This is the one place that knows about Hydra. Everything else receives an
:class:`ExperimentConfig` (or one of its typed sections), never a raw ``DictConfig``.

Validation happens before anything starts: an unknown key, a wrong type or an out-of-range value
raises :class:`ConfigError` with the dotted key in the message (``partition.alpha must be > 0``).
Every pluggable part (data source, partitioner, model, algorithm, combine rule, post-processor)
is a typed node of its own, a built-in name or a class by import path (see :mod:`fedkd.schema`):
a key its part does not take is refused, never ignored.
"""

import dataclasses
import json
import math
import shlex
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from fedkd.algorithms import CLIENT_TEACHERS, Algorithm, Distillation, algorithm_from_node
from fedkd.augment import Augment
from fedkd.schema import (
    Component,
    ConfigError,
    build,
    component,
    component_field,
    one_of,
    require,
    to_node,
)
from fedkd.views import Views

__all__ = [
    "CONF_DIR",
    "Component",
    "ConfigError",
    "DPConfig",
    "DatasetConfig",
    "ExperimentConfig",
    "PartitionConfig",
    "PublicConfig",
    "QuarantineConfig",
    "TestConfig",
    "compose",
    "from_dict",
    "from_json",
    "from_run_config",
    "hydra_main",
    "to_dict",
    "to_json",
    "with_absolute_paths",
]

_PACKAGE = Path(__file__).resolve().parent
# The packaged configs: inside the package when installed from a wheel, beside it in a checkout.
CONF_DIR: Final = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"
# Hydra warns when the search path's conf/ (a user project's overlay) is absent: that is normal.
_NO_OVERLAY_WARNING: Final = r"provider=hydra\.searchpath in main, path=conf is not available"

KD_SCHEDULES: Final = ("sequential", "joint")  # how a client combines digest and revisit
LR_SCHEDULES: Final = ("constant", "cosine")  # the global model's distillation rate over rounds
MODES: Final = ("simulation", "deploy")


def _split_node(cls: Any, node: Any, key: str) -> Any:
    """A data node: a source (``name``/``_target_`` + its arguments) plus ``cls``' own keys."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{key} must be a mapping, got {node!r}")
    own = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    source = component({k: v for k, v in node.items() if k not in own}, "source", key)
    return build(cls, {k: v for k, v in node.items() if k in own}, key + ".", source=source)


class _SplitNode:
    """Mixin: a data node is its source's keys plus its own, read and written as one mapping."""

    source: Component

    @classmethod
    def from_node(cls, node: Any, key: str) -> Any:
        return _split_node(cls, node, key)

    def to_node(self) -> dict[str, Any]:
        own = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.name != "source"
        }
        return {**self.source.node(), **own}


def _default_source() -> Component:
    return component("fmnist", "source", "dataset")


@dataclasses.dataclass(frozen=True)
class DatasetConfig(_SplitNode):
    """The private data's source (the task being learned) and what is held out of it.

    The node holds the source's own keys (``name: npz``, ``path: ...``) beside these.
    """

    source: Component = dataclasses.field(default_factory=_default_source)
    num_public: int = 10_000  # held out as the public set; 0 when `public` has its own source
    num_private: int | None = None  # None: the rest of the training pool
    num_test: int | None = None  # None: the source's test split, else its default hold-out

    def __post_init__(self) -> None:
        require(self.num_public >= 0, "dataset.num_public", f"must be >= 0, got {self.num_public}")
        for key in ("num_private", "num_test"):
            value = getattr(self, key)
            require(value is None or value >= 1, f"dataset.{key}", f"must be >= 1, got {value}")


@dataclasses.dataclass(frozen=True)
class PublicConfig(_SplitNode):
    """A public proxy set from a source of its own (``public=folder public.path=DIR``)."""

    source: Component = dataclasses.field(default_factory=_default_source)
    num_samples: int | None = None  # None: the whole source
    resize: bool = True  # images of another shape: resize them (false: refuse)
    task_labels: bool = False  # its labels are the private task's classes (consensus accuracy)

    def __post_init__(self) -> None:
        require(
            self.num_samples is None or self.num_samples >= 1, "public.num_samples", "must be >= 1"
        )


@dataclasses.dataclass(frozen=True)
class TestConfig(_SplitNode):
    """A test set from a source of its own (``test=npz test.path=FILE``): its test split if it
    has one, else its pool. Its labels must be the private task's classes."""

    __test__ = False  # not a pytest test class

    source: Component = dataclasses.field(default_factory=_default_source)
    num_samples: int | None = None  # None: all of it
    resize: bool = True

    def __post_init__(self) -> None:
        require(
            self.num_samples is None or self.num_samples >= 1, "test.num_samples", "must be >= 1"
        )


@dataclasses.dataclass(frozen=True)
class NormalizeConfig:
    """Per-channel input statistics; null: computed from the public set (never private data)."""

    mean: list[float] | None = None
    std: list[float] | None = None

    def __post_init__(self) -> None:
        require(
            (self.mean is None) == (self.std is None),
            "normalize",
            "needs both mean and std, or neither",
        )
        if self.std is not None and self.mean is not None:
            require(len(self.mean) == len(self.std) >= 1, "normalize.std", "must match mean")
            require(all(s > 0 for s in self.std), "normalize.std", "must be > 0")

    @property
    def given(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        if self.mean is None or self.std is None:
            return None
        return tuple(self.mean), tuple(self.std)


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """Adversarial clients (``attack=wrong_class attack.fraction=0.3``): a behaviour from
    :mod:`fedkd.attacks` (its own keys) and which clients run it -- a seeded ``fraction`` of
    them, or the explicit ``clients`` ids."""

    behaviour: Component
    fraction: float | None = None
    clients: list[int] | None = None
    count_factor: float = 1.0  # the attackers also report their example counts times this

    def __post_init__(self) -> None:
        require(
            (self.fraction is None) != (self.clients is None),
            "attack.fraction",
            "or attack.clients chooses the attackers: set exactly one of them",
        )
        if self.fraction is not None:
            require(0 <= self.fraction <= 1, "attack.fraction", "must be in [0, 1]")
        require(self.count_factor > 0, "attack.count_factor", "must be > 0")

    @classmethod
    def from_node(cls, node: Any, key: str) -> "AttackConfig":
        if not isinstance(node, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {node!r}")
        own = {"fraction", "clients", "count_factor"}
        behaviour = component({k: v for k, v in node.items() if k not in own}, "attack", key)
        return build(
            cls, {k: v for k, v in node.items() if k in own}, key + ".", behaviour=behaviour
        )

    def to_node(self) -> dict[str, Any]:
        own = {
            "fraction": self.fraction,
            "clients": self.clients,
            "count_factor": self.count_factor,
        }
        return {**self.behaviour.node(), **own}


@dataclasses.dataclass(frozen=True)
class DPConfig:
    """Example-level differential privacy for the clients' private records (DP-SGD with Opacus,
    :mod:`fedkd.privacy`). Off unless ``epsilon`` (a target for the whole run, with ``delta``)
    or ``noise_multiplier`` is set -- exactly one of them."""

    epsilon: float | None = None  # target ε per client for the whole run: noise calibrated to it
    noise_multiplier: float | None = None  # or the noise itself (ε is then only reported)
    delta: float = 1e-5
    max_grad_norm: float = 1.0  # each example's gradient is clipped to this L2 norm
    accountant: str = "rdp"  # Opacus's accountant: rdp | prv

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None or self.noise_multiplier is not None

    def __post_init__(self) -> None:
        require(
            self.epsilon is None or self.noise_multiplier is None,
            "dp.epsilon",
            "and dp.noise_multiplier both set: give the target ε or the noise, not both",
        )
        if self.epsilon is not None:
            require(self.epsilon > 0, "dp.epsilon", f"must be > 0, got {self.epsilon}")
        if self.noise_multiplier is not None:
            require(self.noise_multiplier > 0, "dp.noise_multiplier", "must be > 0")
        require(0 < self.delta < 1, "dp.delta", f"must be in (0, 1), got {self.delta}")
        require(self.max_grad_norm > 0, "dp.max_grad_norm", "must be > 0")
        one_of(self.accountant, ("rdp", "prv"), "dp.accountant")
        if not self.enabled:
            default = DPConfig.__dataclass_fields__
            for key in ("delta", "max_grad_norm", "accountant"):
                require(
                    getattr(self, key) == default[key].default,
                    f"dp.{key}",
                    "is set but differential privacy is off: set dp.epsilon or dp.noise_multiplier",
                )


@dataclasses.dataclass(frozen=True)
class QuarantineConfig:
    """Clients the server stops asking: one whose reply is rejected, or (with a rule that weighs
    clients, ``algorithm.combine=reputation``) whose weight falls below ``min_share`` of an equal
    share, ``after`` rounds in a row sits out the next ``rounds`` rounds (null: the rest of the
    run). ``after: 0`` turns quarantine off."""

    after: int = 3
    rounds: int | None = 10
    min_share: float = 0.1

    def __post_init__(self) -> None:
        require(self.after >= 0, "quarantine.after", "must be >= 0 (0: off)")
        require(self.rounds is None or self.rounds >= 1, "quarantine.rounds", "must be >= 1")
        require(0 <= self.min_share < 1, "quarantine.min_share", "must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """A self-supervised start on the public images (:mod:`fedkd.pretrain`): every student and
    the global model first learn, for ``epochs`` epochs, to tell apart the k-means clusters of
    the public images; then their head is re-drawn. No private data, no labels; computed once
    per machine and architecture (cached), the same on every node. ``epochs: 0``: off."""

    epochs: int = 0
    seed: int = 0  # of the clustering and the pretrained weights (shared by every node)

    def __post_init__(self) -> None:
        require(self.epochs >= 0, "pretrain.epochs", "must be >= 0 (0: off)")
        require(
            self.epochs > 0 or self.seed == 0, "pretrain.seed", "is used by pretrain.epochs > 0"
        )


@dataclasses.dataclass(frozen=True)
class ViewsConfig:
    """Consistent augmented views of the public set (:mod:`fedkd.views`): each round the server
    sends a seed, clients answer on the views it draws and the global model is distilled on the
    same views. All defaults: the public samples themselves."""

    zoom: float = 1.0  # largest magnification of a random window (1: none)
    shift: int = 0  # largest translation in pixels
    flip: bool = False  # mirror half of the views
    mixup: float = 0.0  # > 0: mix each view with a partner's, lam ~ Beta(mixup, mixup)

    def __post_init__(self) -> None:
        require(self.zoom >= 1.0, "views.zoom", f"must be >= 1 (1: none), got {self.zoom}")
        require(self.shift >= 0, "views.shift", f"must be >= 0, got {self.shift}")
        require(self.mixup >= 0.0, "views.mixup", f"must be >= 0 (0: none), got {self.mixup}")

    @property
    def spec(self) -> Views:
        return Views(zoom=self.zoom, shift=self.shift, flip=self.flip, mixup=self.mixup)


@dataclasses.dataclass(frozen=True)
class PartitionConfig:
    """How the private pool is split across clients: a partitioner and only its own keys.

    Built-in: ``iid``, ``dirichlet`` (``alpha``, ``min_size``), ``shards``
    (``shards_per_client``); or any class by import path (``_target_``), for example a
    ``flwr_datasets.partitioner`` class (``pip install 'fedkd[flwr-datasets]'``), which fedkd
    builds with ``num_partitions`` (and ``seed``, if it takes one).
    """

    partitioner: Component = dataclasses.field(
        default_factory=lambda: component("dirichlet", "partitioner", "partition")
    )

    @property
    def name(self) -> str:
        return self.partitioner.kind

    @classmethod
    def from_node(cls, node: Any, key: str) -> "PartitionConfig":
        if not isinstance(node, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {node!r}")
        return cls(component(node, "partitioner", key))

    def to_node(self) -> Any:
        return self.partitioner.node()


def _default_algorithm() -> Algorithm:
    return algorithm_from_node({"name": "dsfl"})


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
    # assigned round-robin by client id: built-in names, import paths or _target_ nodes
    architectures: list[Component] = dataclasses.field(
        default_factory=lambda: [
            component(a, "model", "clients.architectures")
            for a in ("cnn", "mlp", "wide_cnn", "resnet")
        ],
        metadata={"family": "model"},
    )
    architecture_map: dict[str, Component] = dataclasses.field(
        default_factory=dict, metadata={"family": "model"}
    )  # client id -> model, overriding the round-robin
    batch_size: int = 64
    lr: float = 1e-3
    revisit_epochs: int = 1  # local training on private data per round
    # ... but at least this many optimizer steps (more passes for a client with few examples)
    min_local_steps: int = 0
    digest_epochs: int = 1  # distillation toward the consensus per round
    # sequential: digest, then revisit. joint: revisit_epochs over the private data mixed with
    # as many teacher-labelled public samples, in one pass (digest_epochs unused).
    kd_schedule: str = "joint"
    min_teacher_samples: int = 0  # joint: at least this many teacher samples (small clients)
    augment_shift: int = 0  # random translation (pixels) of private images in training
    augment_flip: bool = False  # random horizontal mirror of private images in training
    num_eval_samples: int = 2_000  # first samples of the test set each client reports on; 0: off
    num_threads: int = 1  # torch threads per client process
    # share of each round's public samples a client abstains on: those farthest from its
    # private data (fedkd.abstain); the server gives it no say there. 0: it answers on all
    abstain: float = 0.0

    def __post_init__(self) -> None:
        require(self.num_clients >= 1, "clients.num_clients", "must be >= 1")
        require(0 <= self.abstain < 1, "clients.abstain", "must be in [0, 1)")
        require(
            0 < self.fraction <= 1, "clients.fraction", f"must be in (0, 1], got {self.fraction}"
        )
        require(self.min_clients >= 1, "clients.min_clients", "must be >= 1")
        require(
            self.min_clients <= self.num_clients,
            "clients.min_clients",
            f"({self.min_clients}) must be <= clients.num_clients ({self.num_clients})",
        )
        require(len(self.architectures) >= 1, "clients.architectures", "must not be empty")
        for client_id in self.architecture_map:
            require(
                client_id.isdigit(),
                "clients.architecture_map",
                f"keys must be client ids (integers), got {client_id!r}",
            )
        for key in ("batch_size", "num_threads"):
            require(getattr(self, key) >= 1, f"clients.{key}", "must be >= 1")
        for key in (
            "revisit_epochs",
            "min_local_steps",
            "min_teacher_samples",
            "digest_epochs",
            "num_eval_samples",
            "augment_shift",
        ):
            require(getattr(self, key) >= 0, f"clients.{key}", "must be >= 0")
        require(self.lr > 0, "clients.lr", "must be > 0")
        one_of(self.kd_schedule, KD_SCHEDULES, "clients.kd_schedule")
        require(
            self.revisit_epochs > 0 or self.min_local_steps == 0,
            "clients.min_local_steps",
            "needs local training (clients.revisit_epochs > 0)",
        )
        require(
            self.kd_schedule == "joint" or self.min_teacher_samples == 0,
            "clients.min_teacher_samples",
            "is used by clients.kd_schedule=joint only",
        )
        require(
            self.kd_schedule != "joint" or self.digest_epochs == 1,
            "clients.digest_epochs",
            "is not used by clients.kd_schedule=joint (one pass over private and teacher "
            "samples); leave it at 1 or use kd_schedule=sequential",
        )

    def architecture_of(self, client_id: int) -> Component:
        """The architecture client ``client_id`` trains: the explicit map, else round-robin."""
        return self.architecture_map.get(
            str(client_id), self.architectures[client_id % len(self.architectures)]
        )

    @property
    def digests(self) -> bool:
        """Whether clients learn from the teacher the server sends (not under the sequential
        schedule with ``digest_epochs: 0``: clients that only train on their own data)."""
        return self.kd_schedule == "joint" or self.digest_epochs > 0

    def num_sampled(self, num_available: int) -> int:
        """How many of ``num_available`` clients take part in a round."""
        return min(num_available, max(self.min_clients, round(self.fraction * num_available)))


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Augmented):
    """The global (server) model and how the server distils it from the consensus."""

    architecture: Component = component_field("model", "cnn")
    distill_epochs: int = 2
    batch_size: int = 128
    lr: float = 1e-3
    augment_shift: int = 0  # random translation (pixels) of public images in distillation
    augment_flip: bool = False  # random horizontal mirror of public images in distillation
    ema_decay: float = 0.0  # > 0: serve an exponential moving average of the model over rounds
    # constant: every round distils at ``lr``; cosine: round r of R at
    # ``lr_min + (lr - lr_min) * (1 + cos(pi * (r - 1) / R)) / 2`` -- one long schedule spread
    # over the run, the patient teacher-student recipe (Beyer et al. 2022, arXiv:2106.05237)
    lr_schedule: str = "constant"
    lr_min: float = 0.0  # the cosine schedule's floor

    def __post_init__(self) -> None:
        require(self.distill_epochs >= 0, "model.distill_epochs", "must be >= 0")
        require(0 <= self.ema_decay < 1, "model.ema_decay", "must be in [0, 1)")
        require(self.augment_shift >= 0, "model.augment_shift", "must be >= 0")
        require(self.batch_size >= 1, "model.batch_size", "must be >= 1")
        require(self.lr > 0, "model.lr", "must be > 0")
        one_of(self.lr_schedule, LR_SCHEDULES, "model.lr_schedule")
        require(0 <= self.lr_min < self.lr, "model.lr_min", "must be in [0, model.lr)")
        require(
            self.lr_schedule == "cosine" or self.lr_min == 0,
            "model.lr_min",
            "is used by model.lr_schedule=cosine only",
        )

    def round_lr(self, server_round: int, num_rounds: int) -> float:
        """The distillation rate of round ``server_round`` (1-based) of ``num_rounds``.

        >>> m = ModelConfig(lr=1e-3, lr_schedule="cosine")
        >>> [round(m.round_lr(r, 3) * 1e3, 2) for r in (1, 2, 3)]
        [1.0, 0.75, 0.25]
        """
        if self.lr_schedule == "constant":
            return self.lr
        progress = (server_round - 1) / max(1, num_rounds)
        return self.lr_min + (self.lr - self.lr_min) * (1 + math.cos(math.pi * progress)) / 2


SIMULATION_ENGINES: Final = ("in_process", "superlink")
SIMULATION_BACKENDS: Final = ("process", "ray")


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """Resources of Flower's simulation engine on this machine."""

    num_cpus: int = 2  # CPUs the clients may use in total
    client_num_cpus: int = 1  # CPUs per client worker (whole CPUs: Flower's rule)
    # in_process: Flower's engine driven by the launcher; superlink: `flwr run` on a private one
    engine: str = "in_process"
    # where the ClientApps run: process (fedkd.workers: forked processes), ray (Flower's actors)
    backend: str = "process"

    @property
    def num_workers(self) -> int:
        """ClientApps that run at once: as many as fit ``num_cpus`` (Flower's actor count)."""
        return max(1, self.num_cpus // self.client_num_cpus)

    def __post_init__(self) -> None:
        require(
            self.engine in SIMULATION_ENGINES,
            "simulation.engine",
            f"must be one of {', '.join(SIMULATION_ENGINES)}, got {self.engine!r}",
        )
        require(
            self.backend in SIMULATION_BACKENDS,
            "simulation.backend",
            f"must be one of {', '.join(SIMULATION_BACKENDS)}, got {self.backend!r}",
        )
        require(
            self.engine == "in_process" or self.backend == "ray",
            "simulation.backend",
            "`flwr run` (simulation.engine=superlink) runs Flower's Ray backend: set "
            "simulation.backend=ray",
        )
        require(self.num_cpus >= 1, "simulation.num_cpus", "must be >= 1")
        require(self.client_num_cpus >= 1, "simulation.client_num_cpus", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One fedkd run: everything the ServerApp and every ClientApp need to know."""

    dataset: DatasetConfig = dataclasses.field(default_factory=DatasetConfig)
    public: PublicConfig | None = None  # None: held out of `dataset` (dataset.num_public)
    test: TestConfig | None = None  # None: the dataset's test split, or held out of it
    normalize: NormalizeConfig = dataclasses.field(default_factory=NormalizeConfig)
    partition: PartitionConfig = dataclasses.field(default_factory=PartitionConfig)
    algorithm: Algorithm = dataclasses.field(default_factory=_default_algorithm)
    attack: AttackConfig | None = None  # adversarial clients (tests, the robustness benchmark)
    dp: DPConfig = dataclasses.field(default_factory=DPConfig)
    quarantine: QuarantineConfig = dataclasses.field(default_factory=QuarantineConfig)
    pretrain: PretrainConfig = dataclasses.field(default_factory=PretrainConfig)
    views: ViewsConfig = dataclasses.field(default_factory=ViewsConfig)
    clients: ClientsConfig = dataclasses.field(default_factory=ClientsConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    simulation: SimulationConfig = dataclasses.field(default_factory=SimulationConfig)
    name: str = "default"
    seed: int = 0
    num_rounds: int = 10
    public_per_round: int | None = None  # public samples queried per round; None: all of them
    round_timeout: float = 600.0  # seconds the server waits for replies in one round
    node_wait_timeout: float = 120.0  # seconds to wait for clients.num_clients nodes to connect
    max_failed_rounds: int = 3  # rounds in a row in which every sampled client failed (their
    # runtime is gone) before the run stops as failed, its checkpoint kept; 0: never stop
    mode: str = "simulation"
    connection: str = "local"  # Flower connection (in $FLWR_HOME/config.toml) for mode=deploy
    output_dir: str = ""  # run folder; empty: ./outputs/run-<flower run id>

    def __post_init__(self) -> None:
        require(self.num_rounds >= 1, "num_rounds", f"must be >= 1, got {self.num_rounds}")
        if self.public is None:
            require(
                self.dataset.num_public >= 1,
                "dataset.num_public",
                "must be >= 1 (the public set is held out of the dataset unless `public` is set)",
            )
        else:
            require(
                self.dataset.num_public == 0,
                "dataset.num_public",
                f"must be 0 when `public` has its own source, got {self.dataset.num_public}",
            )
        if self.attack is not None and self.attack.clients is not None:
            outside = [c for c in self.attack.clients if not 0 <= c < self.clients.num_clients]
            require(not outside, "attack.clients", f"{outside} are not client ids")
        if self.test is not None:
            require(
                self.dataset.num_test is None,
                "dataset.num_test",
                f"must be null when `test` has its own source, got {self.dataset.num_test}",
            )
        if self.public_per_round is not None:
            known = self.public.num_samples if self.public else self.dataset.num_public
            require(
                self.public_per_round >= 1 and (known is None or self.public_per_round <= known),
                "public_per_round",
                f"({self.public_per_round}) must be in [1, the public set's size ({known})]",
            )
        require(self.round_timeout > 0, "round_timeout", "must be > 0")
        require(self.node_wait_timeout >= 0, "node_wait_timeout", "must be >= 0")
        require(self.max_failed_rounds >= 0, "max_failed_rounds", "must be >= 0")
        one_of(self.mode, MODES, "mode")
        if self.clients.abstain > 0:
            require(
                not self.dp.enabled,
                "clients.abstain",
                "reads the private records outside DP-SGD (the mask would leak what dp.* "
                "protects); it cannot be combined with dp.*",
            )
            rule = getattr(getattr(self.algorithm, "combine", None), "cls", None)
            require(
                isinstance(self.algorithm, Distillation)
                and getattr(rule, "takes_sample_weights", False),
                "clients.abstain",
                "needs algorithm.combine to take per-sample weights (class_weighted, "
                f"class_weighted_reputation, or a rule with takes_sample_weights); "
                f"algorithm={self.algorithm.kind} has {getattr(rule, '__name__', 'no rule')}",
            )
        if self.views.spec.active:
            require(
                isinstance(self.algorithm, Distillation),
                "views",
                f"are views of the public set for soft labels; algorithm={self.algorithm.kind} "
                "shares none",
            )
            require(
                not getattr(self.algorithm, "consensus_memory", False),
                "views",
                "differ every round, so a sample's consensus cannot be averaged over rounds: "
                "set algorithm.consensus_memory=false",
            )
        if isinstance(self.algorithm, Distillation):
            teacher = self.algorithm.client_teacher
            require(
                teacher is None or self.clients.digests,
                "algorithm.client_teacher",
                f"is {teacher!r}, but clients digest no teacher (clients.kd_schedule="
                f"{self.clients.kd_schedule}, clients.digest_epochs={self.clients.digest_epochs}): "
                "set algorithm.client_teacher=null",
            )
            require(
                teacher is not None or not self.clients.digests,
                "algorithm.client_teacher",
                f"is null (no teacher), but clients digest one (clients.kd_schedule="
                f"{self.clients.kd_schedule}, clients.digest_epochs={self.clients.digest_epochs}): "
                f"set it to one of {list(CLIENT_TEACHERS)}",
            )
        else:
            require(
                not self.dp.enabled,
                "dp",
                f"DP-SGD protects the clients' records in a distillation algorithm's local "
                f"training; algorithm={self.algorithm.kind} is not one",
            )
            require(
                self.quarantine == QuarantineConfig(),
                "quarantine",
                f"judges soft-label replies; algorithm={self.algorithm.kind} has none to judge",
            )
            require(
                self.attack is None,
                "attack",
                f"lies about soft labels; algorithm={self.algorithm.kind} shares none",
            )
            for key, active in (
                ("model.ema_decay", self.model.ema_decay > 0),
                ("model.augment_shift", self.model.augment_shift > 0),
                ("model.augment_flip", self.model.augment_flip),
                ("model.lr_schedule", self.model.lr_schedule != "constant"),
            ):
                require(
                    not active,
                    key,
                    f"only applies to a distilled global model, not to algorithm="
                    f"{self.algorithm.kind}",
                )


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
    return build(ExperimentConfig, data)


def to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as the plain mapping it was built from (``from_dict`` reads it back)."""
    result: dict[str, Any] = to_node(cfg)
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

    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
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
