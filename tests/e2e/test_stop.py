"""A run stopped by SIGTERM or SIGINT ends within seconds, says so, and leaves no process behind."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from fedkd.launch import process_tree, still_running
from fedkd.results import TIMING_FIELDS, read_metrics


def test_sigterm_stops_the_run_cleanly(tmp_path: Path):
    """(SIGINT, Ctrl-C, stops the run in the resume test below.)"""
    out, signum = tmp_path / "run", signal.SIGTERM
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
        tree = process_tree(proc.pid)  # fedkd, its workers' zygote and two workers
        assert len(tree) >= 4, tree
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


RESUMABLE = [
    "experiment=digits_quick",
    "num_rounds=4",
    "model.ema_decay=0.5",
    "clients.fraction=0.5",
    "attack=replay",
    "attack.clients=[1]",
    "dp.noise_multiplier=1.0",
]  # fmt: skip  -- every kind of state: EMA, running consensus, sampling, an attacker, DP


def _fedkd(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fedkd", *args], cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _comparable(run: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(r.to_json()).items() if k not in TIMING_FIELDS}
        for r in read_metrics(run)
    ]


def test_a_stopped_run_resumes_to_exactly_the_uninterrupted_metrics(tmp_path: Path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    # the uninterrupted run goes on beside the one that is stopped (seeded: they cannot differ)
    uninterrupted = _fedkd(
        *RESUMABLE, f"output_dir={straight}", f"hydra.run.dir={straight}", cwd=tmp_path
    )
    proc = _fedkd(*RESUMABLE, f"output_dir={stopped}", f"hydra.run.dir={stopped}", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while not ((stopped / "metrics.jsonl").is_file() and len(read_metrics(stopped)) >= 2):
            assert proc.poll() is None, proc.stdout.read()[-3000:] if proc.stdout else ""
            assert time.monotonic() < deadline, "no second round in 300 s"
            time.sleep(0.2)
        tree = process_tree(proc.pid)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = proc.communicate(timeout=60)
        straight_output, _ = uninterrupted.communicate(timeout=600)
    finally:
        for p in (proc, uninterrupted):
            if p.poll() is None:
                p.kill()
    assert uninterrupted.returncode == 0, straight_output[-3000:]
    assert proc.returncode == 128 + signal.SIGINT, output[-3000:]
    time.sleep(2)
    assert still_running(tree) == [], f"left behind: {still_running(tree)}"
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 2 <= summary["rounds"] < 4, output[-3000:]
    assert (stopped / "checkpoint" / "server.pt").is_file()

    proc = _fedkd(f"resume={stopped}", cwd=tmp_path)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 4
    assert summary["resumed_after"] in ([2], [3])
    assert _comparable(stopped) == _comparable(straight)  # identical, round by round
    assert not (stopped / "checkpoint").exists()  # a completed run keeps no states

    proc = _fedkd(f"resume={stopped}", cwd=tmp_path)  # nothing left to resume
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "nothing to resume" in output
