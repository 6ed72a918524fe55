"""A run folder: resolved config, per-round metrics, summary and the final global model.

Layout (the same for simulation and deployment)::

    <output_dir>/config.json      the validated ExperimentConfig
    <output_dir>/metrics.jsonl    one JSON object per round, appended and flushed as it ends
    <output_dir>/summary.json     final figures; written on success AND on failure
    <output_dir>/global_model.pt  the global model's state_dict
"""

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from torch import nn

from fedkd.config import ExperimentConfig, to_dict

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
MODEL_FILE = "global_model.pt"


_NAN = float("nan")


# RoundRecord fields that measure time: they differ between two runs of the same config
TIMING_FIELDS = frozenset({"round_seconds", "exchange_seconds"})


@dataclass
class RoundRecord:
    """One round of a run: what ``metrics.jsonl`` holds, one JSON object per line.

    Written with :meth:`to_json` and read back with :meth:`from_json` (client ids stay ints);
    the server's distillation loss terms are flattened as ``server_<term>`` keys.
    """

    round: int
    global_accuracy: float = _NAN
    global_loss: float = _NAN
    consensus_accuracy: float = _NAN  # NaN: no consensus, or no task labels on the public set
    client_accuracy_mean: float = _NAN
    client_accuracy_min: float = _NAN
    client_accuracy_max: float = _NAN
    # on the same samples, the plain mean of the accepted replies' probabilities: the ensemble
    # of this round's students, before the combine rule, post-processing and memory
    ensemble_accuracy: float = _NAN
    num_sampled: int = 0
    num_accepted: int = 0
    rejected: dict[int, str] = field(default_factory=dict)  # client id -> reason
    failed: dict[int, str] = field(default_factory=dict)  # client id -> error Flower reported
    missing: list[int] = field(default_factory=list)  # sampled, never answered
    offline: list[int] = field(default_factory=list)  # met before, not connected now
    quarantined: list[int] = field(default_factory=list)  # sitting out after repeated strikes
    restarted: list[int] = field(default_factory=list)  # answered from a student it had lost
    dp_epsilon: dict[int, float] = field(default_factory=dict)  # client id -> ε spent so far
    public_samples: int = 0
    # bytes of the messages' serialised content (arrays with headers, metrics, configs); each
    # entry of ``clients`` has its own "uplink_bytes" and "downlink_bytes"
    uplink_bytes: int = 0  # the accepted replies
    rejected_bytes: int = 0  # the rejected replies
    downlink_bytes: int = 0  # the round's messages to the sampled clients
    round_seconds: float = 0.0
    exchange_seconds: float = 0.0  # of round_seconds: from sending the round's messages to the
    # last reply (the clients' work and the network's); the rest is the server's
    clients: list[dict[str, Any]] = field(default_factory=list)  # accepted clients: their
    # metrics, and their share of the merge ("combine_weight") where the rule judges clients
    server: dict[str, float] = field(default_factory=dict)  # the server's loss terms

    @property
    def num_rejected(self) -> int:
        return len(self.rejected)

    @property
    def num_failed(self) -> int:
        return len(self.failed)

    @property
    def num_missing(self) -> int:
        return len(self.missing)

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "server"}
        data.update(
            num_rejected=self.num_rejected,
            num_failed=self.num_failed,
            num_missing=self.num_missing,
            **{f"{_SERVER}{k}": v for k, v in self.server.items()},
        )
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> "RoundRecord":
        data = json.loads(line)
        for derived in ("num_rejected", "num_failed", "num_missing"):
            data.pop(derived, None)
        server = {k[len(_SERVER) :]: v for k, v in data.items() if k.startswith(_SERVER)}
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in data if k not in known and not k.startswith(_SERVER))
        if unknown:
            raise ValueError(f"unknown round record keys {unknown}")
        record = cls(**{k: v for k, v in data.items() if k in known}, server=server)
        record.rejected = {int(k): v for k, v in record.rejected.items()}
        record.failed = {int(k): v for k, v in record.failed.items()}
        record.dp_epsilon = {int(k): v for k, v in record.dp_epsilon.items()}
        return record


_SERVER = "server_"


@dataclass
class RunSummary:
    """A run's outcome: what ``summary.json`` holds (written on success and on failure)."""

    status: str  # completed | failed | interrupted | remote
    rounds: int = 0
    final_global_accuracy: float | None = None
    best_global_accuracy: float | None = None
    best_round: int | None = None
    uplink_bytes_total: int = 0
    rejected_bytes_total: int = 0
    downlink_bytes_total: int = 0
    uplink_bytes_per_client_round: float | None = None  # mean over accepted replies
    downlink_bytes_per_client_round: float | None = None  # mean over messages sent
    rejected_replies_total: int = 0
    failed_replies_total: int = 0
    missing_replies_total: int = 0
    missing_by_client: dict[str, list[int]] = field(default_factory=dict)  # id -> rounds
    quarantined_by_client: dict[str, list[int]] = field(default_factory=dict)  # id -> rounds
    dp_epsilon: float | None = None  # the largest ε any client spent (dp.* on)
    dp_delta: float | None = None
    resumed_after: list[int] = field(default_factory=list)  # rounds a stopped run resumed after
    wall_seconds: float = 0.0
    # simulation: the peak memory of the launcher's process tree (its SuperLink, the simulation,
    # Ray's workers), summed proportional set sizes sampled every 0.5 s; None: not measured
    peak_memory_bytes: int | None = None
    clients: list[dict[str, Any]] = field(default_factory=list)  # the roster
    unusable_nodes: dict[str, str] = field(default_factory=dict)  # node id -> why
    error: str | None = None
    output_dir: str | None = None  # only where the run folder is on another machine

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k in _ALWAYS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, blob: str) -> "RunSummary":
        return cls(**json.loads(blob))

    @classmethod
    def of_rounds(
        cls, rounds: list[RoundRecord], status: str, wall_seconds: float, **roster: Any
    ) -> "RunSummary":
        accs = [r.global_accuracy for r in rounds if not math.isnan(r.global_accuracy)]
        missing_by_client: dict[str, list[int]] = {}  # client id -> rounds it did not deliver
        quarantined: dict[str, list[int]] = {}
        for r in rounds:
            for cid in sorted({*r.missing, *r.failed, *r.offline}):
                missing_by_client.setdefault(str(cid), []).append(r.round)
            for cid in r.quarantined:
                quarantined.setdefault(str(cid), []).append(r.round)
        spent = [max(r.dp_epsilon.values()) for r in rounds if r.dp_epsilon]
        best = max(accs) if accs else None
        return cls(
            status=status,
            rounds=len(rounds),
            final_global_accuracy=accs[-1] if accs else None,
            best_global_accuracy=best,
            best_round=next(r.round for r in rounds if r.global_accuracy == best) if accs else None,
            uplink_bytes_total=sum(r.uplink_bytes for r in rounds),
            rejected_bytes_total=sum(r.rejected_bytes for r in rounds),
            downlink_bytes_total=sum(r.downlink_bytes for r in rounds),
            uplink_bytes_per_client_round=_per(
                sum(r.uplink_bytes for r in rounds), sum(r.num_accepted for r in rounds)
            ),
            downlink_bytes_per_client_round=_per(
                sum(r.downlink_bytes for r in rounds), sum(r.num_sampled for r in rounds)
            ),
            rejected_replies_total=sum(r.num_rejected for r in rounds),
            failed_replies_total=sum(r.num_failed for r in rounds),
            missing_replies_total=sum(r.num_missing for r in rounds),
            missing_by_client=missing_by_client,
            quarantined_by_client=quarantined,
            dp_epsilon=max(spent) if spent else None,
            wall_seconds=round(wall_seconds, 3),
            **roster,
        )


def _per(total: int, count: int) -> float | None:
    return round(total / count, 1) if count else None


# keys summary.json always carries, even when null (a run without a global model)
_ALWAYS: Final = ("final_global_accuracy", "best_global_accuracy", "best_round")


def read_metrics(run_dir: str | Path) -> list[RoundRecord]:
    """The per-round records of a run folder, in round order."""
    path = Path(run_dir) / METRICS_FILE
    return [RoundRecord.from_json(line) for line in path.read_text().splitlines() if line.strip()]


def read_summary(run_dir: str | Path) -> RunSummary:
    return RunSummary.from_json((Path(run_dir) / SUMMARY_FILE).read_text())


def client_accuracy_stats(accuracies: list[float]) -> dict[str, float]:
    """Mean / min / max of the clients' test accuracies for a round (NaN when none reported)."""
    if not accuracies:
        return {f"client_accuracy_{k}": float("nan") for k in ("mean", "min", "max")}
    return {
        "client_accuracy_mean": float(np.mean(accuracies)),
        "client_accuracy_min": float(np.min(accuracies)),
        "client_accuracy_max": float(np.max(accuracies)),
    }


class RunRecorder:
    """Writes a run folder as the run goes, so nothing already measured is lost on failure."""

    def __init__(self, output_dir: str | Path, cfg: ExperimentConfig) -> None:
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self._start = time.monotonic()
        self._earlier_seconds = 0.0  # wall time of the run before it was resumed
        self._rounds: list[RoundRecord] = []
        self.resumed_after: list[int] = []
        (self.dir / CONFIG_FILE).write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True))
        (self.dir / METRICS_FILE).write_text("")

    @classmethod
    def resume(
        cls,
        output_dir: str | Path,
        cfg: ExperimentConfig,
        after_round: int,
        wall_seconds: float,
        resumed_after: list[int],
    ) -> "RunRecorder":
        """The recorder of a stopped run continuing after ``after_round`` (its checkpoint, which
        also says how long the run had taken and after which rounds it resumed before): rounds
        recorded after the checkpoint are dropped (they will run again)."""
        out = Path(output_dir)
        kept = [r for r in read_metrics(out) if r.round <= after_round]
        recorder = cls(out, cfg)
        for record in kept:
            recorder.log_round(record)
        recorder._earlier_seconds = wall_seconds
        recorder.resumed_after = [*resumed_after, after_round]
        return recorder

    @property
    def wall_seconds(self) -> float:
        return self._earlier_seconds + time.monotonic() - self._start

    def log_round(self, record: RoundRecord) -> None:
        self._rounds.append(record)
        with (self.dir / METRICS_FILE).open("a") as f:
            f.write(record.to_json() + "\n")

    def save_model(self, model: nn.Module) -> None:
        torch.save(model.state_dict(), self.dir / MODEL_FILE)

    def write_summary(self, status: str = "completed", **roster: Any) -> dict[str, Any]:
        """Write ``summary.json`` from the rounds so far; returns it as a dict."""
        summary = RunSummary.of_rounds(self._rounds, status, self.wall_seconds, **roster)
        summary.resumed_after = self.resumed_after
        if self.cfg.dp.enabled:
            summary.dp_delta = self.cfg.dp.delta
        (self.dir / SUMMARY_FILE).write_text(summary.to_json())
        return summary.to_dict()
