"""The scale benchmark: many simulated clients -- learning, peak memory and round time, resumable.

    python benchmarks/scale.py --grid reduced   # about 30 minutes on 2 cores
    python benchmarks/scale.py --grid full      # hours: re-run to resume
    python benchmarks/scale.py --grid probe     # the learning run's schedules, 10 rounds each

From ``conf/experiment/fmnist_cross_device.yaml`` (Fashion-MNIST, the recommended method, at
least 20 local steps per client and round, clients that digest the global model's answers for
two epochs before their private steps):

* ``learn``: 1 000 clients of about 50 images, 10 % per round, 30 rounds (target: >= 0.80 global
  accuracy within 30 rounds, peak memory <= 2 GiB);
* ``size``: 10, 100, 1 000, 10 000 clients with 10 sampled per round, 3 rounds (10 000 clients:
  target <= 4 GiB) -- round time should not grow with the clients that exist;
* ``sampled``: 1 000 clients with 10, 50, 100 sampled per round, 3 rounds -- round time should
  grow linearly with the clients sampled;
* ``learn_..._joint``: the learning run with the preset's schedule before (one pass over the
  private and as many teacher-labelled samples);
* ``probe``: the learning run at 10 rounds with one digest epoch (``seq1``), the preset's two
  (``seq2``) and the preset with the server distilling on every remembered public sample
  (``seq2_memory``), beside the joint run's first 10 rounds.

The size and sampled runs measure memory and round time with the joint schedule (one pass, as
they were first measured): the schedule changes a client's work, not what the engine holds.

Peak memory is the launcher's whole process tree (``summary.json``'s ``peak_memory_bytes``:
summed proportional set sizes, so pages the processes share count once). Round time is the mean
of rounds 2 and later (round 1 includes the clients' first data load).

Writes ``benchmarks/results/scale/<grid>/``: ``runs/<job>/``, ``results.json`` / ``results.csv``,
``table.md`` and ``scale.png``.
"""

from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from grid import Benchmark, Job, Variant, save_figure

from fedkd.results import read_metrics, read_summary

RESULTS = Path(__file__).resolve().parent / "results" / "scale"
BASE = "experiment=fmnist_cross_device"
GIB = 2**30


@dataclass(frozen=True)
class Grid:
    learn_rounds: int  # 0: no learning run
    sizes: tuple[int, ...]  # clients that exist, 10 sampled per round
    sampled: tuple[int, ...]  # clients sampled per round, out of 1 000
    rounds: int  # of the size and sampled runs
    learn: tuple[Variant, ...] = (Variant(),)  # the learning run's variants


JOINT = ("clients.kd_schedule=joint", "clients.digest_epochs=1")  # the preset's schedule before

GRIDS = {
    "full": Grid(
        learn_rounds=30,
        sizes=(10, 100, 1000, 10_000),
        sampled=(10, 50, 100),
        rounds=3,
        learn=(Variant(), Variant("joint", JOINT)),
    ),
    "reduced": Grid(learn_rounds=0, sizes=(10, 100, 1000), sampled=(10, 50), rounds=3),
    "probe": Grid(
        learn_rounds=10,
        sizes=(),
        sampled=(),
        rounds=3,
        learn=(
            Variant("seq1", ("clients.digest_epochs=1",)),
            Variant("seq2"),
            Variant("seq2_memory", ("algorithm.distill_on_memory=true",)),
        ),
    ),
}


def _clients(num: int, per_round: int) -> list[str]:
    # 5 images each at 10 000 clients: Dirichlet(0.5) leaves some with none, so an IID split
    small = ["partition=iid"] if num > 1000 else []
    return [f"clients.num_clients={num}", f"clients.fraction={per_round / num}",
            f"clients.min_clients={min(per_round, num)}", *small]  # fmt: skip


def jobs_of(grid: Grid) -> list[Job]:
    jobs = []
    if grid.learn_rounds:
        for variant in grid.learn:
            overrides = (BASE, f"num_rounds={grid.learn_rounds}", "seed=0", *variant.overrides)
            name = "learn_c1000_k100" + (f"_{variant.name}" if variant.name else "")
            jobs.append(Job(name, overrides))
    for num in grid.sizes:
        overrides = (BASE, *JOINT, *_clients(num, 10), f"num_rounds={grid.rounds}", "seed=0")
        jobs.append(Job(f"size_c{num}_k10", overrides))
    for k in grid.sampled:
        if k == 10 and 1000 in grid.sizes:
            continue  # the size sweep's 1 000-client run
        overrides = (BASE, *JOINT, *_clients(1000, k), f"num_rounds={grid.rounds}", "seed=0")
        jobs.append(Job(f"sampled_c1000_k{k}", overrides))
    return jobs


def row_of(run: Path) -> dict[str, Any]:
    summary = read_summary(run)
    rounds = read_metrics(run)
    later = [r.round_seconds for r in rounds[1:]] or [r.round_seconds for r in rounds]
    return {
        "job": run.name,
        "num_clients": len({c["client_id"] for c in summary.clients}),
        "sampled_per_round": round(mean(r.num_sampled for r in rounds)),
        "rounds": summary.rounds,
        "final_accuracy": summary.final_global_accuracy,
        "best_accuracy": summary.best_global_accuracy,
        "round_seconds": mean(later),
        "first_round_seconds": rounds[0].round_seconds if rounds else None,
        "peak_memory_gib": (summary.peak_memory_bytes or 0) / GIB,
        "wall_seconds": summary.wall_seconds,
        "accuracy_by_round": [r.global_accuracy for r in rounds],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| job | clients | sampled per round | rounds | final acc | round s (2+) | round 1 s "
        "| peak memory GiB | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["job"].split("_")[0], r["num_clients"],
                                         r["sampled_per_round"])):  # fmt: skip
        lines.append(
            f"| {r['job']} | {r['num_clients']} | {r['sampled_per_round']} | {r['rounds']} | "
            f"{r['final_accuracy']:.4f} | {r['round_seconds']:.1f} | "
            f"{r['first_round_seconds']:.1f} | {r['peak_memory_gib']:.2f} | "
            f"{r['wall_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], out: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    sizes = sorted((r for r in rows if r["job"].startswith("size")),
                   key=lambda r: r["num_clients"])  # fmt: skip
    sampled = sorted((r for r in rows if r["num_clients"] == 1000 and r["rounds"] <= 5),
                     key=lambda r: r["sampled_per_round"])  # fmt: skip
    left, middle, right = axes
    if sizes:
        xs = [r["num_clients"] for r in sizes]
        left.plot(xs, [r["peak_memory_gib"] for r in sizes], marker="o", label="peak memory GiB")
        left.plot(xs, [r["round_seconds"] for r in sizes], marker="s", label="round s")
        left.set_xscale("log")
        left.set_xlabel("clients that exist (10 sampled per round)")
        left.legend(fontsize=8)
    if sampled:
        xs = [r["sampled_per_round"] for r in sampled]
        middle.plot(xs, [r["round_seconds"] for r in sampled], marker="s", label="round s")
        middle.plot(xs, [r["peak_memory_gib"] for r in sampled], marker="o", label="peak GiB")
        middle.set_xlabel("clients sampled per round (of 1 000)")
        middle.legend(fontsize=8)
    for r in rows:
        if r["job"].startswith("learn"):
            acc = r["accuracy_by_round"]
            right.plot(range(1, len(acc) + 1), acc, label=r["job"])
    right.axhline(0.80, color="grey", linestyle="--", label="target")
    right.set_xlabel("round")
    right.set_ylabel("global accuracy")
    right.legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    return save_figure(
        fig, out / "scale.png", "Fashion-MNIST cross-device (recommended method, >= 20 local steps)"
    )


BENCHMARK = Benchmark(__doc__ or "", RESULTS, BASE, GRIDS, jobs_of, row_of, table, plot)

if __name__ == "__main__":
    BENCHMARK.main()
