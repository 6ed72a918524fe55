"""An entropy-weighted consensus: a complete federated-distillation algorithm outside fedkd.

Three parts, all in this module and selected from config (``conf/algorithm/entropy_weighted.yaml``):

* :class:`EntropyWeighted` -- the algorithm's config schema (its own keys are typed and checked;
  a key it does not take is refused); its class variables name the server and client parts;
* :class:`EntropyWeightedStrategy` -- the server part: fedkd's round template, stating the one
  formula that turns merged soft labels into probabilities;
* :class:`TemperedClient` -- the client part: what a client shares (tempered probabilities).

The consensus weighs, for every public sample, each client by how sure it is about that sample:
``w[c, n] ∝ exp(-sharpness * H(p[c, n]))`` with ``H`` the entropy of client ``c``'s prediction.
A client guessing on a sample unlike its private data (high entropy) says little about it; one
that recognises it (low entropy) leads. This is :class:`EntropyWeightedMean`, a combine rule, so
it also plugs into any other algorithm as ``algorithm.combine``.

Run it from this directory (``fedkd`` ships the directory as the Flower app, so this module
travels to the simulation's workers and to every SuperNode)::

    fedkd experiment=digits_quick algorithm=entropy_weighted
"""

import dataclasses
from typing import ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from clients.base import KDClient
from fedkd.aggregation import Combined, normalize_rows
from fedkd.algorithms import Distillation
from fedkd.schema import Component, component_field
from server.strategies.base import DistillationStrategy


@dataclasses.dataclass(frozen=True)
class EntropyWeightedMean:
    """Combine rule: per-sample weights ``exp(-sharpness * entropy)`` over clients.

    ``stack`` (C, n, K) holds probabilities; returns their weighted mean (n, K).
    """

    needs_class_counts: ClassVar[bool] = False
    uses_history: ClassVar[bool] = False

    sharpness: float = 1.0

    def __post_init__(self) -> None:
        if self.sharpness < 0:
            raise ValueError(f"sharpness must be >= 0, got {self.sharpness}")

    def __call__(
        self, stack: NDArray[np.floating], num_examples: NDArray[np.floating], class_counts: None
    ) -> Combined:
        probs = np.asarray(stack, dtype=np.float64)  # (C, n, K)
        entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=2)  # (C, n)
        logits = -self.sharpness * entropy
        weights = np.exp(logits - logits.max(axis=0, keepdims=True))
        weights /= weights.sum(axis=0, keepdims=True)  # (C, n), sums to 1 over clients
        return Combined(np.einsum("cn,cnk->nk", weights, probs).astype(np.float32))


@dataclasses.dataclass(frozen=True)
class EntropyWeighted(Distillation):
    """The algorithm's config: fedkd's distillation options plus its own ``share_temperature``."""

    server: ClassVar[str] = "entropy_weighted.EntropyWeightedStrategy"
    client: ClassVar[str | None] = "entropy_weighted.TemperedClient"

    share_temperature: float = 1.0
    combine: Component = component_field("combine", "entropy_weighted.EntropyWeightedMean")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.share_temperature <= 0:
            raise ValueError(f"share_temperature must be > 0, got {self.share_temperature}")


class EntropyWeightedStrategy(DistillationStrategy):
    """Server part: clients send probabilities; merged rows are renormalised to probabilities."""

    soft_label_kind = "probs"

    def to_probs(self, scores: np.ndarray) -> np.ndarray:
        return normalize_rows(scores)


class TemperedClient(KDClient):
    """Client part: shares ``softmax(logits / share_temperature)`` (float16)."""

    soft_label_kind = "probs"

    def soft_labels(self, logits: Tensor) -> np.ndarray:
        assert isinstance(self.algorithm, EntropyWeighted)
        tempered = logits.double() / self.algorithm.share_temperature
        return torch.softmax(tempered, dim=-1).numpy().astype(np.float16)
