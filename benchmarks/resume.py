"""The resume benchmark: a run stopped by SIGTERM after round k and resumed, against the same run
uninterrupted -- their per-round curves must be identical.

    python benchmarks/resume.py                  # about 10 minutes on 2 cores
    python benchmarks/resume.py --stop-after 4 -- experiment=digits_quick num_rounds=8

Writes ``benchmarks/results/resume/``: both run folders, ``results.json`` (every round of both,
and whether they agree), ``table.md`` and ``curves.png``.
"""

import argparse
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fedkd.results import read_metrics, read_summary

RESULTS = Path(__file__).resolve().parent / "results" / "resume"
DEFAULT = [
    "experiment=fmnist_dsfl_plus",
    "partition.alpha=0.5",
    "num_rounds=12",
    "model.ema_decay=0.5",
]  # fmt: skip  -- the recommended method on the accuracy benchmark's setting, with an EMA
COMPARED = ("global_accuracy", "global_loss", "consensus_accuracy", "client_accuracy_mean")


def _same(u: float, v: float) -> bool:
    return u == v or (math.isnan(u) and math.isnan(v))


def fedkd(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fedkd", *args], cwd=RESULTS)


def run_straight(overrides: list[str], out: Path) -> None:
    proc = fedkd(*overrides, f"output_dir={out}", f"hydra.run.dir={out}")
    if proc.wait() != 0:
        raise SystemExit(f"the uninterrupted run failed (exit {proc.returncode})")


def run_stopped_and_resumed(overrides: list[str], out: Path, stop_after: int) -> float:
    """Returns the seconds between the stop and the resumed run's start."""
    proc = fedkd(*overrides, f"output_dir={out}", f"hydra.run.dir={out}")
    while not ((out / "metrics.jsonl").is_file() and len(read_metrics(out)) >= stop_after):
        if proc.poll() is not None:
            raise SystemExit("the run ended before it could be stopped")
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    stopped = time.monotonic()
    if read_summary(out).status != "interrupted":
        raise SystemExit(f"the stopped run says {read_summary(out).status!r}")
    resumed = fedkd(f"resume={out}")
    gap = time.monotonic() - stopped
    if resumed.wait() != 0:
        raise SystemExit(f"the resumed run failed (exit {resumed.returncode})")
    return gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop-after", type=int, default=5, help="rounds before SIGTERM")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (default: see DEFAULT)")
    args = parser.parse_args()
    overrides = args.overrides or DEFAULT
    straight, stopped = RESULTS / "runs" / "uninterrupted", RESULTS / "runs" / "resumed"
    for folder in (straight, stopped):
        shutil.rmtree(folder, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    run_straight(overrides, straight)
    run_stopped_and_resumed(overrides, stopped, args.stop_after)

    a, b = read_metrics(straight), read_metrics(stopped)
    rounds = [
        {"round": x.round, **{f"{k}_uninterrupted": getattr(x, k) for k in COMPARED},
         **{f"{k}_resumed": getattr(y, k) for k in COMPARED}}
        for x, y in zip(a, b, strict=True)
    ]  # fmt: skip
    identical = len(a) == len(b) and all(
        _same(getattr(x, k), getattr(y, k)) for x, y in zip(a, b, strict=True) for k in COMPARED
    )
    summary = read_summary(stopped)
    result = {
        "overrides": overrides,
        "stopped_after_round": summary.resumed_after,
        "identical": identical,
        "rounds": rounds,
    }
    (RESULTS / "results.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"Overrides: `{' '.join(overrides)}`; SIGTERM after round {summary.resumed_after}, then "
        f"`fedkd resume=<folder>`. Identical per-round metrics: **{result['identical']}**.\n",
        "| round | global acc, uninterrupted | global acc, stopped + resumed |",
        "|---|---|---|",
    ]
    lines += [f"| {x.round} | {x.global_accuracy:.4f} | {y.global_accuracy:.4f} |"
              for x, y in zip(a, b, strict=True)]  # fmt: skip
    (RESULTS / "table.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([r.round for r in a], [r.global_accuracy for r in a], lw=4, alpha=0.4,
            label="uninterrupted")  # fmt: skip
    ax.plot([r.round for r in b], [r.global_accuracy for r in b], "k--o", ms=3,
            label="stopped and resumed")  # fmt: skip
    for k in summary.resumed_after:
        ax.axvline(k + 0.5, color="red", lw=1, label=f"stopped after round {k}")
    ax.set_xlabel("round")
    ax.set_ylabel("global accuracy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "curves.png", dpi=110)
    print((RESULTS / "table.md").read_text())


if __name__ == "__main__":
    main()
