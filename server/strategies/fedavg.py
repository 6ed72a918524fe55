"""FedAvg baseline: Communication-Efficient Learning of Deep Networks from Decentralized Data.

H. Brendan McMahan, Eider Moore, Daniel Ramage, Seth Hampson and Blaise Agüera y Arcas,
AISTATS 2017. arXiv:1602.05629.

The reference point for the distillation methods: **weights**, not soft labels, go up and down,
so every client trains the server's architecture (``model.architecture``; homogeneous by
definition). This is Flower's own :class:`flwr.serverapp.strategy.FedAvg` (its round loop and
example-weighted averaging), with fedkd's seeded client sampling (by client id, see
``roster.py``) and fedkd's run folder. The client side is ``clients/fedavg.py``: load the global
weights, train ``clients.revisit_epochs`` on private data, send the weights back.
"""

import logging
import time
from collections.abc import Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import nn

from fedkd import protocol
from fedkd.config import ExperimentConfig
from fedkd.data import DatasetSplits
from fedkd.results import RoundRecord, RunRecorder, client_accuracy_stats
from fedkd.training import evaluate
from server.strategies.roster import (
    ClientInfo,
    FailureStreak,
    Roster,
    addressee,
    error_reason,
    message_bytes,
)

log = logging.getLogger("fedkd.server")


class FedAvgBaseline(FedAvg):
    """Flower's FedAvg, sampled and recorded the fedkd way. Same interface as the distillation
    strategies: ``FedAvgBaseline(cfg, splits, global_model, recorder).start(grid)``."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        splits: DatasetSplits,
        global_model: nn.Module,
        recorder: RunRecorder,
    ) -> None:
        super().__init__(
            fraction_train=cfg.clients.fraction,
            fraction_evaluate=0.0,  # the server evaluates the global model itself
            min_train_nodes=cfg.clients.min_clients,
            min_available_nodes=cfg.clients.min_clients,
        )
        self.cfg, self.splits, self.global_model, self.recorder = (
            cfg,
            splits,
            global_model,
            recorder,
        )
        self.roster = Roster(cfg, splits.num_classes)
        self.streak = FailureStreak(cfg.max_failed_rounds)
        self._test_x = torch.from_numpy(splits.test.x)
        self._test_y = torch.from_numpy(splits.test.y)
        self._sent: list[Message] = []
        self._clients: list[ClientInfo] = []
        self._round = RoundRecord(0)
        self._start = 0.0
        self._sent_at = 0.0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        start = time.monotonic()
        online = self.roster.update(grid)
        self._clients = self.roster.sample(server_round, online)
        config[protocol.SERVER_ROUND] = server_round
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        self._sent = [
            Message(content, dst_node_id=c.node_id, message_type=MessageType.TRAIN)
            for c in self._clients
        ]
        self._start = start
        self._round = RoundRecord(
            server_round,
            downlink_bytes=sum(message_bytes(m) for m in self._sent),
            offline=self.roster.offline(online),
        )
        self._sent_at = time.monotonic()
        return self._sent

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self._round.exchange_seconds = time.monotonic() - self._sent_at
        replies = list(replies)
        by_node = {c.node_id: c for c in self._clients}
        ok, failed, answered = [], {}, set()
        for reply in replies:
            node_id = addressee(reply, self._sent)
            answered.add(node_id)
            cid = by_node[node_id].client_id if node_id in by_node else -node_id
            if reply.has_error():
                failed[cid] = error_reason(reply)
                log.warning("client %d failed: %s", cid, failed[cid])
            else:
                ok.append((cid, reply))
        accs = [
            float(acc)
            for _, r in ok
            if isinstance(
                acc := r.content.metric_records[protocol.REPLY_METRICS].get(protocol.TEST_ACCURACY),
                int | float,
            )
        ]
        record = self._round
        record.uplink_bytes = sum(message_bytes(r) for _, r in ok)
        record.num_sampled, record.num_accepted = len(self._clients), len(ok)
        record.failed = failed
        record.missing = sorted(by_node[n].client_id for n in set(by_node) - answered)
        stats = client_accuracy_stats(accs)
        record.client_accuracy_mean = stats["client_accuracy_mean"]
        record.client_accuracy_min = stats["client_accuracy_min"]
        record.client_accuracy_max = stats["client_accuracy_max"]
        return super().aggregate_train(server_round, [r for _, r in ok])

    def _evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        self.global_model.load_state_dict(arrays.to_torch_state_dict())
        acc, loss = evaluate(self.global_model, self._test_x, self._test_y)
        if server_round > 0:
            record = self._round
            record.global_accuracy, record.global_loss = acc, loss
            record.round_seconds = time.monotonic() - self._start
            self.recorder.log_round(record)
            log.info(
                "[round %d/%d] global acc %.4f loss %.4f | clients %d ok, %d failed, %d missing "
                "| %.1fs",
                server_round,
                self.cfg.num_rounds,
                acc,
                loss,
                record.num_accepted,
                record.num_failed,
                record.num_missing,
                record.round_seconds,
            )
            # (a FedAvg run has no checkpoint: its finished rounds are in the run folder)
            self.streak.update(record, f"The finished rounds are in {self.recorder.dir}.")
        return MetricRecord({"accuracy": acc, "loss": loss})

    def start(self, grid: Grid, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Run every round through Flower's loop; return the summary."""
        log.info(
            "fedkd fedavg: %d rounds, %d clients, dataset %s, model %s -> %s",
            self.cfg.num_rounds,
            self.cfg.clients.num_clients,
            self.splits.name,
            self.cfg.model.architecture.kind,
            self.recorder.dir,
        )
        self.roster.wait_for_nodes(grid)
        super().start(
            grid,
            ArrayRecord(self.global_model.state_dict()),
            num_rounds=self.cfg.num_rounds,
            timeout=self.cfg.round_timeout,
            evaluate_fn=self._evaluate,
        )
        self.recorder.save_model(self.global_model)
        return self.recorder.write_summary(**self.roster.summary())
