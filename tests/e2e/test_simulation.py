"""End to end through the `fedkd` command: Hydra -> Flower's simulation engine.

Real Flower, real data (scikit-learn digits), heterogeneous students, several rounds.
"""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from fedkd import algorithms
from fedkd.results import read_metrics
from fedkd.schema import Component, component_field
from server.strategies import DSFL as DSFLStrategy
from tests.e2e.conftest import QUICK_DSFL, run_fedkd

FLOAT16_BYTES = 2
MESSAGE_OVERHEAD = 1000  # the array's np.save header, keys, the metric record


def test_global_model_learns_with_heterogeneous_clients(dsfl_run: Path):
    cfg = json.loads((dsfl_run / "config.json").read_text())
    assert cfg["clients"]["num_clients"] >= 3 and cfg["num_rounds"] >= 3
    rounds = read_metrics(dsfl_run)
    assert len(rounds) == cfg["num_rounds"]
    archs = {c["architecture"] for c in rounds[-1].clients}
    assert len(archs) >= 3, archs
    summary = json.loads((dsfl_run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["final_global_accuracy"] >= 0.80  # chance is 0.10
    assert summary["final_global_accuracy"] == rounds[-1].global_accuracy
    assert (dsfl_run / "global_model.pt").is_file()
    # the launcher measured its process tree: several Python processes that import torch
    assert 200 * 2**20 < summary["peak_memory_bytes"] < 16 * 2**30


def test_clients_sent_only_soft_labels_counts_and_metrics(dsfl_run: Path):
    for r in read_metrics(dsfl_run):
        # every reply passed validation: exactly {soft labels} + a metric record, nothing else
        assert r.num_accepted == r.num_sampled and r.num_rejected == r.num_failed == 0
        # and the bytes that came up are those soft labels: no room for weights or raw data
        per_client = r.public_samples * 10 * FLOAT16_BYTES
        assert r.uplink_bytes <= r.num_accepted * (per_client + MESSAGE_OVERHEAD)
        for client in r.clients:
            assert per_client < client["uplink_bytes"] <= per_client + MESSAGE_OVERHEAD
            assert set(client) - {  # what the server adds
                "client_id",
                "architecture",
                "uplink_bytes",
                "downlink_bytes",
                "public_accuracy",
            } <= {
                "num-examples",
                "test-accuracy",
                "test-loss",
                "train-loss",
                "digest-loss",
                "student-round",
            }


def test_same_seed_same_metrics_on_either_engine(dsfl_run: Path, tmp_path: Path):
    """The default in-process engine with fedkd's worker processes, and `flwr run` on a private
    SuperLink with Flower's Ray actors, drive the same Flower engine: same seed, same metrics
    and the same bytes on the wire."""
    simulation = json.loads((dsfl_run / "config.json").read_text())["simulation"]
    assert (simulation["engine"], simulation["backend"]) == ("in_process", "process")
    again = run_fedkd(
        tmp_path, *QUICK_DSFL, "simulation.engine=superlink", "simulation.backend=ray",
        name="again",
    )  # fmt: skip
    first, second = read_metrics(dsfl_run), read_metrics(again)
    assert [(r.global_accuracy, r.consensus_accuracy) for r in first] == [
        (r.global_accuracy, r.consensus_accuracy) for r in second
    ]
    assert [(r.uplink_bytes, r.downlink_bytes) for r in first] == [
        (r.uplink_bytes, r.downlink_bytes) for r in second
    ]


def test_fedmd_runs_end_to_end(tmp_path: Path):
    out = run_fedkd(tmp_path, "experiment=digits_quick", "algorithm=fedmd", "partition=dirichlet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 3
    assert summary["final_global_accuracy"] >= 0.80


def test_python_api_gives_the_cli_results(dsfl_run: Path, tmp_path: Path, monkeypatch):
    """`fedkd.run(overrides)` runs the same config as `fedkd OVERRIDES`, with the same results."""
    import fedkd

    monkeypatch.chdir(tmp_path)
    result = fedkd.run(QUICK_DSFL, output_dir=tmp_path / "api")
    assert result.output_dir == tmp_path / "api"
    assert result.summary == json.loads((result.output_dir / "summary.json").read_text())
    assert result.rounds == read_metrics(result.output_dir)
    cli = json.loads((dsfl_run / "summary.json").read_text())
    same = ("status", "rounds", "final_global_accuracy", "best_global_accuracy", "best_round",
            "uplink_bytes_total", "downlink_bytes_total", "rejected_replies_total")  # fmt: skip
    assert {k: result.summary[k] for k in same} == {k: cli[k] for k in same}
    per_round = [(r.global_accuracy, r.consensus_accuracy) for r in read_metrics(dsfl_run)]
    assert [(r.global_accuracy, r.consensus_accuracy) for r in result.rounds] == per_round


def test_a_multirun_sweep_runs_every_job_in_one_process(tmp_path: Path):
    """`fedkd -m`: Hydra runs the jobs one after another in one process; each starts and stops
    its own Flower engine and client workers, and learns."""
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "fedkd", "-m", *QUICK_DSFL, "num_rounds=1", "seed=0,1",
         f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert all(s["final_global_accuracy"] >= 0.6 for s in summaries), summaries
    configs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/config.json"))]
    assert [c["seed"] for c in configs] == [0, 1]


class BrokenStrategy(DSFLStrategy):
    """A server part that fails once the run has started."""

    def start(self, grid):
        raise RuntimeError("the strategy broke")


@dataclasses.dataclass(frozen=True)
class BrokenDSFL(algorithms.Distillation):
    """DS-FL's keys and client part, with :class:`BrokenStrategy` as its server part."""

    server: ClassVar[str] = f"{__name__}.BrokenStrategy"
    client: ClassVar[str | None] = algorithms.DSFL.client

    postprocess: Component | None = component_field("postprocess", "era")


def test_a_run_whose_server_fails_raises_a_launch_error_and_keeps_its_summary(tmp_path: Path):
    """The ServerApp fails: the summary says why, and the Python API raises LaunchError with
    that reason (the in-process engine runs the ServerApp in this process, so this module's
    strategy is importable)."""
    import fedkd
    from fedkd.launch import LaunchError

    out = tmp_path / "run"
    broken = ["algorithm=dsfl", "~algorithm.name", f"+algorithm._target_={__name__}.BrokenDSFL"]
    with pytest.raises(LaunchError, match="the strategy broke"):
        fedkd.run(["experiment=digits_quick", *broken], output_dir=out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "the strategy broke" in summary["error"]
