"""A run stopped by SIGTERM or SIGINT ends within seconds, says so, and leaves no process behind."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedkd.launch import process_tree, still_running
from fedkd.results import read_metrics

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_run_cleanly(tmp_path: Path, signum: int):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedkd", "experiment=digits_quick", "num_rounds=500",
         f"output_dir={out}", f"hydra.run.dir={out}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not ((out / "metrics.jsonl").is_file() and len(read_metrics(out)) >= 1):
            assert proc.poll() is None, proc.stdout.read()[-3000:] if proc.stdout else ""
            assert time.monotonic() < deadline, "no round finished in 300 s"
            time.sleep(0.5)
        tree = process_tree(proc.pid)  # fedkd, its SuperLink, SuperExec, simulation, Ray
        assert len(tree) >= 5, tree
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=60)  # within seconds (a minute at most on CI)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, output[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert 1 <= summary["rounds"] == len(read_metrics(out)) < 500
    time.sleep(2)  # processes already killed may take a moment to be reaped
    assert still_running(tree) == [], f"left behind: {still_running(tree)}"
