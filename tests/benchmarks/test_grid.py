"""The benchmarks' shared runner (``benchmarks/grid.py``): a stopped run continues, it does not
start again."""

import json
import sys
from pathlib import Path

import pytest

from fedkd.checkpoint import CHECKPOINT_DIR, SERVER_FILE
from fedkd.config import to_json
from fedkd.results import CONFIG_FILE, SUMMARY_FILE
from tests.conftest import digits_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # scripts, no package
import grid


def _stopped_run(out: Path, cfg, status: str | None = "interrupted") -> None:
    out.mkdir(parents=True)
    (out / CONFIG_FILE).write_text(to_json(cfg))
    if status is not None:
        (out / SUMMARY_FILE).write_text(json.dumps({"status": status}))
    (out / CHECKPOINT_DIR).mkdir()
    (out / CHECKPOINT_DIR / SERVER_FILE).write_bytes(b"state")


@pytest.mark.parametrize("status", ["interrupted", None])  # None: killed before its summary
def test_a_stopped_run_of_the_same_config_is_resumed(tmp_path, monkeypatch, status):
    calls = []
    monkeypatch.setattr(grid, "run", lambda cfg, resume=False: calls.append((cfg, resume)))
    out = tmp_path / "runs" / "job"
    cfg = digits_config(output_dir=str(out))
    _stopped_run(out, cfg, status)
    grid.run_job(out, cfg)
    assert len(calls) == 1 and calls[0][1] is True
    assert calls[0][0].output_dir == str(out.resolve())


def test_a_stopped_run_of_another_config_starts_again(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(grid, "run", lambda cfg, resume=False: calls.append((cfg, resume)))
    out = tmp_path / "runs" / "job"
    _stopped_run(out, digits_config(output_dir=str(out)))
    wanted = digits_config("seed=5", output_dir=str(out))
    grid.run_job(out, wanted)
    assert calls == [(wanted, False)]


def test_the_accuracy_matrix_resumes_through_the_shared_runner():
    """benchmarks/run.py used to start a stopped run from round 1 again."""
    import run as matrix  # benchmarks/run.py

    assert matrix.run_job is grid.run_job
