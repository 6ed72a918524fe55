"""The one training loop, parameterised by a loss function, plus prediction and evaluation.

Supervised training on private data, a client digesting the consensus and the server distilling
the global model are all :func:`train` with a different ``loss_fn`` and targets.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedkd.augment import Augment
from fedkd.losses import distillation_loss

# (logits (B, K), targets (B,) labels or (B, K) probs) -> named loss terms, including "total".
LossFn = Callable[[Tensor, Tensor], dict[str, Tensor]]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    seed: int
    weight_decay: float = 0.0
    augment: Augment = field(default_factory=Augment)  # on each batch's inputs, not targets


def local_epochs(num_examples: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """Passes a client makes over its ``num_examples``: ``epochs``, or more when that many give
    fewer than ``min_steps`` optimizer steps (``clients.min_local_steps``: a client with tens of
    examples still trains); 0 stays 0 (no local training).

    >>> local_epochs(50, 32, 1, 20), local_epochs(5000, 32, 1, 20), local_epochs(50, 32, 0, 20)
    (10, 1, 0)
    """
    if epochs == 0 or num_examples == 0:
        return epochs
    per_epoch = math.ceil(num_examples / batch_size)
    return max(epochs, math.ceil(min_steps / per_epoch))


def supervised_loss(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Cross-entropy on hard labels."""
    ce = F.cross_entropy(logits, labels)
    return {"ce": ce, "total": ce}


def make_kd_loss(temperature: float) -> LossFn:
    """Pure distillation toward soft targets (``targets`` are probabilities)."""

    def loss_fn(logits: Tensor, probs: Tensor) -> dict[str, Tensor]:
        return distillation_loss(logits, probs, labels=None, temperature=temperature)

    return loss_fn


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    loss_fn: LossFn,
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, float]:
    """Train ``model`` in place with Adam; return the mean loss terms of the last epoch.

    Parameters
    ----------
    model : nn.Module producing logits (N, K)
    x : Tensor, shape (N, C, H, W)
    targets : Tensor, shape (N,) int64 labels or (N, K) float probs -- whatever ``loss_fn`` takes
    loss_fn : LossFn
    cfg : TrainConfig; ``cfg.seed`` fixes the batch order and augmentation, so a run is
        reproducible
    optimizer : torch.optim.Optimizer, optional
        To carry optimizer state across calls; default: a fresh Adam with ``cfg.lr``.
    """
    if len(x) != len(targets):
        raise ValueError(f"x has {len(x)} samples but targets has {len(targets)}")
    if cfg.epochs == 0 or len(x) == 0:
        return {}
    if optimizer is None:
        optimizer = make_optimizer(model, cfg)
    # Dropout draws from torch's global generator: seed it here, in a forked state, so they
    # depend on ``cfg.seed`` alone -- not on what ran before in this process (another client
    # in the same simulation worker, a resumed run).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return _epochs(model, x, targets, loss_fn, cfg, optimizer)


def _epochs(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    loss_fn: LossFn,
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
) -> dict[str, float]:
    generator = torch.Generator().manual_seed(cfg.seed)
    model.train()
    totals: dict[str, float] = {}
    for _ in range(cfg.epochs):
        totals = {}
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            if len(batch) < 2 and len(x) >= 2:
                continue  # a lone sample makes BatchNorm fail and says little
            inputs = cfg.augment(x[batch], generator) if cfg.augment.active else x[batch]
            terms = loss_fn(model(inputs), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) * len(batch)
    return {name: total / len(x) for name, total in totals.items()}


@torch.no_grad()
def predict_logits(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Logits (N, K) in eval mode."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``(x, y)``."""
    logits = predict_logits(model, x, batch_size)
    loss = float(F.cross_entropy(logits, y))
    return float((logits.argmax(dim=1) == y).float().mean()), loss


def accuracy_of_probs(probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of soft labels (N, K) against hard labels (N,)."""
    return float((np.asarray(probs).argmax(axis=1) == np.asarray(labels)).mean())


def seed_everything(seed: int) -> None:
    """Seed torch (and numpy's legacy global RNG, which some libraries still use)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (run seed, round, client id, ...)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)


def loss_metric(key: str, terms: dict[str, float]) -> dict[str, float]:
    """``{key: total loss}`` of a training call, or nothing when it took no step (no epochs, no
    data, a spent DP budget): a loss never computed is not reported (the server rejects NaN)."""
    return {key: terms["total"]} if "total" in terms else {}
