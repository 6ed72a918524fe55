"""The round template shared by every federated-distillation algorithm.

One round is ONE exchange with the sampled clients (deployment pays seconds of polling for each):

1. sample clients and this round's public subset;
2. send each client the subset's seed and the previous round's consensus on the samples it will
   use, both encoded by the configured codec (``configure_round``);
3. receive soft labels on the subset, validate them, reject and count bad replies (``collect``);
4. merge the accepted soft labels into the consensus (``consensus``: the configured combine
   rule, the algorithm's ``to_probs``, the configured post-processing), optionally averaged
   with earlier rounds' (``remember``);
5. distil the global model toward it (``distillation_set``, ``distill_global``; on its views
   with ``views.*``, and with earlier rounds' sets too under ``algorithm.replay_rounds``:
   ``distillation_data``), optionally averaging its weights over rounds (``served_model``);
6. keep what the clients digest next round (``client_teacher``, on the distillation set),
   evaluate the global model on the test set and record the round.

Algorithms override hooks (``soft_label_kind``, ``to_probs``, ``distill_global``, ...); none
copies the loop. A new algorithm is a subclass in the user's own module, named by its config
class (``fedkd.algorithms``; see ``examples/entropy_weighted.py``).
"""

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from fedkd import abstain, protocol
from fedkd.aggregation import Combined, as_probs
from fedkd.algorithms import Distillation
from fedkd.checkpoint import (
    RunStopped,
    ServerCheckpoint,
    new_run_token,
    remove_checkpoint,
    stop_requested,
)
from fedkd.codecs import PROBS, CodecError
from fedkd.config import ExperimentConfig
from fedkd.data import DatasetSplits
from fedkd.results import RoundRecord, RunRecorder, client_accuracy_stats
from fedkd.sampling import public_subset, round_public_seed, round_view_seed, teacher_subset
from fedkd.training import (
    TrainConfig,
    accuracy_of_probs,
    derive_seed,
    evaluate,
    make_kd_loss,
    predict_logits,
    train,
)
from fedkd.validation import InvalidReply, check_array_header, check_metrics, check_soft_labels
from server.strategies.roster import (
    ClientInfo,
    FailureStreak,
    Roster,
    addressee,
    error_reason,
    message_bytes,
)

log = logging.getLogger("fedkd.server")


@dataclass
class ServerState:
    """Everything the server carries from one round to the next (besides the global model)."""

    memory_sum: np.ndarray | None = None  # (num_public, K) running consensus sums
    memory_count: np.ndarray | None = None  # (num_public, K) weight behind each running mean
    consensus_indices: np.ndarray | None = None  # (m,) public indices of the last consensus
    consensus_probs: np.ndarray | None = None  # (m, K)
    consensus_view_seed: list[int] | None = None  # (views.*) the views the consensus is on
    # (algorithm.replay_rounds) the previous rounds' distillation sets, newest last:
    # (public indices (m,), their views' seed or None, targets (m, K))
    replay: list[tuple[np.ndarray, list[int] | None, np.ndarray]] = field(default_factory=list)


@dataclass
class RoundReplies:
    """The validated outcome of one exchange."""

    clients: list[ClientInfo] = field(default_factory=list)  # accepted, sorted by client id
    soft_labels: list[np.ndarray] = field(default_factory=list)  # each (n, K)
    abstained: list[np.ndarray] = field(default_factory=list)  # each (n,) bool (clients.abstain)
    client_metrics: list[dict[str, float]] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)  # client id -> reason
    failed: dict[int, str] = field(default_factory=dict)  # client id -> error reported by Flower
    missing: list[int] = field(default_factory=list)  # client ids that never answered
    uplink_bytes: int = 0  # every record of the accepted replies
    rejected_bytes: int = 0  # every record of the rejected replies
    bytes_by_client: dict[int, int] = field(default_factory=dict)  # accepted: client id -> bytes


def _remembered(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-class running means (n, K), rows renormalised to probabilities (float32)."""
    means = sums / np.where(counts > 0, counts, 1.0)
    return (means / means.sum(axis=1, keepdims=True)).astype(np.float32)


def _client_id(info: ClientInfo | None, node_id: int) -> int:
    return info.client_id if info is not None else -node_id


class DistillationStrategy(ABC):
    """Base class: owns the round loop; subclasses choose what clients send and how it is merged.

    Parameters
    ----------
    cfg : ExperimentConfig
    splits : DatasetSplits
        The server's copy of the public set (its labels are used for *evaluation only*) and the
        test set.
    global_model : nn.Module
        Kept across rounds and distilled in place. With ``model.ema_decay`` > 0, the model that
        is evaluated, taught to clients and saved is its moving average over rounds
        (``served_model``).
    recorder : RunRecorder
    """

    #: What clients send: ``"logits"`` or ``"probs"``.
    soft_label_kind: ClassVar[str]

    def __init__(
        self,
        cfg: ExperimentConfig,
        splits: DatasetSplits,
        global_model: nn.Module,
        recorder: RunRecorder,
    ) -> None:
        if not isinstance(cfg.algorithm, Distillation):
            raise TypeError(f"{cfg.algorithm.kind} is not a distillation algorithm")
        self.cfg = cfg
        self.algorithm: Distillation = cfg.algorithm
        # kept for the whole run: a history-based rule remembers the clients' earlier replies
        self.combine_rule = self.algorithm.combine_rule
        self.codec = self.algorithm.soft_label_codec  # soft labels on the wire, both ways
        self.splits = splits
        self.global_model = global_model
        self.recorder = recorder
        self.state = ServerState()
        self.roster = Roster(cfg, splits.num_classes)
        self.run_token = new_run_token()  # clients file their students under it
        self.first_round = 1
        self.last_trained: dict[int, int] = {}  # client id -> last round it trained in
        self.dp_epsilon: dict[int, float] = {}  # client id -> ε it reported spending
        decay = cfg.model.ema_decay
        self.averaged = (
            AveragedModel(global_model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
            if decay > 0
            else None
        )
        self.views = cfg.views.spec
        self._public_x = torch.from_numpy(splits.public.x)
        self._test_x = torch.from_numpy(splits.test.x)
        self._test_y = torch.from_numpy(splits.test.y)

    @property
    def served_model(self) -> nn.Module:
        """What the server evaluates, teaches the clients and saves: the distilled global model,
        or (``model.ema_decay`` > 0) its exponential moving average over rounds."""
        return self.global_model if self.averaged is None else self.averaged.module

    # ----------------------------------------------------------------- hooks
    @abstractmethod
    def to_probs(self, scores: np.ndarray) -> np.ndarray:
        """The algorithm's one formula: merged soft labels (n, K), in the space clients send
        (``soft_label_kind``), to consensus probabilities (n, K)."""

    def prepare(self, stack: np.ndarray) -> np.ndarray:
        """The accepted replies' soft labels (C, n, K) before they are merged (default: as
        sent; logit algorithms bound their scale)."""
        return stack

    def consensus(
        self,
        soft_labels: np.ndarray,
        clients: Sequence[ClientInfo],
        abstained: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Combined]:
        """The consensus pipeline: ``algorithm.combine`` merges the clients' soft labels
        (C, n, K) -> ``to_probs`` -> ``algorithm.postprocess``; ``abstained`` (C, n): the
        samples each client abstained on (``clients.abstain``), where it has no say. Returns
        the probabilities (n, K) and what the rule said of the merge (the weight of each class
        and client)."""
        rule = self.combine_rule
        num_examples = np.array([c.num_examples for c in clients], dtype=np.float64)
        counts = (
            np.array([c.class_counts for c in clients], dtype=np.float64)
            if rule.needs_class_counts
            else None
        )
        extra: dict[str, Any] = {}
        if rule.uses_history:
            extra["client_ids"] = [c.client_id for c in clients]
        if abstained is not None:  # no say where a client abstained
            extra["sample_weights"] = 1.0 - np.asarray(abstained, dtype=np.float64)
        combined = rule(soft_labels, num_examples, counts, **extra)
        probs = self.to_probs(combined.scores)
        post = self.algorithm.postprocessor
        if post is not None:
            probs = post(probs)
        return np.asarray(probs, dtype=np.float32), combined

    def client_teacher(
        self, public_idx: np.ndarray, consensus: np.ndarray, view_seed: list[int] | None = None
    ) -> np.ndarray:
        """What the clients digest next round: the consensus itself, or (``algorithm.
        client_teacher=global``) the freshly distilled global model's predictions, which are
        smoother from round to round than a consensus of a few sampled clients (on the views
        of ``view_seed``, with ``views.*`` on)."""
        if self.algorithm.client_teacher == "consensus":
            return consensus
        logits = predict_logits(self.served_model, self.public_inputs(public_idx, view_seed))
        return torch.softmax(logits / self.algorithm.temperature, dim=1).numpy()

    def distillation_set(
        self, public_idx: np.ndarray, consensus: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(public indices, target probs) the global model is distilled on: this round's subset,
        or (``algorithm.distill_on_memory``) every public sample the running consensus holds."""
        memory = self.state.memory_count
        if not self.algorithm.distill_on_memory or memory is None:
            return public_idx, consensus
        assert self.state.memory_sum is not None
        idx = np.flatnonzero(memory.sum(axis=1))
        return idx, _remembered(self.state.memory_sum[idx], memory[idx])

    def distillation_data(
        self, server_round: int, public_idx: np.ndarray, consensus: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs (n, C, H, W) and target probabilities (n, K) the global model learns from
        this round: the distillation set (its views, with ``views.*`` on), followed by the sets
        of the previous ``algorithm.replay_rounds`` rounds with the targets they had then."""
        inputs = [self.public_inputs(public_idx, self.view_seed(server_round))]
        targets = [consensus]
        for idx, view_seed, old in self.state.replay:
            inputs.append(self.public_inputs(idx, view_seed))
            targets.append(old)
        return torch.cat(inputs), torch.from_numpy(np.concatenate(targets).astype(np.float32))

    def keep_for_replay(self, server_round: int, idx: np.ndarray, targets: np.ndarray) -> None:
        """Keep this round's distillation set for the next ``algorithm.replay_rounds`` rounds."""
        keep = self.algorithm.replay_rounds
        if keep:
            replay = [*self.state.replay, (idx, self.view_seed(server_round), targets)]
            self.state.replay = replay[-keep:]

    def remember(
        self, public_idx: np.ndarray, consensus: np.ndarray, class_weight: np.ndarray | None = None
    ) -> np.ndarray:
        """Running consensus: each public sample's probabilities averaged over every round that
        queried it, so one round's few (skewed) clients cannot swing the target. With class
        weights (K,), a round counts for class ``c`` in proportion to how much of ``c`` its
        clients hold. With ``algorithm.memory_decay`` d < 1, a round ``k`` rounds old counts
        ``d**k`` as much as this one: early rounds' untrained clients fade from the target."""
        state = self.state
        if state.memory_sum is None or state.memory_count is None:
            state.memory_sum = np.zeros((len(self.splits.public), consensus.shape[1]))
            state.memory_count = np.zeros((len(self.splits.public), consensus.shape[1]))
        decay = self.algorithm.memory_decay
        if decay < 1:
            state.memory_sum *= decay
            state.memory_count *= decay
        weight = np.ones(consensus.shape[1]) if class_weight is None else class_weight
        state.memory_sum[public_idx] += consensus * weight
        state.memory_count[public_idx] += weight
        return _remembered(state.memory_sum[public_idx], state.memory_count[public_idx])

    # ------------------------------------------------------------ the loop
    def start(self, grid: Grid) -> dict[str, Any]:
        """Run every round; return the summary (also written to the run folder)."""
        cfg = self.cfg
        log.info(
            "fedkd %s: %d rounds, %d clients, dataset %s, global model %s -> %s",
            self.algorithm.kind,
            cfg.num_rounds,
            cfg.clients.num_clients,
            self.splits.name,
            self.cfg.model.architecture.kind,
            self.recorder.dir,
        )
        self.roster.wait_for_nodes(grid)
        streak = FailureStreak(cfg.max_failed_rounds)
        for server_round in range(self.first_round, cfg.num_rounds + 1):
            record = self.run_round(grid, server_round)
            if stop_requested(self.recorder.dir):  # its clients may have been killed mid-round
                log.warning("stopping: round %d is not recorded", server_round)
                raise RunStopped(f"stopped during round {server_round}")
            self.recorder.log_round(record)
            if not streak.everyone_failed(record):  # a resume repeats the rounds nobody answered
                self.checkpoint(server_round)
            log.info(
                "[round %d/%d] global acc %.4f loss %.4f | consensus acc %.4f (ensemble %.4f) | "
                "clients %d ok, %d rejected, %d failed, %d missing | %.1fs",
                server_round,
                cfg.num_rounds,
                record.global_accuracy,
                record.global_loss,
                record.consensus_accuracy,
                record.ensemble_accuracy,
                record.num_accepted,
                record.num_rejected,
                record.num_failed,
                record.num_missing,
                record.round_seconds,
            )
            streak.update(
                record,
                f"The finished rounds and the checkpoint are in {self.recorder.dir}: fix the "
                f"cause, then continue with `fedkd resume={self.recorder.dir}`",
            )
        self.recorder.save_model(self.served_model)
        summary = self.recorder.write_summary(**self.roster.summary())
        remove_checkpoint(self.recorder.dir)
        return summary

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything the next round depends on (see :mod:`fedkd.checkpoint`). A subclass with
        state of its own extends it (and :meth:`load_state_dict`)."""
        return {
            "global_model": self.global_model.state_dict(),
            "averaged": None if self.averaged is None else self.averaged.state_dict(),
            "server_state": vars(self.state),
            "combine_rule": self.combine_rule,  # a history-based rule's memory travels with it
            "roster": self.roster.state_dict(),
            "last_trained": dict(self.last_trained),
            "dp_epsilon": dict(self.dp_epsilon),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_model.load_state_dict(state["global_model"])
        if self.averaged is not None:
            self.averaged.load_state_dict(state["averaged"])
        self.state = ServerState(**state["server_state"])
        self.combine_rule = state["combine_rule"]
        self.roster.load_state_dict(state["roster"])
        self.last_trained = dict(state["last_trained"])
        self.dp_epsilon = dict(state["dp_epsilon"])

    def checkpoint(self, server_round: int) -> None:
        """Write the state after ``server_round`` (atomically; replaces the previous one)."""
        ServerCheckpoint(
            round=server_round,
            run_token=self.run_token,
            wall_seconds=self.recorder.wall_seconds,
            resumed_after=self.recorder.resumed_after,
            strategy=self.state_dict(),
        ).save(self.recorder.dir)

    def resume(self, checkpoint: ServerCheckpoint) -> None:
        """Continue after ``checkpoint.round`` with the state it holds."""
        self.load_state_dict(checkpoint.strategy)
        checkpoint.restore_rng()
        self.run_token = checkpoint.run_token
        self.first_round = checkpoint.round + 1
        log.info("resuming after round %d (run %s)", checkpoint.round, self.run_token)

    def run_round(self, grid: Grid, server_round: int) -> RoundRecord:
        start = time.monotonic()
        online = self.roster.update(grid)
        clients = self.roster.sample(server_round, online)
        public_idx = self.sample_public(server_round)
        messages = self.configure_round(server_round, clients, public_idx)
        downlink = {m.metadata.dst_node_id: message_bytes(m) for m in messages}  # by node
        sent = time.monotonic()
        replies = list(grid.send_and_receive(messages, timeout=self.cfg.round_timeout))
        exchange_seconds = time.monotonic() - sent
        result = self.collect(server_round, replies, messages, clients, public_idx)

        record = RoundRecord(server_round, exchange_seconds=exchange_seconds)
        struck = set(result.rejected)
        weights: dict[int, float] = {}  # client id -> its share of the merge, where judged
        public_acc: dict[int, float] = {}  # client id -> its reply's accuracy, where labelled
        if result.soft_labels:
            stack = self.prepare(np.stack(result.soft_labels))  # (C, n, K)
            masks = np.stack(result.abstained) if result.abstained else None
            consensus, combined = self.consensus(stack, result.clients, masks)  # (n, K) probs
            struck |= self._outweighed(result.clients, combined)
            if combined.client_weight is not None:
                weights = {
                    c.client_id: float(w)
                    for c, w in zip(result.clients, combined.client_weight, strict=True)
                }
            if self.algorithm.consensus_memory:
                consensus = self.remember(public_idx, consensus, combined.class_weight)
            public_y = self.splits.public.y
            if public_y is not None:  # else: the public source's labels are not the task's
                labels = public_y[public_idx]
                record.consensus_accuracy = accuracy_of_probs(consensus, labels)
                reply_probs = as_probs(stack)  # (C, n, K)
                record.ensemble_accuracy = accuracy_of_probs(reply_probs.mean(axis=0), labels)
                public_acc = {
                    c.client_id: accuracy_of_probs(p, labels)
                    for c, p in zip(result.clients, reply_probs, strict=True)
                }
            distill_idx, targets = self.distillation_set(public_idx, consensus)
            record.server = self.distill_global(server_round, distill_idx, targets)
            self.keep_for_replay(server_round, distill_idx, targets)
            if self.averaged is not None:
                self.averaged.update_parameters(self.global_model)
            if self.algorithm.client_teacher is not None:  # (null: clients keep to their own data)
                view_seed = self.view_seed(server_round)
                self.state.consensus_indices = distill_idx
                self.state.consensus_probs = self.client_teacher(distill_idx, targets, view_seed)
                self.state.consensus_view_seed = view_seed
        else:
            log.warning("round %d: no valid replies; the global model is unchanged", server_round)
        record.global_accuracy, record.global_loss = evaluate(
            self.served_model, self._test_x, self._test_y
        )
        client_acc = [
            m[protocol.TEST_ACCURACY] for m in result.client_metrics if protocol.TEST_ACCURACY in m
        ]
        stats = client_accuracy_stats(client_acc)
        record.client_accuracy_mean = stats["client_accuracy_mean"]
        record.client_accuracy_min = stats["client_accuracy_min"]
        record.client_accuracy_max = stats["client_accuracy_max"]
        record.num_sampled, record.num_accepted = len(clients), len(result.clients)
        record.rejected, record.failed, record.missing = (
            result.rejected,
            result.failed,
            result.missing,
        )
        record.offline = self.roster.offline(online)
        record.public_samples = len(public_idx)
        record.uplink_bytes, record.downlink_bytes = result.uplink_bytes, sum(downlink.values())
        record.rejected_bytes = result.rejected_bytes
        answered = [c.client_id for c in result.clients] + list(result.rejected)
        self.roster.judge(server_round, answered, struck)
        record.quarantined = self.roster.quarantined(server_round + 1)
        record.restarted = self._note_students(server_round, result)
        record.dp_epsilon = dict(sorted(self.dp_epsilon.items()))
        record.clients = [
            {
                "client_id": c.client_id,
                "architecture": c.architecture,
                **m,
                **({"combine_weight": weights[c.client_id]} if weights else {}),
                **({"public_accuracy": public_acc[c.client_id]} if public_acc else {}),
                "uplink_bytes": result.bytes_by_client[c.client_id],
                "downlink_bytes": downlink.get(c.node_id, 0),
            }
            for c, m in zip(result.clients, result.client_metrics, strict=True)
        ]
        record.round_seconds = time.monotonic() - start
        return record

    def _outweighed(self, clients: Sequence[ClientInfo], combined: Combined) -> set[int]:
        """Clients the combine rule gave less than ``quarantine.min_share`` of an equal share."""
        weights, floor = combined.client_weight, self.cfg.quarantine.min_share
        if weights is None or floor == 0:
            return set()
        equal = 1.0 / len(clients)
        return {c.client_id for c, w in zip(clients, weights, strict=True) if w < floor * equal}

    def _note_students(self, server_round: int, result: RoundReplies) -> list[int]:
        """Track what the accepted clients trained from; returns those that answered from a
        student older than their last round (a node that restarted without its state)."""
        restarted = []
        for info, metrics in zip(result.clients, result.client_metrics, strict=True):
            cid = info.client_id
            trained_from = int(metrics.get(protocol.STUDENT_ROUND, 0))
            if trained_from < self.last_trained.get(cid, 0):
                restarted.append(cid)
                log.warning(
                    "client %d trained from a student of round %d, not its own of round %d: "
                    "it lost its state (restarted without a state-dir?)",
                    cid,
                    trained_from,
                    self.last_trained[cid],
                )
            self.last_trained[cid] = server_round
            if protocol.DP_EPSILON in metrics:
                self.dp_epsilon[cid] = metrics[protocol.DP_EPSILON]
        return restarted

    # ------------------------------------------------------------- steps
    def public_seed(self, server_round: int) -> list[int]:
        """The seed of this round's public subset (sent; clients draw the same subset)."""
        return round_public_seed(self.cfg.seed, server_round)

    def view_seed(self, server_round: int) -> list[int] | None:
        """The seed of this round's views of the public samples (sent), or None without
        ``views.*``: clients answer on the samples themselves."""
        return round_view_seed(self.cfg.seed, server_round) if self.views.active else None

    def public_inputs(self, idx: np.ndarray, view_seed: list[int] | None) -> torch.Tensor:
        """Public samples ``idx`` (n, C, H, W), or their views drawn from ``view_seed``: the very
        inputs the clients labelled."""
        if view_seed is None:
            return self._public_x[idx]
        return torch.from_numpy(self.views(self.splits.public.x, idx, view_seed))

    def sample_public(self, server_round: int) -> np.ndarray:
        """Sorted indices (int32) of this round's public subset."""
        num_public = len(self.splits.public)
        count = self.cfg.public_per_round or num_public
        return public_subset(num_public, count, self.public_seed(server_round))

    def teacher_for(self, server_round: int, client: ClientInfo) -> np.ndarray | None:
        """Rows of the last consensus this client will digest (``None``: all of them). Under
        the joint schedule a client mixes as many teacher samples as it has private examples
        (at least ``clients.min_teacher_samples``) into its pass: only those are sent."""
        assert self.state.consensus_indices is not None
        if self.cfg.clients.kd_schedule != "joint":
            return None
        seed = derive_seed(self.cfg.seed, server_round, client.client_id, 2)
        return teacher_subset(
            len(self.state.consensus_indices),
            client.num_examples,
            seed,
            self.cfg.clients.min_teacher_samples,
        )

    def configure_round(
        self, server_round: int, clients: Sequence[ClientInfo], public_idx: np.ndarray
    ) -> list[Message]:
        config = ConfigRecord(
            {
                protocol.SERVER_ROUND: server_round,
                protocol.RUN_TOKEN: self.run_token,
                protocol.PUBLIC_SEED: self.public_seed(server_round),
                protocol.PUBLIC_COUNT: len(public_idx),
            }
        )
        view_seed = self.view_seed(server_round)
        if view_seed is not None:
            config[protocol.VIEW_SEED] = view_seed
            if self.state.consensus_view_seed is not None:
                config[protocol.CONSENSUS_VIEW_SEED] = self.state.consensus_view_seed
        return [
            Message(
                RecordDict(
                    {
                        protocol.ROUND_CONFIG: config,
                        protocol.ROUND_ARRAYS: ArrayRecord(self._teacher_arrays(server_round, c)),
                    }
                ),
                dst_node_id=c.node_id,
                message_type=protocol.KD_ROUND,
                group_id=str(server_round),
                # expires with the round: a node restarting later (under node authentication it
                # keeps its node id) must not train on rounds the server has closed
                ttl=self.cfg.round_timeout,
            )
            for c in clients
        ]

    def _teacher_arrays(self, server_round: int, client: ClientInfo) -> dict[str, Array]:
        """The consensus this client digests (indices and encoded probabilities), if any."""
        if self.state.consensus_probs is None:
            return {}
        assert self.state.consensus_indices is not None
        idx, probs = self.state.consensus_indices, self.state.consensus_probs
        rows = self.teacher_for(server_round, client)
        if rows is not None:
            idx, probs = idx[rows], probs[rows]
        arrays = {protocol.CONSENSUS_INDICES: Array(np.ascontiguousarray(idx, dtype=np.int32))}
        for part, values in self.codec.encode(probs, PROBS).items():
            arrays[protocol.part_key(protocol.CONSENSUS_PROBS, part)] = Array(values)
        return arrays

    def collect(
        self,
        server_round: int,
        replies: Iterable[Message],
        messages: Sequence[Message],
        sent: Sequence[ClientInfo],
        public_idx: np.ndarray,
    ) -> RoundReplies:
        """Validate replies; bad ones are logged and counted, never aggregated."""
        out = RoundReplies()
        by_node = {c.node_id: c for c in sent}
        answered: set[int] = set()
        accepted: list[tuple[ClientInfo, np.ndarray, dict[str, float], np.ndarray | None]] = []
        for reply in replies:
            node_id = addressee(reply, messages)
            info = by_node.get(node_id)
            answered.add(node_id)
            cid = _client_id(info, node_id)
            if reply.has_error():
                reason = error_reason(reply)
                out.failed[cid] = reason
                log.warning("client %d failed: %s", cid, reason)
                continue
            size = message_bytes(reply)
            try:
                if info is None:
                    raise InvalidReply(f"reply from node {node_id}, which was not sampled")
                soft, metrics = self._parse_reply(
                    reply.content, server_round, len(public_idx), info
                )
                mask = self._parse_abstentions(reply.content, len(public_idx))
            except InvalidReply as err:
                out.rejected[cid] = str(err)
                out.rejected_bytes += size
                log.warning("rejected reply of client %d: %s", cid, err)
                continue
            out.uplink_bytes += size
            out.bytes_by_client[cid] = size
            accepted.append((info, soft, metrics, mask))
        out.missing = sorted(by_node[n].client_id for n in set(by_node) - answered)
        for cid in out.missing:
            log.warning("client %d did not answer within %.0fs", cid, self.cfg.round_timeout)
        for info, soft, metrics, mask in sorted(accepted, key=lambda a: a[0].client_id):
            out.clients.append(info)
            out.soft_labels.append(soft)
            out.client_metrics.append(metrics)
            if mask is not None:
                out.abstained.append(mask)
        return out

    def _parse_abstentions(self, content: RecordDict, num_samples: int) -> np.ndarray | None:
        """The samples a client abstains on (``clients.abstain`` > 0), checked before decoding;
        None when clients answer on every sample."""
        if self.cfg.clients.abstain == 0:
            return None
        arrays = content.array_records[protocol.REPLY_ARRAYS]
        if protocol.ABSTAIN not in arrays:
            raise InvalidReply(f"no '{protocol.ABSTAIN}' mask (clients.abstain is on)")
        shape = (math.ceil(num_samples / 8),)
        check_array_header(arrays[protocol.ABSTAIN], shape, np.dtype(np.uint8), protocol.ABSTAIN)
        try:
            return abstain.unpack(arrays[protocol.ABSTAIN].numpy(), num_samples)
        except Exception as err:
            raise InvalidReply(f"'{protocol.ABSTAIN}': {err}") from err

    #: The metrics a round reply may carry (an algorithm whose client reports more extends it).
    reply_metric_keys: ClassVar[frozenset[str]] = protocol.REPLY_METRIC_KEYS

    def _parse_reply(
        self, content: RecordDict, server_round: int, num_samples: int, info: ClientInfo
    ) -> tuple[np.ndarray, dict[str, float]]:
        extra = set(content.keys()) - protocol.ALLOWED_REPLY_RECORDS
        if extra:
            raise InvalidReply(f"unexpected records {sorted(extra)}: only soft labels and metrics")
        if protocol.REPLY_ARRAYS not in content.array_records:
            raise InvalidReply(f"no '{protocol.REPLY_ARRAYS}' array record")
        arrays = content.array_records[protocol.REPLY_ARRAYS]
        num_classes = self.splits.num_classes
        layout = self.codec.layout(num_samples, num_classes, self.soft_label_kind)
        keys = {protocol.part_key(protocol.SOFT_LABELS, part): part for part in layout}
        expected = set(keys) | ({protocol.ABSTAIN} if self.cfg.clients.abstain > 0 else set())
        if set(arrays.keys()) != expected:
            raise InvalidReply(f"arrays {sorted(arrays.keys())} != {sorted(expected)}")
        if protocol.REPLY_METRICS not in content.metric_records:
            raise InvalidReply(f"no '{protocol.REPLY_METRICS}' metric record")
        metrics = check_metrics(
            dict(content.metric_records[protocol.REPLY_METRICS]), self.reply_metric_keys
        )
        if metrics[protocol.NUM_EXAMPLES] != info.num_examples:
            raise InvalidReply(
                f"'{protocol.NUM_EXAMPLES}' {metrics[protocol.NUM_EXAMPLES]:.0f} differs from the "
                f"{info.num_examples} the client described"
            )
        trained_from = metrics.get(protocol.STUDENT_ROUND, 0.0)
        if not (trained_from.is_integer() and 0 <= trained_from < server_round):
            raise InvalidReply(
                f"'{protocol.STUDENT_ROUND}' {trained_from} is not a round before {server_round}"
            )
        for key, part in keys.items():  # before decoding: what it claims, no bigger than that
            check_array_header(arrays[key], layout[part].shape, layout[part].dtype, key)
        try:
            parts = {part: arrays[key].numpy() for key, part in keys.items()}
        except Exception as err:  # a corrupt payload must not end the round
            raise InvalidReply(f"undecodable soft labels: {err}") from err
        try:
            soft = self.codec.decode(parts, num_samples, num_classes, self.soft_label_kind)
        except CodecError as err:
            raise InvalidReply(f"soft labels: {err}") from err
        check_soft_labels(soft, num_samples, num_classes, self.soft_label_kind)
        return soft, metrics

    def distill_global(
        self, server_round: int, public_idx: np.ndarray, consensus: np.ndarray
    ) -> dict[str, float]:
        """Distil the global model toward the consensus on this round's public subset (its
        views, with ``views.*`` on); return the loss terms (recorded as ``server_<term>``)."""
        model_cfg = self.cfg.model
        inputs, targets = self.distillation_data(server_round, public_idx, consensus)
        terms = train(
            self.global_model,
            inputs,
            targets,
            make_kd_loss(self.algorithm.temperature),
            TrainConfig(
                epochs=model_cfg.distill_epochs,
                batch_size=model_cfg.batch_size,
                lr=model_cfg.round_lr(server_round, self.cfg.num_rounds),
                seed=derive_seed(self.cfg.seed, server_round, 2**31),
                augment=model_cfg.augment,
            ),
        )
        return terms
