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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedkd.config import ExperimentConfig, to_dict

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
MODEL_FILE = "global_model.pt"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-round metrics of a run folder, in round order."""
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
        self._start = time.monotonic()
        self._rounds: list[dict[str, Any]] = []
        (self.dir / CONFIG_FILE).write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True))
        (self.dir / METRICS_FILE).write_text("")

    @property
    def wall_seconds(self) -> float:
        return time.monotonic() - self._start

    def log_round(self, metrics: Mapping[str, Any]) -> None:
        self._rounds.append(dict(metrics))
        with (self.dir / METRICS_FILE).open("a") as f:
            f.write(json.dumps(metrics, sort_keys=True) + "\n")

    def save_model(self, model: nn.Module) -> None:
        torch.save(model.state_dict(), self.dir / MODEL_FILE)

    def write_summary(self, status: str = "completed", **extra: Any) -> dict[str, Any]:
        accs = [r["global_accuracy"] for r in self._rounds if not math.isnan(r["global_accuracy"])]
        missing_by_client: dict[str, list[int]] = {}  # client id -> rounds it did not deliver
        for r in self._rounds:
            for cid in sorted({*r["missing"], *map(int, r["failed"]), *r.get("offline", [])}):
                missing_by_client.setdefault(str(cid), []).append(r["round"])
        summary: dict[str, Any] = {
            "status": status,
            "rounds": len(self._rounds),
            "final_global_accuracy": accs[-1] if accs else None,
            "best_global_accuracy": max(accs) if accs else None,
            "best_round": self._rounds[accs.index(max(accs))]["round"] if accs else None,
            "uplink_bytes_total": sum(r["uplink_bytes"] for r in self._rounds),
            "downlink_bytes_total": sum(r["downlink_bytes"] for r in self._rounds),
            "rejected_replies_total": sum(r["num_rejected"] for r in self._rounds),
            "failed_replies_total": sum(r["num_failed"] for r in self._rounds),
            "missing_replies_total": sum(r["num_missing"] for r in self._rounds),
            "missing_by_client": missing_by_client,
            "wall_seconds": round(self.wall_seconds, 3),
            **extra,
        }
        (self.dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True))
        return summary
