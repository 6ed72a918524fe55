"""The non-federated reference points write the same run folder as a federated run."""

import dataclasses
import subprocess
import sys

from fedkd.experiment import sample_client_ids
from fedkd.launch import run
from fedkd.results import read_metrics
from tests.conftest import digits_config


def test_local_only_trains_each_client_alone(tmp_path):
    cfg = digits_config("algorithm=local", "clients.fraction=0.5", "clients.min_clients=1")
    cfg = dataclasses.replace(cfg, output_dir=str(tmp_path), num_rounds=2)
    summary = run(cfg)
    rounds = read_metrics(tmp_path)
    assert summary["status"] == "completed" and len(rounds) == 2
    assert rounds[-1].client_accuracy_mean > 0.5  # digits: each client alone still learns
    assert summary["uplink_bytes_total"] == 0 and summary["final_global_accuracy"] is None
    assert [r.num_sampled for r in rounds] == [2, 2]


def test_centralized_is_the_global_model_on_all_private_data(tmp_path):
    cfg = dataclasses.replace(
        digits_config("algorithm=centralized"), output_dir=str(tmp_path), num_rounds=2
    )
    summary = run(cfg)
    assert summary["final_global_accuracy"] > 0.9
    assert (tmp_path / "global_model.pt").is_file()


def test_client_sampling_is_seeded_and_independent_of_id_order():
    cfg = digits_config("clients.num_clients=20", "clients.fraction=0.2")
    first = sample_client_ids(cfg, 3, list(range(20)))
    assert first == sample_client_ids(cfg, 3, list(reversed(range(20))))
    assert len(first) == 4 and first != sample_client_ids(cfg, 4, list(range(20)))


def test_cli_runs_a_baseline_without_flower(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fedkd", "experiment=digits_quick", "algorithm=local",
         "num_rounds=1", f"output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "final global accuracy n/a" in proc.stderr + proc.stdout
    assert "flower-superlink" not in proc.stderr + proc.stdout
