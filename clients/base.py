"""The client side of one federated-distillation round, shared by every algorithm.

A round: (a) *digest* -- distil the student toward last round's consensus on its public samples;
(b) *revisit* -- train on the private partition; (c) predict soft labels on this round's public
subset. Only those soft labels, the example count and metrics go back to the server.
With ``clients.kd_schedule=joint``, (a) and (b) are one pass over the private partition mixed with
as many teacher-labelled public samples: a student on skewed private data (small Dirichlet alpha)
then keeps what the federation taught it instead of overwriting it with its own few classes.
Subclasses choose what "soft labels" means (``soft_labels``) and the digest temperature.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedkd import protocol
from fedkd.algorithms import Distillation
from fedkd.config import ExperimentConfig
from fedkd.data import ArrayDataset
from fedkd.training import (
    LossFn,
    TrainConfig,
    derive_seed,
    evaluate,
    local_epochs,
    loss_metric,
    make_kd_loss,
    predict_logits,
    supervised_loss,
    train,
)

if TYPE_CHECKING:  # Opacus costs a second to import: only DP runs load it
    from fedkd.privacy import PrivateTrainer


@dataclass(frozen=True)
class RoundTask:
    """What the server asked for this round (decoded from the message)."""

    server_round: int
    public_indices: np.ndarray  # (n,) int
    consensus_indices: np.ndarray | None = None  # (m,) int
    consensus_probs: np.ndarray | None = None  # (m, K)
    view_seed: list[int] | None = None  # (views.*) answer on these views of the public samples
    consensus_view_seed: list[int] | None = None  # (views.*) the teacher is on these views


class KDClient(ABC):
    """One client's round. The student is passed in and updated in place; the caller persists it.

    Parameters
    ----------
    cfg : ExperimentConfig
    client_id : int
    model : nn.Module
        This client's student (its own architecture).
    private : ArrayDataset
        Private partition: never leaves the client.
    public_x : np.ndarray, shape (num_public, C, H, W)
        The public proxy set's inputs (no labels).
    test : ArrayDataset | None
        Where the client reports its accuracy (``clients.num_eval_samples`` of the test set).
    privacy : PrivateTrainer | None
        With ``dp.*`` set: every step that touches private data is DP-SGD, accounted here.
    """

    #: What the client sends: ``"logits"`` or ``"probs"``.
    soft_label_kind: ClassVar[str]

    def __init__(
        self,
        cfg: ExperimentConfig,
        client_id: int,
        model: nn.Module,
        private: ArrayDataset,
        public_x: np.ndarray,
        test: ArrayDataset | None,
        privacy: "PrivateTrainer | None" = None,
    ) -> None:
        if not isinstance(cfg.algorithm, Distillation):
            raise TypeError(f"{cfg.algorithm.kind} is not a distillation algorithm")
        self.cfg = cfg
        self.algorithm: Distillation = cfg.algorithm
        self.client_id = client_id
        self.model = model
        self.private = private
        self.public_x = public_x
        self.views = cfg.views.spec
        # the last views built (key: seed and indices): the round's answer and its abstention
        # mask are on the same views, built once
        self._last_views: tuple[tuple[tuple[int, ...], bytes], Tensor] | None = None
        self.test = test
        self.privacy = privacy
        self.budget_exhausted = False

    @abstractmethod
    def soft_labels(self, logits: Tensor) -> np.ndarray:
        """Turn the student's logits (n, K) into what this algorithm shares, (n, K) floats
        (``algorithm.codec`` encodes them for the wire)."""

    @property
    def digest_temperature(self) -> float:
        return self.algorithm.temperature

    def public_inputs(self, indices: np.ndarray, view_seed: list[int] | None) -> Tensor:
        """Public samples ``indices`` (n, C, H, W), or (``view_seed``) the views of them that
        the server and every other client draw from that seed, bit for bit."""
        indices = indices.astype(np.int64)
        if view_seed is None:
            return torch.from_numpy(self.public_x[indices])
        key = (tuple(view_seed), indices.tobytes())
        if self._last_views is None or self._last_views[0] != key:
            self._last_views = key, torch.from_numpy(self.views(self.public_x, indices, view_seed))
        return self._last_views[1]

    def _local_epochs(self, num_examples: int) -> int:
        c = self.cfg.clients
        return local_epochs(num_examples, c.batch_size, c.revisit_epochs, c.min_local_steps)

    def _train_config(self, epochs: int, server_round: int, phase: int) -> TrainConfig:
        return TrainConfig(
            epochs=epochs,
            batch_size=self.cfg.clients.batch_size,
            lr=self.cfg.clients.lr,
            seed=derive_seed(self.cfg.seed, server_round, self.client_id, phase),
            augment=self.cfg.clients.augment,
        )

    def run_round(self, task: RoundTask) -> tuple[np.ndarray, dict[str, float]]:
        """Learn (digest and revisit), then predict. Returns (soft labels (n, K), metrics)."""
        if self.cfg.clients.kd_schedule == "joint":
            metrics = self._learn_jointly(task)
        else:
            metrics = self._learn_sequentially(task)
        public = self.public_inputs(task.public_indices, task.view_seed)
        if self.privacy is not None:
            metrics[protocol.DP_EPSILON] = self.privacy.epsilon
            metrics[protocol.DP_EXHAUSTED] = float(self.budget_exhausted)
        soft = self.soft_labels(predict_logits(self.model, public))
        if self.test is not None and len(self.test) > 0:
            acc, loss = evaluate(
                self.model, torch.from_numpy(self.test.x), torch.from_numpy(self.test.y)
            )
            metrics[protocol.TEST_ACCURACY], metrics[protocol.TEST_LOSS] = acc, loss
        return soft, metrics

    def _learn_sequentially(self, task: RoundTask) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if task.consensus_probs is not None and task.consensus_indices is not None:
            digest = train(  # (clients.digest_epochs=0: no step, and no loss to report)
                self.model,
                self.public_inputs(task.consensus_indices, task.consensus_view_seed),
                torch.from_numpy(task.consensus_probs.astype(np.float32)),
                make_kd_loss(self.digest_temperature),
                self._train_config(self.cfg.clients.digest_epochs, task.server_round, 0),
            )
            metrics.update(loss_metric(protocol.DIGEST_LOSS, digest))
        return {**metrics, **self._revisit(task.server_round)}

    def _revisit(self, server_round: int) -> dict[str, float]:
        """``clients.revisit_epochs`` (at least ``clients.min_local_steps`` steps) of supervised
        training on the private partition."""
        terms = self._fit_private(
            torch.from_numpy(self.private.x),
            torch.from_numpy(self.private.y),
            supervised_loss,
            self._train_config(self._local_epochs(len(self.private)), server_round, 1),
        )
        return loss_metric(protocol.TRAIN_LOSS, terms)

    def _fit_private(
        self, x: Tensor, targets: Tensor, loss_fn: LossFn, cfg: TrainConfig
    ) -> dict[str, float]:
        """Training on a set that holds private examples: plain, or DP-SGD within the budget
        (a client whose budget cannot pay for this round does not train, and says so)."""
        if self.privacy is None:
            return train(self.model, x, targets, loss_fn, cfg)
        if not self.privacy.can_afford(len(x), cfg):
            self.budget_exhausted = True
            return {}
        return self.privacy.train(self.model, x, targets, loss_fn, cfg)

    def _learn_jointly(self, task: RoundTask) -> dict[str, float]:
        """One pass over the private samples (one-hot targets) and the teacher samples the
        server sent (their probabilities as targets: as many as there are private samples, or
        ``clients.min_teacher_samples``; :func:`fedkd.sampling.teacher_subset`); the loss is
        the cross-entropy to the target distribution, i.e. plain CE on private samples and KD
        at T=1 on public ones (the teacher's temperature is already in its probabilities)."""
        if task.consensus_probs is None or task.consensus_indices is None:
            return self._revisit(task.server_round)
        x = torch.from_numpy(self.private.x)
        labels = torch.from_numpy(self.private.y)
        teacher = torch.from_numpy(task.consensus_probs.astype(np.float32))  # (m, K)
        public = self.public_inputs(task.consensus_indices, task.consensus_view_seed)
        terms = self._fit_private(
            torch.cat([x, public]),
            torch.cat([F.one_hot(labels, teacher.shape[1]).float(), teacher]),
            make_kd_loss(1.0),
            self._train_config(self._local_epochs(len(x) + len(public)), task.server_round, 1),
        )
        return loss_metric(protocol.TRAIN_LOSS, terms)
