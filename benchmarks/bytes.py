"""The bytes benchmark: global accuracy against uplink bytes, per soft-label codec and public
subset size, resumable.

    python benchmarks/bytes.py --grid reduced   # about 30 minutes on 2 cores
    python benchmarks/bytes.py --grid full      # hours: re-run to resume

The accuracy benchmark's setting (``conf/experiment/fmnist_dsfl_plus.yaml``: Fashion-MNIST, 20
clients, 4 per round, Dirichlet alpha 0.5, the recommended method, 50 rounds); every job adds
``algorithm.codec=<codec>`` and ``public_per_round=<n>``. The reference is float32 soft labels on
the whole round subset (2 000 samples). The issue's target: at most 0.01 MB (10 000 bytes) of
uplink per client per round, losing at most 1 point of global accuracy against the reference.

Writes ``benchmarks/results/bytes/<grid>/``: ``runs/<job>/``, ``results.json`` /
``results.csv`` (one row per finished job), ``table.md`` and ``accuracy_vs_uplink.png``.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from grid import Benchmark, Job, save_figure

from fedkd.results import read_metrics, read_summary

RESULTS = Path(__file__).resolve().parent / "results" / "bytes"
BASE = "experiment=fmnist_dsfl_plus"
TARGET_BYTES = 10_000  # 0.01 MB per client per round
REFERENCE = ("float32", 2000)

# name -> the codec's config node (Hydra override syntax)
CODECS = {
    "float32": "float32",
    "float16": "float16",
    "int8": "int8",
    "top2_int8": "{name:topk,k:2,values:int8}",
    "top1": "{name:topk,k:1,values:int8}",
}


@dataclass(frozen=True)
class Grid:
    points: tuple[tuple[str, int], ...]  # (codec, public samples per round)
    seeds: tuple[int, ...]
    rounds: int
    repeats: tuple[tuple[str, int], ...] = ()  # points also run at every seed (others: seed 0)


GRIDS = {
    "full": Grid(
        points=(
            REFERENCE,
            ("float16", 2000),
            ("int8", 2000),
            ("int8", 1000),
            ("int8", 500),
            ("top2_int8", 2000),
            ("top2_int8", 1000),
            ("top1", 2000),
        ),
        seeds=(0, 1),
        rounds=50,
        repeats=(REFERENCE, ("top2_int8", 1000), ("top1", 2000)),  # top1: the pick
    ),
    "reduced": Grid(points=(REFERENCE, ("int8", 1000), ("top2_int8", 1000)), seeds=(0,), rounds=15),
}


def jobs_of(grid: Grid) -> list[Job]:
    jobs = []
    for seed in grid.seeds:
        for codec, per_round in grid.points:
            if seed != grid.seeds[0] and (codec, per_round) not in grid.repeats:
                continue
            overrides = (
                BASE,
                f"algorithm.codec={CODECS[codec]}",
                f"public_per_round={per_round}",
                "partition.alpha=0.5",
                f"seed={seed}",
                f"num_rounds={grid.rounds}",
            )
            jobs.append(Job(f"{codec}_n{per_round}_s{seed}", overrides))
    return jobs


def row_of(run: Path) -> dict[str, Any]:
    cfg = json.loads((run / "config.json").read_text())
    summary = read_summary(run)
    rounds = read_metrics(run)
    codec = cfg["algorithm"]["codec"]
    return {
        "job": run.name,
        "codec": run.name.rsplit("_n", 1)[0],
        "codec_config": codec,
        "public_per_round": cfg["public_per_round"],
        "seed": cfg["seed"],
        "rounds": summary.rounds,
        "final_accuracy": summary.final_global_accuracy,
        "best_accuracy": summary.best_global_accuracy,
        "uplink_bytes_per_client_round": summary.uplink_bytes_per_client_round,
        "downlink_bytes_per_client_round": summary.downlink_bytes_per_client_round,
        "accuracy_by_round": [r.global_accuracy for r in rounds],
        "wall_seconds": summary.wall_seconds,
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def table(rows: list[dict[str, Any]]) -> str:
    """Per (codec, subset): uplink per client per round, final accuracy (mean over seeds) and
    its change against the float32 reference (mean over the seeds both have)."""
    points = sorted({(r["codec"], r["public_per_round"]) for r in rows},
                    key=lambda p: (p != REFERENCE, -p[1], p[0]))  # fmt: skip
    ref = {r["seed"]: r["final_accuracy"] for r in rows
           if (r["codec"], r["public_per_round"]) == REFERENCE}  # fmt: skip
    lines = ["| codec | public samples / round | seeds | uplink bytes / client / round | "
             "downlink bytes / client / round | final acc | vs float32 (points) | target met |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for codec, per_round in points:
        here = [r for r in rows if (r["codec"], r["public_per_round"]) == (codec, per_round)]
        acc = _mean([r["final_accuracy"] for r in here])
        shared = [r for r in here if r["seed"] in ref]
        delta = (_mean([r["final_accuracy"] - ref[r["seed"]] for r in shared])
                 if shared else None)  # fmt: skip
        up = _mean([r["uplink_bytes_per_client_round"] for r in here])
        down = _mean([r["downlink_bytes_per_client_round"] for r in here])
        met = "–" if delta is None else ("yes" if up <= TARGET_BYTES and delta >= -0.01 else "no")
        lines.append(
            f"| {codec} | {per_round} | {len(here)} | {up:,.0f} | {down:,.0f} | {acc:.4f} | "
            + ("–" if delta is None else f"{100 * delta:+.2f}")
            + f" | {met} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for codec in sorted({r["codec"] for r in rows}):
        points = sorted((r["uplink_bytes_per_client_round"], r["final_accuracy"])
                        for r in rows if r["codec"] == codec and r["seed"] == 0)  # fmt: skip
        ax.plot(*zip(*points, strict=True), marker="o", label=codec)
    ax.axvline(TARGET_BYTES, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("uplink bytes per client per round (log)")
    ax.set_ylabel("final global accuracy")
    ax.set_title("Fashion-MNIST, alpha 0.5, recommended method, seed 0")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out / "accuracy_vs_uplink.png")


BENCHMARK = Benchmark(__doc__ or "", RESULTS, BASE, GRIDS, jobs_of, row_of, table, plot)

if __name__ == "__main__":
    BENCHMARK.main()
