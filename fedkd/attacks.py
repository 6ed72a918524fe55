"""Adversarial clients you can switch on: what a lying client sends instead of its soft labels.

An attack is a typed config node (``attack=wrong_class attack.fraction=0.3``, or
``attack.clients=[1, 4]``): the behaviour's own keys plus which clients attack. It wraps the
client side -- the honest round runs, then the attacker replaces what it shares -- so the same
attacks run in simulation and in deployment. Every lie is a well-formed reply (finite, the right
shape, probability rows where the algorithm shares probabilities): validation cannot catch it;
only a robust ``algorithm.combine`` can out-vote it.

Behaviours act on probabilities ``(n, K)``; an algorithm that shares logits receives
``log(probs)`` (valid logits of the same distribution, clipped to stay finite).

References
----------
Roux, Zimmer and Pokutta, "On the Byzantine-resilience of distillation-based federated
learning", 2024, arXiv:2402.12265 (the least-likely-class and class-prior attacks).
"""

from dataclasses import dataclass
from typing import ClassVar, Final, Protocol

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating]
_LOG_FLOOR: Final = 1e-6  # probabilities are clipped here before log(): logits stay finite


@dataclass(frozen=True)
class AttackContext:
    """What an attacker knows when it lies: its honest probabilities on the subset, and the
    teacher it was sent (the previous round's consensus) on the same samples, where it has one:
    the best estimate of the honest clients' mean a colluding attacker could have."""

    honest: NDArray[np.float64]  # (n, K)
    teacher: NDArray[np.float64] | None  # (n, K)
    rng: np.random.Generator
    # what this attacker sent before for these samples (NaN rows: never asked), for attacks
    # that remember (``remembers = True``)
    sent_before: NDArray[np.float64] | None = None  # (n, K)

    @property
    def honest_mean(self) -> NDArray[np.float64]:
        return self.honest if self.teacher is None else self.teacher


class Attack(Protocol):
    """``context -> probabilities (n, K)`` that the attacker shares instead of its own."""

    def __call__(self, context: AttackContext) -> NDArray[np.float64]: ...


def _one_hot(classes: NDArray[np.integer], num_classes: int) -> NDArray[np.float64]:
    return np.eye(num_classes)[classes]


@dataclass(frozen=True)
class WrongClass:
    """All mass on a class that is not the attacker's own prediction (the next one)."""

    def __call__(self, context: AttackContext) -> NDArray[np.float64]:
        k = context.honest.shape[1]
        return _one_hot((context.honest.argmax(axis=1) + 1) % k, k)


@dataclass(frozen=True)
class RandomProbs:
    """Uniformly random probability rows (Dirichlet(1))."""

    def __call__(self, context: AttackContext) -> NDArray[np.float64]:
        n, k = context.honest.shape
        return context.rng.dirichlet(np.ones(k), size=n)


@dataclass(frozen=True)
class LabelSwap:
    """The attacker's own predictions with two classes' columns swapped."""

    first: int = 0
    second: int = 1

    def __call__(self, context: AttackContext) -> NDArray[np.float64]:
        out = context.honest.copy()
        out[:, [self.first, self.second]] = out[:, [self.second, self.first]]
        return out


@dataclass(frozen=True)
class Sharpened:
    """A lie that looks like a confident, honest prediction: the attacker's probabilities moved
    one class over and sharpened, ``softmax(log(shifted) / temperature)``."""

    temperature: float = 0.3

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def __call__(self, context: AttackContext) -> NDArray[np.float64]:
        shifted = np.roll(context.honest, 1, axis=1)
        z = np.log(np.clip(shifted, _LOG_FLOOR, 1.0)) / self.temperature
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Collude:
    """Every attacker puts all mass on the same class (``target``)."""

    target: int = 0

    def __call__(self, context: AttackContext) -> NDArray[np.float64]:
        n, k = context.honest.shape
        return _one_hot(np.full(n, self.target), k)


@dataclass(frozen=True)
class LeastLikely:
    """LMA (Roux et al. 2024): all mass on the class the honest mean finds least likely --
    the lie that moves a median or trimmed mean the most."""

    def __call__(self, context: AttackContext) -> NDArray[np.float64]:
        k = context.honest.shape[1]
        return _one_hot(context.honest_mean.argmin(axis=1), k)


@dataclass(frozen=True)
class ClassPrior:
    """CPA (Roux et al. 2024): the honest mean with its class priors shifted -- each row
    multiplied by ``boost`` on class ``target`` and renormalised: plausible rows, biased."""

    target: int = 0
    boost: float = 10.0

    def __post_init__(self) -> None:
        if self.boost <= 0:
            raise ValueError(f"boost must be > 0, got {self.boost}")

    def __call__(self, context: AttackContext) -> NDArray[np.float64]:
        out = context.honest_mean.copy()
        out[:, self.target] *= self.boost
        return out / out.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Replay:
    """A free rider: for every public sample, the probabilities it sent the first time it was
    asked about it -- from round 1 on, an untrained student's answers, replayed forever."""

    remembers: ClassVar[bool] = True

    def __call__(self, context: AttackContext) -> NDArray[np.float64]:
        if context.sent_before is None:
            return context.honest
        known = np.isfinite(context.sent_before).all(axis=1, keepdims=True)  # (n, 1)
        return np.where(known, context.sent_before, context.honest)


#: Built-in attacks by the short name a config uses (``attack=wrong_class``).
ATTACKS: Final[dict[str, type[Attack]]] = {
    "wrong_class": WrongClass,
    "random": RandomProbs,
    "label_swap": LabelSwap,
    "sharpened": Sharpened,
    "collude": Collude,
    "least_likely": LeastLikely,
    "class_prior": ClassPrior,
    "replay": Replay,
}


def attackers(
    num_clients: int, fraction: float | None, clients: list[int] | None, seed: int
) -> set[int]:
    """The attacking client ids: ``clients`` if given, else a seeded ``round(fraction * n)``
    of them (the same on every node: it depends only on the config)."""
    if clients is not None or fraction is None:
        return set(clients or ())
    rng = np.random.default_rng([seed, 0xA77AC])
    count = round(fraction * num_clients)
    return {int(c) for c in rng.choice(num_clients, size=count, replace=False)}


def as_shared(probs: NDArray[np.float64], kind: str) -> NDArray[np.float16]:
    """What the attacker puts on the wire: probabilities, or their logarithm as logits."""
    if kind == "logits":
        return np.log(np.clip(probs, _LOG_FLOOR, 1.0)).astype(np.float16)
    rows = probs / probs.sum(axis=1, keepdims=True)
    return rows.astype(np.float16)


Memory = dict[str, NDArray[np.generic]]  # an attacker's memory: "indices" (m,), "probs" (m, K)


def lie(
    attack: Attack,
    shared: FloatArray,
    kind: str,
    public_indices: NDArray[np.integer],
    teacher_indices: NDArray[np.integer] | None,
    teacher_probs: FloatArray | None,
    rng: np.random.Generator,
    memory: Memory | None = None,
) -> tuple[NDArray[np.float16], Memory]:
    """Replace what an honest client would share (``shared``, (n, K) ``kind`` = probs or logits,
    on ``public_indices``) by the attack's output, in the same form. The teacher the client was
    sent counts as the honest mean where it covers this round's samples. An attack that
    ``remembers`` gets what it sent before (``memory``) and returns its memory updated with this
    round's first answers; others return an empty memory."""
    values = np.asarray(shared, dtype=np.float64)
    if kind == "logits":
        values = np.exp(values - values.max(axis=1, keepdims=True))
    honest = values / values.sum(axis=1, keepdims=True)
    teacher = None
    if teacher_probs is not None and teacher_indices is not None:
        row = {int(i): r for r, i in enumerate(teacher_indices)}
        if all(int(i) in row for i in public_indices):
            teacher = np.asarray(teacher_probs, np.float64)[[row[int(i)] for i in public_indices]]
    remembers = getattr(attack, "remembers", False)
    before = _recall(memory, public_indices, honest.shape[1]) if remembers else None
    lies = attack(AttackContext(honest, teacher, rng, before))
    return as_shared(lies, kind), _remember(memory, public_indices, lies) if remembers else {}


def _recall(
    memory: Memory | None, indices: NDArray[np.integer], num_classes: int
) -> NDArray[np.float64]:
    """Rows sent before for ``indices`` (n, K); NaN where never sent."""
    out = np.full((len(indices), num_classes), np.nan)
    if memory:
        row = {int(i): r for r, i in enumerate(memory["indices"])}
        probs = np.asarray(memory["probs"], dtype=np.float64)
        for r, i in enumerate(indices):
            if int(i) in row:
                out[r] = probs[row[int(i)]]
    return out


def _remember(memory: Memory | None, indices: NDArray[np.integer], sent: FloatArray) -> Memory:
    """``memory`` plus the rows of samples sent for the first time (earlier rows are kept)."""
    old_idx = np.asarray(memory["indices"], np.int64) if memory else np.zeros(0, np.int64)
    old_probs = (
        np.asarray(memory["probs"], np.float32)
        if memory
        else np.zeros((0, sent.shape[1]), np.float32)
    )
    new = ~np.isin(indices, old_idx)
    return {
        "indices": np.concatenate([old_idx, np.asarray(indices, np.int64)[new]]),
        "probs": np.concatenate([old_probs, np.asarray(sent, np.float32)[new]]),
    }
