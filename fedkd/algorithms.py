"""Algorithms as typed config nodes: each one's schema, and where its server and client parts live.

An algorithm is three things, all named here and none imported (``fedkd`` never imports the
apps): its **config schema** (a frozen dataclass: only the keys it uses), its **server part**
(``server``: a :class:`server.strategies.base.DistillationStrategy` subclass, by import path) and
its **client part** (``client``: a :class:`clients.base.KDClient` subclass). ``algorithm=dsfl``
picks a built-in; ``algorithm._target_=mypkg.algo.MyConfig`` picks a user's own, whose class
names its own parts -- see ``examples/entropy_weighted.py`` -- with no edit to fedkd.

Every distillation algorithm forms its consensus through one pipeline: the clients' soft labels
-> ``combine`` (a rule from config: ``mean``, ``weighted_mean``, ``class_weighted`` or a class of
one's own) -> the algorithm's one formula to probabilities (the server part's ``to_probs``) ->
optional ``postprocess`` (``era``).
"""

import dataclasses
from typing import Any, ClassVar, Final

from fedkd.schema import Component, ConfigError, component, component_field, to_node

CLIENT_TEACHERS: Final = ("consensus", "global")


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"algorithm.{key} {message}")


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """Base of every algorithm's config. Subclasses set the class variables."""

    #: The built-in short name (``algorithm=dsfl``); empty for a user's class.
    name: ClassVar[str] = ""
    #: Import path of the server part (a strategy class; for in-process baselines, a function
    #: ``(cfg, recorder) -> summary``).
    server: ClassVar[str]
    #: Import path of the client part (a ``KDClient`` subclass); None: none (weights or no
    #: Flower at all).
    client: ClassVar[str | None] = None
    #: Runs in this process without Flower (the local-only and centralized baselines).
    in_process: ClassVar[bool] = False
    #: Clients train ``model.architecture`` and share weights (FedAvg).
    shares_weights: ClassVar[bool] = False
    #: Clients share soft labels and the server distils the global model from them.
    distills: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        """The name the config used: built-in short name, else import path of the class."""
        return self.name or f"{type(self).__module__}.{type(self).__qualname__}"

    @property
    def needs_class_counts(self) -> bool:
        """Whether clients must report per-class example counts (their ``describe`` reply)."""
        return False

    @classmethod
    def from_node(cls, node: Any, key: str) -> "Algorithm":
        return algorithm_from_node(node, key)

    def to_node(self) -> dict[str, Any]:
        builtin = ALGORITHMS.get(self.name) is type(self)
        head = {"name": self.name} if builtin else {"_target_": self.kind}
        return {
            **head,
            **{f.name: to_node(getattr(self, f.name)) for f in dataclasses.fields(self)},
        }


@dataclasses.dataclass(frozen=True)
class Distillation(Algorithm):
    """The options every federated-distillation algorithm shares (each an ablation row)."""

    distills: ClassVar[bool] = True

    temperature: float = 1.0  # distillation temperature (clients and the global model)
    combine: Component = component_field("combine", "mean")
    postprocess: Component | None = component_field("postprocess", None)
    consensus_memory: bool = False  # average each public sample's consensus over rounds
    memory_decay: float = 1.0  # < 1: each round, earlier rounds' weight is multiplied by this
    # what clients digest: the consensus, the global model, or nothing (null: clients that keep
    # to their own data, clients.digest_epochs=0 under the sequential schedule)
    client_teacher: str | None = "consensus"
    distill_on_memory: bool = False  # the server distils on every remembered public sample
    # the server also distils on the previous N rounds' samples (or views) with the consensus
    # they got then: a teacher of several rounds' clients, where views rule out per-sample memory
    replay_rounds: int = 0
    codec: Component = component_field("codec", "float16")  # soft labels on the wire, both ways

    def __post_init__(self) -> None:
        _require(self.temperature > 0, "temperature", "must be > 0")
        _require(0 < self.memory_decay <= 1, "memory_decay", "must be in (0, 1]")
        _require(
            self.consensus_memory or self.memory_decay == 1.0,
            "memory_decay",
            "needs algorithm.consensus_memory=true (it fades the running consensus)",
        )
        _require(
            self.consensus_memory or not self.distill_on_memory,
            "distill_on_memory",
            "needs algorithm.consensus_memory=true",
        )
        _require(self.replay_rounds >= 0, "replay_rounds", "must be >= 0 (0: off)")
        _require(
            not (self.replay_rounds and self.distill_on_memory),
            "replay_rounds",
            "repeats what algorithm.distill_on_memory already distils on: use one of the two",
        )
        _require(
            self.client_teacher is None or self.client_teacher in CLIENT_TEACHERS,
            "client_teacher",
            f"must be one of {list(CLIENT_TEACHERS)} or null (no teacher), "
            f"got {self.client_teacher!r}",
        )

    @property
    def combine_rule(self) -> Any:
        return self.combine.instantiate()

    @property
    def postprocessor(self) -> Any:
        return None if self.postprocess is None else self.postprocess.instantiate()

    @property
    def soft_label_codec(self) -> Any:
        """The :class:`fedkd.codecs.Codec` both sides encode soft labels with."""
        return self.codec.instantiate()

    @property
    def needs_class_counts(self) -> bool:
        return bool(getattr(self.combine.cls, "needs_class_counts", False))


@dataclasses.dataclass(frozen=True)
class LogitDistillation(Distillation):
    """Algorithms whose clients share logits. A logit's scale is the client's to choose: one
    client scaling its logits by 1e6 would own a mean. With ``bound_logits`` (the default) each
    client's rows are centred and scaled down to at most the round's median scale for that
    sample (:func:`fedkd.aggregation.bound_logit_scale`), so no client outweighs a typical one."""

    bound_logits: bool = True


@dataclasses.dataclass(frozen=True)
class FedMD(LogitDistillation):
    """FedMD (Li & Wang 2019, arXiv:1910.03581): logits; consensus ``softmax(mean / T)``."""

    name: ClassVar[str] = "fedmd"
    server: ClassVar[str] = "server.strategies.fedmd.FedMD"
    client: ClassVar[str | None] = "clients.fedmd.FedMDClient"

    temperature: float = 2.0


@dataclasses.dataclass(frozen=True)
class DSFL(Distillation):
    """DS-FL (Itahara et al. 2021, arXiv:2008.06180): probabilities; ERA-sharpened mean."""

    name: ClassVar[str] = "dsfl"
    server: ClassVar[str] = "server.strategies.dsfl.DSFL"
    client: ClassVar[str | None] = "clients.dsfl.DSFLClient"

    postprocess: Component | None = component_field("postprocess", "era")


@dataclasses.dataclass(frozen=True)
class DSFLPlus(DSFL):
    """DS-FL with fedkd's measured additions -- the recommended method and the default.

    On top of DS-FL: clients weighted per class by the class counts they report and by their
    history of agreeing with the crowd (``combine: class_weighted_reputation``: robust to lying
    clients, at no measured cost with honest ones), a running consensus per public sample in
    which older rounds fade (``consensus_memory``, ``memory_decay: 0.8``), and clients taught by
    the distilled global model (``client_teacher: global``); with ``clients.kd_schedule=joint``
    (the default) it is the benchmark's best soft-label method (README, "Benchmark"; measured
    with ``combine: class_weighted``, the same merge without the history). Its server and client
    parts are DS-FL's.
    """

    name: ClassVar[str] = "dsfl_plus"

    combine: Component = component_field("combine", "class_weighted_reputation")
    consensus_memory: bool = True
    memory_decay: float = 0.8
    client_teacher: str | None = "global"


@dataclasses.dataclass(frozen=True)
class FedDF(LogitDistillation):
    """FedDF (Lin et al. 2020, arXiv:2006.07242), soft-label variant: early-stopped server
    distillation; clients digest the global model."""

    name: ClassVar[str] = "feddf"
    server: ClassVar[str] = "server.strategies.feddf.FedDF"
    client: ClassVar[str | None] = "clients.feddf.FedDFClient"

    client_teacher: str | None = "global"
    holdout_fraction: float = 0.2  # public share held out for early stopping
    patience: int = 2  # distillation epochs without improvement before stopping

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(0 < self.holdout_fraction < 1, "holdout_fraction", "must be in (0, 1)")
        _require(self.patience >= 1, "patience", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class FedAvg(Algorithm):
    """The weight-averaging baseline (McMahan et al. 2017) through Flower's own FedAvg."""

    name: ClassVar[str] = "fedavg"
    server: ClassVar[str] = "server.strategies.fedavg.FedAvgBaseline"
    shares_weights: ClassVar[bool] = True


@dataclasses.dataclass(frozen=True)
class Local(Algorithm):
    """Local-only baseline: each client alone on its private data (no Flower)."""

    name: ClassVar[str] = "local"
    server: ClassVar[str] = "fedkd.baselines.run_local"
    in_process: ClassVar[bool] = True


@dataclasses.dataclass(frozen=True)
class Centralized(Algorithm):
    """Upper bound: the global architecture on the union of all private data (no Flower)."""

    name: ClassVar[str] = "centralized"
    server: ClassVar[str] = "fedkd.baselines.run_centralized"
    in_process: ClassVar[bool] = True


#: Built-in algorithms by the short name a config uses; anything else is an import path.
ALGORITHMS: Final[dict[str, type[Algorithm]]] = {
    cls.name: cls for cls in (FedMD, DSFL, DSFLPlus, FedDF, FedAvg, Local, Centralized)
}


def algorithm_from_node(node: Any, key: str = "algorithm") -> Algorithm:
    """The typed algorithm config of a ``{name: <built-in> | _target_: <class>, ...}`` node."""
    spec = component(node, "algorithm", key)
    cls = spec.cls
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise ConfigError(f"{key}: {spec.kind} is not a fedkd.algorithms.Algorithm subclass")
    if not getattr(cls, "server", None):
        raise ConfigError(f"{key}: {spec.kind} names no server part (class variable 'server')")
    algorithm: Algorithm = spec.instantiate()
    return algorithm


__all__ = [
    "ALGORITHMS",
    "DSFL",
    "Algorithm",
    "Centralized",
    "DSFLPlus",
    "Distillation",
    "FedAvg",
    "FedDF",
    "FedMD",
    "Local",
    "algorithm_from_node",
]
