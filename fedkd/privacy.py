"""Example-level differential privacy for a client's private records: DP-SGD with Opacus.

Every training step that touches a client's private data goes through Opacus: Poisson-sampled
batches, each example's gradient clipped to ``max_grad_norm``, Gaussian noise of standard
deviation ``noise_multiplier * max_grad_norm`` added to their sum (Abadi et al. 2016,
arXiv:1607.00133). The client's accountant (Opacus's RDP or PRV accountant) adds up every such
step over the whole run; its history travels with the student's state. Everything the client
sends afterwards -- soft labels on public samples, metrics -- is computed from the DP-trained
student and public data: post-processing, which spends no privacy of its own.

A step on the joint schedule's mixed batch (private examples plus teacher-labelled public
ones) is one DP-SGD step over the mixed set: every example's gradient is clipped and noised
alike, and the accountant charges the private examples' sampling rate ``batch / (private +
public)``, exactly the mechanism that ran. Steps on public data alone (the sequential
schedule's digest) are not DP steps and need none.

With a target ``epsilon``, the noise is calibrated so that the client's planned rounds spend
exactly it (:func:`calibrate`); a client asked to train once more than planned (sampling or
quarantine changed) would overspend, so it stops training instead (:meth:`PrivateTrainer.
can_afford`) and keeps answering with the student it has.
"""

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import torch
from opacus import GradSampleModule, PrivacyEngine
from opacus.accountants import create_accountant
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedkd.training import LossFn, TrainConfig, make_optimizer

log = logging.getLogger("fedkd.privacy")

ACCOUNTANTS: Final = ("rdp", "prv")

History = list[tuple[float, float, int]]  # (noise multiplier, sample rate, steps), Opacus's form


def unsupported_layers(model: nn.Module) -> list[str]:
    """Why DP-SGD cannot train ``model`` (empty: it can): layers Opacus cannot compute
    per-example gradients for, or that mix examples (BatchNorm)."""
    problems = [str(e) for e in ModuleValidator.validate(model.train(), strict=False)]
    if not problems:
        try:
            GradSampleModule(model).cleanup()
        except NotImplementedError as err:
            problems.append(str(err))
    return problems


def epsilon_spent(history: History, delta: float, accountant: str = "rdp") -> float:
    """The ε (at ``delta``) that ``history`` has spent; 0 for no steps."""
    if not history:
        return 0.0
    acc = create_accountant(accountant)
    acc.history = list(history)
    return float(acc.get_epsilon(delta=delta))


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    return max(1, math.ceil(num_examples / batch_size))


def plan_pass(num_examples: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """(sample rate, steps) of ``epochs`` Poisson-sampled passes over ``num_examples`` with an
    expected batch of ``batch_size``: what Opacus's accountant records for them."""
    per_epoch = steps_per_epoch(num_examples, batch_size)
    return 1.0 / per_epoch, per_epoch * epochs


def calibrate(
    epsilon: float,
    delta: float,
    plan: Sequence[tuple[float, int]],
    accountant: str,
    tolerance: float = 0.01,
) -> float:
    """The noise multiplier with which the passes in ``plan`` -- (sample rate, steps) each, as
    :func:`plan_pass` gives them; rates may differ from pass to pass -- spend ``epsilon`` at
    ``delta``, within ``tolerance`` below it (bisection on the accountant's own ε, as Opacus's
    ``get_noise_multiplier`` does for a single rate)."""
    if not plan:
        raise ValueError("nothing to calibrate: the plan has no passes")

    def spent(sigma: float) -> float:
        return epsilon_spent([(sigma, q, n) for q, n in plan], delta, accountant)

    low, high = 0.0, 10.0
    while spent(high) > epsilon:
        low, high = high, 2 * high
        if high > 1e4:
            raise ValueError(f"no noise multiplier reaches epsilon {epsilon} at delta {delta}")
    while spent(high) < epsilon - tolerance:
        mid = (low + high) / 2
        if spent(mid) > epsilon:
            low = mid
        else:
            high = mid
    return high


@dataclass
class PrivateTrainer:
    """DP-SGD for one client: trains like :func:`fedkd.training.train`, and accounts."""

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    budget: float | None  # the target ε, or None when the noise was given and nothing caps it
    accountant: str = "rdp"
    history: History = field(default_factory=list)

    @property
    def epsilon(self) -> float:
        return epsilon_spent(self.history, self.delta, self.accountant)

    def can_afford(self, num_examples: int, cfg: TrainConfig) -> bool:
        """Whether training ``cfg.epochs`` over ``num_examples`` stays within the budget."""
        if self.budget is None:
            return True
        rate, steps = plan_pass(num_examples, cfg.batch_size, cfg.epochs)
        after = epsilon_spent(
            [*self.history, (self.noise_multiplier, rate, steps)], self.delta, self.accountant
        )
        return after <= self.budget * (1 + 1e-9)

    def train(
        self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn,
        cfg: TrainConfig,
    ) -> dict[str, float]:  # fmt: skip
        """``cfg.epochs`` of DP-SGD (Adam on the privatised gradients) over ``(x, targets)``;
        returns the last epoch's mean loss terms. The caller checks :meth:`can_afford` first."""
        if cfg.epochs == 0 or len(x) == 0:
            return {}
        generator = torch.Generator().manual_seed(cfg.seed)
        loader = DataLoader(
            TensorDataset(x, targets), batch_size=cfg.batch_size, generator=generator
        )
        with warnings.catch_warnings():  # seeded noise is what makes runs reproducible
            warnings.filterwarnings("ignore", "Secure RNG turned off")
            engine = PrivacyEngine(accountant=self.accountant)
        engine.accountant.history = list(self.history)
        noise = torch.Generator().manual_seed(cfg.seed + 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            hooks, optimizer, private_loader = engine.make_private(
                module=model,
                optimizer=make_optimizer(model, cfg),
                data_loader=loader,
                noise_multiplier=self.noise_multiplier,
                max_grad_norm=self.max_grad_norm,
                noise_generator=noise,
                wrap_model=False,
            )
            try:
                with warnings.catch_warnings():  # inputs never require gradients: expected
                    warnings.filterwarnings("ignore", "Full backward hook is firing")
                    terms = self._epochs(model, private_loader, optimizer, loss_fn, cfg, generator)
            finally:
                hooks.cleanup()
        self.history = [(float(s), float(q), int(n)) for s, q, n in engine.accountant.history]
        return terms

    @staticmethod
    def _epochs(
        model: nn.Module,
        loader: DataLoader,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        cfg: TrainConfig,
        generator: torch.Generator,
    ) -> dict[str, float]:
        model.train()
        totals: dict[str, float] = {}
        seen = 0
        for _ in range(cfg.epochs):
            totals, seen = {}, 0
            for inputs, target in loader:
                if cfg.augment.active and len(inputs):
                    inputs = cfg.augment(inputs, generator)
                optimizer.zero_grad(set_to_none=True)
                terms = loss_fn(model(inputs), target) if len(inputs) else None
                if terms is None:  # an empty Poisson batch: the step is noise alone
                    _empty_backward(model)
                else:
                    terms["total"].backward()
                optimizer.step()
                for name, value in (terms or {}).items():
                    totals[name] = totals.get(name, 0.0) + float(value.detach()) * len(inputs)
                seen += len(inputs)
        return {name: total / max(seen, 1) for name, total in totals.items()}


def _empty_backward(model: nn.Module) -> None:
    """Per-example gradients of an empty batch (shape (0, ...)): Opacus then adds only noise."""
    for p in model.parameters():
        if p.requires_grad:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)  # type: ignore[attr-defined]
