"""Aggregation of client soft labels into a consensus: pure numpy.

Every function takes a stack of client predictions of shape ``(num_clients, num_samples,
num_classes)`` and returns ``(num_samples, num_classes)``. Inputs may be float16 (as sent on the
wire); all arithmetic is done in float64 and the result is float32.
"""

from dataclasses import dataclass, field
from typing import ClassVar, Final, Protocol

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating]

ERA_TEMPERATURE: Final = 0.1


def softmax(logits: FloatArray, temperature: float = 1.0, axis: int = -1) -> NDArray[np.float64]:
    """Numerically stable ``softmax(logits / temperature)`` in float64."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _check_stack(stack: FloatArray) -> NDArray[np.float64]:
    arr = np.asarray(stack, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ValueError(
            f"expected (num_clients >= 1, num_samples, num_classes), got shape {arr.shape}"
        )
    return arr


def mean(stack: FloatArray, weights: FloatArray | None = None) -> NDArray[np.float32]:
    """Plain mean over clients (FedMD's consensus on logits). ``weights`` is ignored."""
    return _check_stack(stack).mean(axis=0).astype(np.float32)


def weighted_mean(stack: FloatArray, weights: FloatArray | None) -> NDArray[np.float32]:
    """Mean over clients weighted by ``weights`` (e.g. example counts), shape (num_clients,)."""
    arr = _check_stack(stack)
    if weights is None:
        return arr.mean(axis=0).astype(np.float32)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (arr.shape[0],) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(
            f"weights must be non-negative with a positive sum and shape ({arr.shape[0]},), "
            f"got {w!r}"
        )
    return np.tensordot(w / w.sum(), arr, axes=1).astype(np.float32)


def era(
    probs: FloatArray, weights: FloatArray | None = None, temperature: float = ERA_TEMPERATURE
) -> NDArray[np.float32]:
    """Entropy-reduction averaging (Itahara et al., DS-FL, IEEE TMC 2021, arXiv:2008.06180).

    ``softmax(mean_c probs[c] / T)``: averaging the clients' probabilities and sharpening the
    result with a low temperature (``T = 0.1`` in the paper) lowers the consensus' entropy,
    which counters the blurring that averaging non-IID clients causes.
    """
    return softmax(weighted_mean(probs, weights), temperature=temperature).astype(np.float32)


def as_probs(stack: FloatArray) -> NDArray[np.float64]:
    """Client scores (C, n, K) as probabilities: as they are where every row already is one
    (non-negative, summing to 1), else their softmax (logits)."""
    arr = _check_stack(stack)
    if (arr >= 0).all() and np.allclose(arr.sum(axis=2), 1.0, atol=1e-2):
        return arr
    return softmax(arr)


def sample_confidence(stack: FloatArray, power: float) -> NDArray[np.float64]:
    """Each client's relative confidence on each sample (C, n), for per-sample weighting.

    A client's confidence on a sample is one minus the normalised entropy of its prediction,
    ``1 - H(p) / log K`` (1: one class; 0: uniform), raised to ``power``; each client's row is
    then divided by its own mean. So a client speaks louder where it is surer than it usually
    is, and never louder overall: one that is confident everywhere -- a sharpened lie -- gets
    the same total say as before. ``power`` 0 gives all ones.
    """
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    probs = as_probs(stack)
    if power == 0:
        return np.ones(probs.shape[:2])
    num_classes = probs.shape[2]
    entropy = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(axis=2)
    confidence = np.clip(1.0 - entropy / np.log(num_classes), 0.0, 1.0) ** power
    confidence += 1e-6  # a client uniform everywhere still counts, evenly
    return confidence / confidence.mean(axis=1, keepdims=True)


def class_weighted_mean(
    probs: FloatArray, class_weights: FloatArray, sample_weights: FloatArray | None = None
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Per-class weighted average of client scores (probabilities or logits).

    ``consensus[n, c] = sum_k w[k, c] * probs[k, n, c] / sum_k w[k, c]``: for each class, the
    clients that hold more examples of it speak louder about it. Under label skew a client that
    never saw class ``c`` cannot tell a ``c`` from its own classes, so its say on ``c`` is ~0.
    Classes no client holds fall back to the plain mean.

    Parameters
    ----------
    probs : (num_clients, num_samples, num_classes)
    class_weights : (num_clients, num_classes), non-negative (e.g. per-class example counts)
    sample_weights : (num_clients, num_samples), non-negative, or None (all ones): each
        client's weight is also scaled per sample (e.g. :func:`sample_confidence`; 0 where it
        abstained). A sample whose class weight is 0 for every client falls back to the mean.

    Rows of probabilities no longer sum to 1: the algorithm's ``to_probs`` renormalises them.

    Returns
    -------
    (consensus (num_samples, num_classes) float32, total weight per class (num_classes,))
    """
    arr = _check_stack(probs)
    w = np.asarray(class_weights, dtype=np.float64)
    if w.shape != (arr.shape[0], arr.shape[2]) or (w < 0).any():
        raise ValueError(
            f"class_weights must be non-negative with shape {(arr.shape[0], arr.shape[2])}, "
            f"got {w.shape}"
        )
    totals = w.sum(axis=0)  # (K,)
    s = np.ones(arr.shape[:2]) if sample_weights is None else np.asarray(sample_weights, float)
    if s.shape != arr.shape[:2] or (s < 0).any():
        raise ValueError(
            f"sample_weights must be non-negative with shape {arr.shape[:2]}, got {s.shape}"
        )
    per_sample = np.einsum("kc,kn->nc", w, s)  # (n, K): each sample's total weight per class
    safe = np.where(per_sample > 0, per_sample, 1.0)
    weighted = np.einsum("kc,kn,knc->nc", w, s, arr) / safe
    weighted = np.where(per_sample > 0, weighted, arr.mean(axis=0))
    return weighted.astype(np.float32), totals


def cap_shares(weights: FloatArray, cap: float) -> NDArray[np.float64]:
    """Client weights (C,) or (C, K) rescaled, column by column, so that no client holds more
    than ``cap`` of a column's total: capped clients get exactly ``cap``, the others share the
    rest in their original proportions (water-filling). ``cap`` >= 1 leaves them as they are;
    a ``cap`` below ``1 / C`` cannot be met and gives every client the same weight.

    The result is normalised: each column sums to 1 (columns of zeros stay zero).
    """
    w = np.asarray(weights, dtype=np.float64)
    flat = w.ndim == 1
    w = w[:, None] if flat else w
    totals = w.sum(axis=0)
    shares = np.divide(w, totals, out=np.zeros_like(w), where=totals > 0)
    if cap < 1:
        num_clients = w.shape[0]
        for col in np.flatnonzero(totals > 0):
            s = shares[:, col]
            if cap * num_clients <= 1:
                shares[:, col] = 1.0 / num_clients
                continue
            capped = np.zeros(num_clients, dtype=bool)
            while True:  # at most C passes: each one caps at least one more client
                free = ~capped
                rest = 1.0 - cap * capped.sum()
                scaled = np.where(free, s * rest / s[free].sum(), cap)
                over = free & (scaled > cap)
                if not over.any():
                    shares[:, col] = scaled
                    break
                capped |= over
    return shares[:, 0] if flat else shares


def bound_logit_scale(stack: FloatArray) -> NDArray[np.float32]:
    """Client logits (C, n, K) centred per row, and each row scaled down to at most the median
    standard deviation of the clients' rows for that sample: the softmax of a row keeps its
    argmax, a typical client keeps its logits, and a client sending larger ones (by 1e6, say)
    counts in a mean like a typical one -- no more."""
    arr = _check_stack(stack)
    centred = arr - arr.mean(axis=2, keepdims=True)
    std = centred.std(axis=2, keepdims=True)  # (C, n, 1)
    cap = np.median(std, axis=0, keepdims=True)  # (1, n, 1)
    scale = np.minimum(1.0, cap / np.where(std > 0, std, 1.0))
    return (centred * scale).astype(np.float32)


def clip_counts(counts: FloatArray, ratio: float) -> NDArray[np.float64]:
    """Per-class counts (C, K) of clients whose total exceeds ``ratio`` times the median total
    scaled down to that bound (their class proportions kept): reported counts are untrusted,
    and inflating them buys at most ``ratio`` times a typical client's say."""
    arr = np.asarray(counts, dtype=np.float64)
    totals = arr.sum(axis=1)
    bound = ratio * np.median(totals)
    scale = np.minimum(1.0, bound / np.where(totals > 0, totals, 1.0))
    return arr * scale[:, None]


def normalize_rows(scores: FloatArray) -> NDArray[np.float32]:
    """Non-negative rows (n, K) rescaled to sum to 1 (all-zero rows become uniform)."""
    arr = np.asarray(scores, dtype=np.float64)
    rows = arr.sum(axis=1, keepdims=True)
    uniform = np.full_like(arr, 1.0 / arr.shape[1])
    return np.where(rows > 0, arr / np.where(rows > 0, rows, 1.0), uniform).astype(np.float32)


# --------------------------------------------------------------------------- combine rules
# A combine rule merges the clients' soft labels (C, n, K) -- in the algorithm's own space,
# logits or probabilities -- into one (n, K), before the algorithm's ``to_probs``. It is a typed
# config node (``algorithm.combine``): a built-in name or a class by import path.


@dataclass(frozen=True)
class Combined:
    """What a combine rule returns: merged scores (n, K); the weight each class got (K,) where
    the rule weighs clients per class (the running consensus remembers rounds by it); and each
    client's share of the merge (C,) where the rule judges clients (the server quarantines a
    client out-weighed round after round)."""

    scores: NDArray[np.float32]
    class_weight: NDArray[np.float64] | None = None
    client_weight: NDArray[np.float64] | None = None


class CombineRule(Protocol):
    """``(stack (C, n, K), num_examples (C,), class_counts (C, K) | None) -> Combined``.

    A rule that sets ``uses_history = True`` is also passed ``client_ids`` (C,) and is kept for
    the whole run, so it can remember what each client sent in earlier rounds.
    """

    #: True: clients must report per-class example counts (once, when they describe
    #: themselves); ``class_counts`` is then never None.
    needs_class_counts: ClassVar[bool]
    #: True: also passed ``client_ids`` (and kept for the run, to remember earlier rounds).
    uses_history: ClassVar[bool]

    def __call__(
        self, stack: FloatArray, num_examples: FloatArray, class_counts: FloatArray | None
    ) -> Combined: ...


@dataclass(frozen=True)
class Mean:
    """Every client counts the same."""

    needs_class_counts: ClassVar[bool] = False
    uses_history: ClassVar[bool] = False

    def __call__(
        self, stack: FloatArray, num_examples: FloatArray, class_counts: FloatArray | None
    ) -> Combined:
        return Combined(mean(stack))


@dataclass(frozen=True)
class _CappedShares:
    """Base of the rules that weigh clients by the counts they report (untrusted): ``max_share``
    < 1 caps any one client's share of the weight (of each class's, for per-class rules)."""

    max_share: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.max_share <= 1:
            raise ValueError(f"max_share must be in (0, 1], got {self.max_share}")


@dataclass(frozen=True)
class WeightedMean(_CappedShares):
    """Clients weighted by their number of private examples."""

    needs_class_counts: ClassVar[bool] = False
    uses_history: ClassVar[bool] = False

    def __call__(
        self, stack: FloatArray, num_examples: FloatArray, class_counts: FloatArray | None
    ) -> Combined:
        return Combined(weighted_mean(stack, cap_shares(num_examples, self.max_share)))


@dataclass(frozen=True)
class ClassWeighted(_CappedShares):
    """For each class, clients weighted by how many examples of it they hold
    (:func:`class_weighted_mean`): under label skew a client cannot speak for a class it never
    saw."""

    needs_class_counts: ClassVar[bool] = True
    uses_history: ClassVar[bool] = False
    #: optional: the rule takes ``sample_weights`` (C, n), e.g. 0 where a client abstained
    takes_sample_weights: ClassVar[bool] = True

    #: > 0: each client's say is also scaled per sample by its relative confidence there
    #: (:func:`sample_confidence`, this power); 0: every sample alike
    confidence: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.confidence < 0:
            raise ValueError(f"confidence must be >= 0, got {self.confidence}")

    def __call__(
        self,
        stack: FloatArray,
        num_examples: FloatArray,
        class_counts: FloatArray | None,
        sample_weights: FloatArray | None = None,
    ) -> Combined:
        if class_counts is None:
            raise ValueError("class-weighted combining needs the clients' class counts")
        counts = np.asarray(class_counts, dtype=np.float64)
        if self.max_share < 1:  # reported counts are untrusted: inflating them buys at most this
            counts = cap_shares(counts, self.max_share) * counts.sum(axis=0)
        per_sample = _per_sample(stack, self.confidence, sample_weights)
        scores, totals = class_weighted_mean(stack, counts, per_sample)
        return Combined(scores, totals)


def _per_sample(
    stack: FloatArray, confidence: float, sample_weights: FloatArray | None
) -> NDArray[np.float64] | None:
    """The per-sample weights (C, n): relative confidence (``confidence`` > 0) times the
    server's own ``sample_weights`` (0 where a client abstained); None: all ones."""
    weights = sample_confidence(stack, confidence) if confidence > 0 else None
    if sample_weights is None:
        return weights
    given = np.asarray(sample_weights, dtype=np.float64)
    return given if weights is None else weights * given


@dataclass(frozen=True)
class Median:
    """Coordinate-wise median over clients: one liar per coordinate cannot move it beyond the
    honest values (breakdown point 1/2). Probabilities: the algorithm's ``to_probs``
    renormalises the rows."""

    needs_class_counts: ClassVar[bool] = False
    uses_history: ClassVar[bool] = False

    def __call__(
        self, stack: FloatArray, num_examples: FloatArray, class_counts: FloatArray | None
    ) -> Combined:
        return Combined(np.median(_check_stack(stack), axis=0).astype(np.float32))


@dataclass(frozen=True)
class TrimmedMean:
    """Coordinate-wise trimmed mean: per (sample, class), the ``floor(fraction * C)`` lowest and
    as many highest client values are dropped and the rest averaged (Yin et al. 2018,
    arXiv:1803.01498). ``fraction`` 0 is the mean; just under 0.5 approaches the median."""

    needs_class_counts: ClassVar[bool] = False
    uses_history: ClassVar[bool] = False

    fraction: float = 0.2

    def __post_init__(self) -> None:
        if not 0 <= self.fraction < 0.5:
            raise ValueError(f"fraction must be in [0, 0.5), got {self.fraction}")

    def __call__(
        self, stack: FloatArray, num_examples: FloatArray, class_counts: FloatArray | None
    ) -> Combined:
        arr = np.sort(_check_stack(stack), axis=0)
        cut = int(np.floor(self.fraction * arr.shape[0]))
        kept = arr[cut : arr.shape[0] - cut]
        return Combined(kept.mean(axis=0).astype(np.float32))


@dataclass(frozen=True)
class Reputation:
    """History-based weights: a client that keeps disagreeing with the crowd loses its say.

    Each round every client's distance to the coordinate-wise median of all replies is measured
    (mean total variation over the samples, ``0.5 * |p_c - median|_1``; for probabilities) and
    folded into its record, ``record = decay * record + (1 - decay) * distance``; the merge is
    the mean weighted by ``exp(-sharpness * (record - min record))``. A liar far from the median
    round after round is out-weighed even when it sends what the median would let through in
    one round; a client that disagreed once recovers. Its memory lives in this object, which
    the server keeps for the whole run.
    """

    needs_class_counts: ClassVar[bool] = False
    uses_history: ClassVar[bool] = True

    decay: float = 0.7  # weight of the past in a client's record
    sharpness: float = 10.0  # how fast the weight falls with the record

    _records: dict[int, float] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {self.decay}")
        if self.sharpness < 0:
            raise ValueError(f"sharpness must be >= 0, got {self.sharpness}")

    def __call__(
        self,
        stack: FloatArray,
        num_examples: FloatArray,
        class_counts: FloatArray | None,
        client_ids: list[int] | None = None,
    ) -> Combined:
        arr = _check_stack(stack)
        ids = list(range(arr.shape[0])) if client_ids is None else list(client_ids)
        self._record(arr, ids)
        weights = self.weights(ids)
        return Combined(weighted_mean(arr, weights), client_weight=weights)

    def _record(
        self,
        arr: NDArray[np.float64],
        client_ids: list[int],
        relevance: NDArray[np.float64] | None = None,
    ) -> None:
        """Fold this round's distances to the median into the clients' records: each client's
        mean total variation over the samples, weighted by ``relevance`` (C, n) where given."""
        tv = 0.5 * np.abs(arr - np.median(arr, axis=0)).sum(axis=2)  # (C, n)
        if relevance is None:
            distance = tv.mean(axis=1)
        else:
            mass = relevance.sum(axis=1)
            judged = (tv * relevance).sum(axis=1) / np.where(mass > 0, mass, 1.0)
            distance = np.where(mass > 0, judged, tv.mean(axis=1))  # no evidence: all samples
        for cid, d in zip(client_ids, distance, strict=True):
            old = self._records.get(cid)
            self._records[cid] = (
                float(d) if old is None else self.decay * old + (1 - self.decay) * d
            )

    def weights(self, client_ids: list[int]) -> NDArray[np.float64]:
        """The weights the clients would get now (for logs and tests), normalised."""
        record = np.array([self._records[c] for c in client_ids])
        weights = np.exp(-self.sharpness * (record - record.min()))
        return weights / weights.sum()


@dataclass(frozen=True)
class ClassWeightedReputation(Reputation, _CappedShares):
    """:class:`Reputation` on top of class weighting (:class:`ClassWeighted`): for each class,
    a client's say is its (capped) example count of that class times its reputation weight. The
    recommended method's per-class merge, with a liar's history taking its say away.

    Under label skew an honest client cannot know the classes it never saw, so it is judged
    only on the samples the median assigns to a class it holds (at least half an even share of
    its examples): where it can be right. A client claiming classes to be judged on them gets a
    say on exactly those, and is judged there. Reported counts are clipped at
    ``max_count_ratio`` times the round's median total (:func:`clip_counts`) before anything
    else: a liar inflating its counts cannot buy back the say its history took away.
    """

    needs_class_counts: ClassVar[bool] = True
    takes_sample_weights: ClassVar[bool] = True

    max_count_ratio: float = 3.0
    #: > 0: each client's say is also scaled per sample by its relative confidence there
    #: (:func:`sample_confidence`, this power); 0: every sample alike
    confidence: float = 0.0

    def __post_init__(self) -> None:
        Reputation.__post_init__(self)
        _CappedShares.__post_init__(self)
        if self.max_count_ratio < 1:
            raise ValueError(f"max_count_ratio must be >= 1, got {self.max_count_ratio}")
        if self.confidence < 0:
            raise ValueError(f"confidence must be >= 0, got {self.confidence}")

    def __call__(
        self,
        stack: FloatArray,
        num_examples: FloatArray,
        class_counts: FloatArray | None,
        client_ids: list[int] | None = None,
        sample_weights: FloatArray | None = None,
    ) -> Combined:
        if class_counts is None:
            raise ValueError("class-weighted combining needs the clients' class counts")
        arr = _check_stack(stack)
        ids = list(range(arr.shape[0])) if client_ids is None else list(client_ids)
        counts = clip_counts(class_counts, self.max_count_ratio)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)  # (C, K)
        holds = share >= 0.5 / counts.shape[1]
        median_class = np.median(arr, axis=0).argmax(axis=1)  # (n,)
        relevance = holds[:, median_class].astype(np.float64)
        if sample_weights is not None:  # nor where it abstained
            relevance *= np.asarray(sample_weights, dtype=np.float64) > 0
        self._record(arr, ids, relevance)
        reputation = self.weights(ids)  # (C,)
        if self.max_share < 1:
            counts = cap_shares(counts, self.max_share) * counts.sum(axis=0)
        per_sample = _per_sample(arr, self.confidence, sample_weights)
        scores, totals = class_weighted_mean(arr, counts * reputation[:, None], per_sample)
        return Combined(scores, totals, client_weight=reputation)


COMBINE_RULES: Final[dict[str, type[CombineRule]]] = {
    "mean": Mean,
    "weighted_mean": WeightedMean,
    "class_weighted": ClassWeighted,
    "median": Median,
    "trimmed_mean": TrimmedMean,
    "reputation": Reputation,
    "class_weighted_reputation": ClassWeightedReputation,
}


# ------------------------------------------------------------------------ post-processing
# Optional, after ``to_probs`` (``algorithm.postprocess``): probabilities (n, K) -> probabilities.


@dataclass(frozen=True)
class ERA:
    """Entropy-reduction averaging's sharpening step (DS-FL): ``softmax(probs / temperature)``."""

    temperature: float = ERA_TEMPERATURE

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def __call__(self, probs: FloatArray) -> NDArray[np.float32]:
        return softmax(probs, temperature=self.temperature).astype(np.float32)


POSTPROCESSORS: Final[dict[str, type[ERA]]] = {"era": ERA}
