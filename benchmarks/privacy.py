"""The privacy benchmark: global accuracy against the clients' privacy budget ε, resumable.

    python benchmarks/privacy.py --grid reduced   # about 30 minutes on 2 cores
    python benchmarks/privacy.py --grid full      # hours: re-run to resume
    python benchmarks/privacy.py --grid probe     # levers for the ε = 8 target, 15 rounds each

The accuracy benchmark's setting (Fashion-MNIST, 20 clients, 4 per round, Dirichlet alpha 0.5, the
recommended method, 50 rounds) with client training sized for DP-SGD
(``conf/experiment/fmnist_privacy.yaml``: batches of 512, three passes per round) and example-level
DP-SGD on every client (``dp.epsilon=<ε> dp.delta=1e-5``; ε = inf is the same run without DP).
Each client's noise is calibrated to spend its ε over the rounds it is planned to train in.

Writes ``benchmarks/results/privacy/<grid>/``: ``runs/<job>/``, ``results.json`` /
``results.csv`` (one row per finished job), ``table.md`` and ``accuracy_vs_epsilon.png``.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from grid import Benchmark, Job, Variant, save_figure

from fedkd.results import read_metrics, read_summary

RESULTS = Path(__file__).resolve().parent / "results" / "privacy"
BASE = "experiment=fmnist_privacy"
DELTA = 1e-5


@dataclass(frozen=True)
class Grid:
    epsilons: tuple[float, ...]  # inf: no DP
    alpha: float
    seeds: tuple[int, ...]
    rounds: int
    variants: tuple[Variant, ...] = (Variant(),)


GRIDS = {
    "full": Grid(epsilons=(1.0, 2.0, 4.0, 8.0, math.inf), alpha=0.5, seeds=(0,), rounds=50),
    "reduced": Grid(epsilons=(8.0, math.inf), alpha=0.5, seeds=(0,), rounds=15),
    # levers for the ε = 8 target, 15 rounds each (about 20 minutes a run on 2 cores)
    "probe": Grid(
        epsilons=(8.0,),
        alpha=0.5,
        seeds=(0,),
        rounds=15,
        variants=(Variant(), Variant("pretrain5", ("pretrain.epochs=5",))),
    ),
}


def jobs_of(grid: Grid) -> list[Job]:
    jobs = []
    for variant in grid.variants:
        for seed in grid.seeds:
            for eps in grid.epsilons:
                overrides = [BASE, f"partition.alpha={grid.alpha}", f"seed={seed}",
                             f"num_rounds={grid.rounds}", *variant.overrides]  # fmt: skip
                if math.isfinite(eps):
                    overrides += [f"dp.epsilon={eps}", f"dp.delta={DELTA}"]
                name = f"eps{eps:g}_a{grid.alpha}_s{seed}"
                if variant.name:
                    name = f"{variant.name}_{name}"
                jobs.append(Job(name, tuple(overrides)))
    return jobs


def row_of(run: Path) -> dict[str, Any]:
    cfg = json.loads((run / "config.json").read_text())
    summary = read_summary(run)
    rounds = read_metrics(run)
    exhausted = {c["client_id"] for r in rounds for c in r.clients if c.get("dp-exhausted", 0) == 1}
    target = cfg["dp"]["epsilon"]
    return {
        "job": run.name,
        "variant": run.name.rpartition("eps")[0].rstrip("_"),  # "" for the benchmark's setting
        "target_epsilon": math.inf if target is None else target,
        "delta": cfg["dp"]["delta"] if target is not None else None,
        "max_epsilon_spent": summary.dp_epsilon,
        "alpha": cfg["partition"]["alpha"],
        "seed": cfg["seed"],
        "rounds": summary.rounds,
        "final_accuracy": summary.final_global_accuracy,
        "best_accuracy": summary.best_global_accuracy,
        "client_accuracy_last": rounds[-1].client_accuracy_mean if rounds else None,
        "clients_exhausted": len(exhausted),
        "wall_seconds": summary.wall_seconds,
        "accuracy_by_round": [r.global_accuracy for r in rounds],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | target ε (δ = 1e-5) | largest ε spent | final global acc | best "
        "| mean client acc | clients that ran out | rounds | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["variant"], r["seed"], r["target_epsilon"])):
        spent = "–" if r["max_epsilon_spent"] is None else f"{r['max_epsilon_spent']:.2f}"
        lines.append(
            f"| {r['variant'] or 'benchmark'} | {r['target_epsilon']:g} | {spent} | "
            f"{r['final_accuracy']:.4f} | "
            f"{r['best_accuracy']:.4f} | {r['client_accuracy_last']:.4f} | "
            f"{r['clients_exhausted']} | {r['rounds']} | {r['wall_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], out: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in sorted(rows, key=lambda r: r["target_epsilon"]):
        acc = r["accuracy_by_round"]
        label = f"ε = {r['target_epsilon']:g}" + (f", {r['variant']}" if r["variant"] else "")
        left.plot(range(1, len(acc) + 1), acc, label=label)
    left.set_xlabel("round")
    left.set_ylabel("global accuracy")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    finite = sorted((r["target_epsilon"], r["final_accuracy"]) for r in rows
                    if math.isfinite(r["target_epsilon"]) and not r["variant"])  # fmt: skip
    if finite:
        right.plot(*zip(*finite, strict=True), marker="o", label="DP-SGD")
    for r in rows:
        if not math.isfinite(r["target_epsilon"]):
            right.axhline(r["final_accuracy"], color="grey", linestyle="--", label="no DP")
    right.set_xscale("log", base=2)
    right.set_xlabel("ε per client (δ = 1e-5)")
    right.set_ylabel("final global accuracy")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    return save_figure(
        fig,
        out / "accuracy_vs_epsilon.png",
        "Fashion-MNIST, 20 clients (4 per round), recommended method, alpha 0.5",
    )


BENCHMARK = Benchmark(__doc__ or "", RESULTS, BASE, GRIDS, jobs_of, row_of, table, plot)

if __name__ == "__main__":
    BENCHMARK.main()
