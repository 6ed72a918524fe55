"""Issue 12's probes: one lever at a time on the recommended method, 20 rounds, resumable.

    python benchmarks/probes.py                      # every lever: about 4 minutes a run
    python benchmarks/probes.py --only mnist         # some of them (`make mnist` first)
    python benchmarks/probes.py --report-only

Every job is ``experiment=fmnist_dsfl_plus num_rounds=20`` (the accuracy benchmark's federation)
plus the overrides of one variant (a lever), at each of its alphas and the grid's seeds; ``base``
is the method as the full matrix runs it. The consensus is the global model's teacher, so each
row reports it beside the global model: its accuracy on the round's public samples, and that of
the plain mean of the same replies (the ensemble of the round's students: what a combine rule
starts from).

Writes ``benchmarks/results/probes/<grid>/``: ``runs/<job>/`` (run folders), ``results.json`` and
``results.csv`` (one row per finished job), ``table.md`` and ``consensus_vs_round.png``.
"""

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from grid import Benchmark, Job, save_figure

from fedkd.results import read_metrics, read_summary

RESULTS = Path(__file__).resolve().parent / "results" / "probes"
BASE = "experiment=fmnist_dsfl_plus"
ROUNDS = 20
LAST = 5  # rounds averaged at the end: one round of 4 sampled clients is noisy


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]
    alphas: tuple[float, ...] = (0.5, 0.1)


@dataclass(frozen=True)
class Grid:
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...]
    rounds: int = ROUNDS


def _confidence(power: float) -> tuple[str, ...]:
    return (f"algorithm.combine={{name: class_weighted, confidence: {power:g}}}",)


COSINE = ("model.lr_schedule=cosine",)
MNIST_PUBLIC = ("public=mnist", "dataset.num_private=50000")  # = experiment fmnist_public_mnist
NO_MEMORY = ("algorithm.consensus_memory=false", "algorithm.memory_decay=1.0")
VIEWS = ("views.shift=2", "views.flip=true", "views.mixup=1.0")
REPLAY8 = ("algorithm.replay_rounds=8", "model.distill_epochs=1")
REPLAY4 = ("algorithm.replay_rounds=4", "model.distill_epochs=1")
NO_DIGEST = ("clients.kd_schedule=sequential", "clients.digest_epochs=0",
             "algorithm.client_teacher=null")  # fmt: skip
ALL_TOP2 = ("public_per_round=10000", "algorithm.codec={name: topk, k: 2, values: int8}")
OOD_VIEWS = ("views.zoom=2.0", *VIEWS)  # a zoomed MNIST stroke looks more like a garment
OOD_VIEWS3 = ("views.zoom=3.0", *VIEWS)
TOP2_8K = ("public_per_round=8000", "algorithm.codec={name: topk, k: 2, values: int8}")
OOD_METHOD = (*OOD_VIEWS, *NO_MEMORY, *TOP2_8K, *NO_DIGEST, *REPLAY4, *COSINE)

# One grid, the levers in the order they were built; ``--only <name>`` runs some of them.
GRIDS = {
    "levers": Grid(
        variants=(
            Variant("base", ()),
            # lever 1: a client's say moves to the samples it is surer of
            Variant("confidence1", _confidence(1)),
            Variant("confidence2", _confidence(2)),
            # lever 3: one cosine schedule over the run, on this round's samples or on every
            # remembered one (the running consensus over the whole public set)
            Variant("cosine", COSINE),
            Variant("cosine_memory", (*COSINE, "algorithm.distill_on_memory=true")),
            # lever 2: a self-supervised start on the public images (k-means clusters)
            Variant("pretrain5", ("pretrain.epochs=5",)),
            # the public set from another domain (`make mnist`): how much worse a consensus on
            # MNIST digits teaches than one on Fashion-MNIST images, and what lever 1 gives there
            Variant("mnist", MNIST_PUBLIC, (0.5,)),
            Variant("mnist_confidence1", (*MNIST_PUBLIC, *_confidence(1)), (0.5,)),
            # lever 1, client side: abstain on the public samples farthest from one's own data
            Variant("abstain30", ("clients.abstain=0.3",)),
            Variant("mnist_abstain30", (*MNIST_PUBLIC, "clients.abstain=0.3"), (0.5,)),
            # lever 3, consistent views (fedkd.views): clients label the same zoomed, shifted,
            # mirrored and mixed views the global model learns on (no running consensus: a
            # view differs every round); above all for a public set from another domain
            Variant("mnist_views", (*MNIST_PUBLIC, *OOD_VIEWS, *NO_MEMORY), (0.5,)),
            # ... on all 10 k digits a round (5x the views), top-2 soft labels in 0.04 MB
            Variant("mnist_views_10k", (*MNIST_PUBLIC, *OOD_VIEWS, *NO_MEMORY, *ALL_TOP2), (0.5,)),
            # ... with clients that do not digest the teacher: clients that learn the global
            # model's answers on digits echo it back (the global model stalled at 0.54)
            Variant(
                "mnist_views_10k_nodigest",
                (*MNIST_PUBLIC, *OOD_VIEWS, *NO_MEMORY, *ALL_TOP2, *NO_DIGEST),
                (0.5,),
            ),
            # ... distilled each round on the last 5 rounds' views (1 epoch: as many steps as 3
            # epochs on 2 rounds' worth): a teacher of about 20 clients instead of 4
            Variant(
                "mnist_views_10k_nodigest_replay4",
                (*MNIST_PUBLIC, *OOD_VIEWS, *NO_MEMORY, *ALL_TOP2, *NO_DIGEST, *REPLAY4),
                (0.5,),
            ),
            # ... zoomed up to 3x and replaying 8 rounds, on 8 000 digits a round (the budget)
            Variant(
                "mnist_views3_8k_nodigest_replay8",
                (*MNIST_PUBLIC, *OOD_VIEWS3, *NO_MEMORY, *TOP2_8K, *NO_DIGEST, *REPLAY8),
                (0.5,),
            ),
            Variant("mnist_no_memory", (*MNIST_PUBLIC, *NO_MEMORY), (0.5,)),
            Variant("views", (*VIEWS, *NO_MEMORY)),
            Variant("no_memory", NO_MEMORY),
        ),
        seeds=(0,),
    ),
    # the out-of-domain method at the benchmark's length (--grid ood): MNIST as the public set,
    # zoomed views of 8 000 digits a round (top-2 soft labels: under 0.05 MB), clients that keep
    # to their own data, the global model distilled on the last 5 rounds' views with one cosine
    # schedule over the run (the clients' teacher settles: they no longer learn from it)
    "ood": Grid(
        variants=(
            Variant("mnist_views_replay4", (*MNIST_PUBLIC, *OOD_METHOD), (0.5,)),
            # zoom up to 3x (the oracle's best in a 20-epoch sweep) and 8 rounds replayed
            Variant(
                "mnist_views3_replay8",
                (*MNIST_PUBLIC, *OOD_METHOD, "views.zoom=3.0", "algorithm.replay_rounds=8"),
                (0.5,),
            ),
        ),
        seeds=(0, 1),
        rounds=50,
    ),
    # the one positive in-domain signal of the 20-round probes, at the benchmark's length
    # (--grid confirm; the full matrix's dsfl_plus row is the same run without abstaining)
    "confirm": Grid(
        variants=(Variant("abstain30", ("clients.abstain=0.3",), (0.1,)),), seeds=(0,), rounds=50
    ),
}


def jobs_of(grid: Grid) -> list[Job]:
    return [
        Job(
            f"{v.name}_a{alpha}_s{seed}",
            (
                BASE,
                f"num_rounds={grid.rounds}",
                f"partition.alpha={alpha}",
                f"seed={seed}",
                *v.overrides,
            ),
        )
        for seed in grid.seeds
        for alpha in sorted({a for v in grid.variants for a in v.alphas}, reverse=True)
        for v in grid.variants
        if alpha in v.alphas
    ]


def _tail_mean(values: list[float]) -> float | None:
    tail = [v for v in values[-LAST:] if not math.isnan(v)]
    return statistics.fmean(tail) if tail else None


def row_of(run: Path) -> dict[str, Any]:
    rounds = read_metrics(run)
    summary = read_summary(run)
    name, alpha, seed = run.name.rsplit("_", 2)
    series = {
        key: [getattr(r, key) for r in rounds]
        for key in ("global_accuracy", "consensus_accuracy", "ensemble_accuracy",
                    "client_accuracy_mean")
    }  # fmt: skip
    return {
        "variant": name,
        "alpha": float(alpha.removeprefix("a")),
        "seed": int(seed.removeprefix("s")),
        "rounds": len(rounds),
        "final_accuracy": summary.final_global_accuracy,
        **{f"{key}_last{LAST}": _tail_mean(values) for key, values in series.items()},
        "wall_seconds": summary.wall_seconds,
        **{f"{key}_by_round": values for key, values in series.items()},
    }


def _fmt(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.4f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"| variant | α | seed | final global acc | global, last {LAST} | consensus, last {LAST} "
        f"| ensemble of the replies, last {LAST} | mean client acc, last {LAST} |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['variant']} | {r['alpha']:g} | {r['seed']} | {_fmt(r['final_accuracy'])} | "
        f"{_fmt(r[f'global_accuracy_last{LAST}'])} | {_fmt(r[f'consensus_accuracy_last{LAST}'])} "
        f"| {_fmt(r[f'ensemble_accuracy_last{LAST}'])} "
        f"| {_fmt(r[f'client_accuracy_mean_last{LAST}'])} |"
        for r in sorted(rows, key=lambda r: (-r["alpha"], r["seed"], r["variant"]))
    ]
    return head + "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], out: Path) -> Path:
    alphas = sorted({r["alpha"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(alphas), figsize=(6 * len(alphas), 4.5), squeeze=False)
    variants = sorted({r["variant"] for r in rows})
    colors = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(variants)}
    for ax, alpha in zip(axes[0], alphas, strict=True):
        for r in (r for r in rows if r["alpha"] == alpha):
            x = range(1, len(r["consensus_accuracy_by_round"]) + 1)
            label = f"{r['variant']} s{r['seed']}"
            ax.plot(x, r["consensus_accuracy_by_round"], color=colors[r["variant"]], label=label)
            ax.plot(x, r["global_accuracy_by_round"], color=colors[r["variant"]], ls=":")
        ax.set(title=f"α = {alpha:g}", xlabel="round", ylabel="accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    title = "consensus on the round's public samples (solid) and global model (dotted)"
    return save_figure(fig, out / "consensus_vs_round.png", title)


BENCHMARK = Benchmark(__doc__ or "", RESULTS, BASE, GRIDS, jobs_of, row_of, table, plot)

if __name__ == "__main__":
    BENCHMARK.main()
