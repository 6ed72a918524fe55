"""The robustness benchmark: attacks x share of attackers x combine rule, resumable.

    python benchmarks/robustness.py --grid reduced   # about 30 minutes on 2 cores
    python benchmarks/robustness.py --grid full      # many hours: re-run to resume

The setting is ``conf/experiment/fmnist_robustness.yaml`` (the recommended method on the accuracy
benchmark's Fashion-MNIST federation, 10 of 20 clients per round, 30 rounds); every job adds
``attack=<behaviour> attack.fraction=<f>`` and ``algorithm.combine=<rule>`` (and alpha, seed).
``class_weighted`` is the recommended method's own merge -- its (per-class weighted) mean: the
row that shows what an undefended consensus loses. The "counts" jobs add lies about the example
counts (``attack.count_factor=1000``) to one attacker in four.

Writes ``benchmarks/results/robustness/<grid>/``: ``runs/<job>/`` (each a run folder),
``results.json`` and ``results.csv`` (one row per finished job), ``table.md`` (final global
accuracy per attack and share, one column per rule; the loss against the clean run of the same
rule) and ``accuracy_vs_attackers.png`` (one panel per attack).
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from grid import Benchmark, Job, save_figure

from fedkd.attacks import ATTACKS
from fedkd.results import read_metrics, read_summary

RESULTS = Path(__file__).resolve().parent / "results" / "robustness"
BASE = "experiment=fmnist_robustness"
MEAN_RULE = "class_weighted"  # the recommended method's own (undefended) merge
COUNT_FACTOR = 1000


@dataclass(frozen=True)
class Grid:
    attacks: tuple[str, ...]
    fractions: tuple[float, ...]  # shares of attacking clients (0: the clean run)
    rules: tuple[str, ...]
    alphas: tuple[float, ...]
    seeds: tuple[int, ...]
    rounds: int
    # (rules, alphas, seeds) of the extra 30 % rows (the "best rule and mean" repeats)
    repeats: tuple[tuple[str, ...], tuple[float, ...], tuple[int, ...]] | None = None
    counts: tuple[str, ...] = ()  # attacks also run by one client in four lying about counts


GRIDS = {
    "full": Grid(
        attacks=tuple(sorted(ATTACKS)),
        fractions=(0.0, 0.1, 0.2, 0.3),
        rules=(MEAN_RULE, "median", "trimmed_mean", "class_weighted_reputation"),
        alphas=(0.5,),
        seeds=(0,),
        rounds=30,
        repeats=((MEAN_RULE, "class_weighted_reputation"), (0.1, 0.5), (0, 1)),
        counts=("wrong_class", "least_likely"),
    ),
    "reduced": Grid(
        attacks=("least_likely", "class_prior"),
        fractions=(0.0, 0.3),
        rules=(MEAN_RULE, "class_weighted_reputation"),
        alphas=(0.5,),
        seeds=(0,),
        rounds=10,
        counts=("wrong_class",),
    ),
}


def _job(attack: str | None, fraction: float, rule: str, alpha: float, seed: int,
         rounds: int, counts: bool = False) -> Job:  # fmt: skip
    name = "clean" if attack is None else f"{attack}_f{fraction}"
    overrides = [BASE, f"algorithm.combine={rule}", f"partition.alpha={alpha}",
                 f"seed={seed}", f"num_rounds={rounds}"]  # fmt: skip
    if attack is not None:
        overrides += [f"attack={attack}", f"attack.fraction={fraction}"]
    if counts:
        name += "_counts"
        overrides.append(f"attack.count_factor={COUNT_FACTOR}")
    return Job(f"{name}_{rule}_a{alpha}_s{seed}", tuple(overrides))


def jobs_of(grid: Grid) -> list[Job]:
    jobs = []
    for alpha in grid.alphas:
        for seed in grid.seeds:
            for rule in grid.rules:
                jobs.append(_job(None, 0.0, rule, alpha, seed, grid.rounds))
                for attack in grid.attacks:
                    for fraction in grid.fractions:
                        if fraction > 0:
                            jobs.append(_job(attack, fraction, rule, alpha, seed, grid.rounds))
                for attack in grid.counts:
                    jobs.append(_job(attack, 0.25, rule, alpha, seed, grid.rounds, counts=True))
    if grid.repeats is not None:
        rules, alphas, seeds = grid.repeats
        for alpha in alphas:
            for seed in seeds:
                for rule in rules:
                    extra = [_job(None, 0.0, rule, alpha, seed, grid.rounds)]
                    extra += [_job(a, 0.3, rule, alpha, seed, grid.rounds) for a in grid.attacks]
                    jobs += [j for j in extra if j not in jobs]
    # the rows that answer the targets first (the clean and 30 % runs of every rule, the lies about
    # counts, the repeats), so a partial grid is already a verdict; smaller shares fill the curves
    main = f"_a{grid.alphas[0]}_s{grid.seeds[0]}"
    return sorted(jobs, key=lambda job: _order(job.name, job.name.endswith(main)))


def _order(name: str, main: bool) -> int:
    if not main:
        return 2  # a repeat at another alpha or seed
    for order, marker in ((0, "clean_"), (0, "_f0.3_"), (1, "_counts_"), (3, "_f0.2_")):
        if marker in name:
            return order
    return 4


def row_of(run: Path) -> dict[str, Any]:
    cfg = json.loads((run / "config.json").read_text())
    summary = read_summary(run)
    rounds = read_metrics(run)
    attack = cfg.get("attack")
    combine = cfg["algorithm"]["combine"]
    attackers = set()
    if attack:
        from fedkd.attacks import attackers as chosen

        attackers = chosen(cfg["clients"]["num_clients"], attack["fraction"], attack["clients"],
                           cfg["seed"])  # fmt: skip
    quarantined = {int(c) for c in summary.quarantined_by_client}
    return {
        "job": run.name,
        "attack": attack["name"] if attack else "none",
        "fraction": attack["fraction"] if attack else 0.0,
        "count_factor": attack["count_factor"] if attack else 1.0,
        "rule": combine["name"] if isinstance(combine, dict) else combine,
        "alpha": cfg["partition"]["alpha"],
        "seed": cfg["seed"],
        "rounds": summary.rounds,
        "final_accuracy": summary.final_global_accuracy,
        "best_accuracy": summary.best_global_accuracy,
        "final_consensus_accuracy": rounds[-1].consensus_accuracy if rounds else None,
        "attackers_quarantined": len(quarantined & attackers),
        "honest_quarantined": len(quarantined - attackers),
        "num_attackers": len(attackers),
        "wall_seconds": summary.wall_seconds,
    }


def _key(row: dict[str, Any]) -> tuple:
    return (row["alpha"], row["seed"], row["rule"])


def table(rows: list[dict[str, Any]]) -> str:
    """Final accuracy per (attack, share) and rule, each with its loss against the clean run of
    the same rule, alpha and seed; then the honest clients quarantined by mistake."""
    clean = {_key(r): r["final_accuracy"] for r in rows if r["attack"] == "none"}
    rules = sorted({r["rule"] for r in rows}, key=lambda r: (r != MEAN_RULE, r))
    settings = sorted({(r["alpha"], r["seed"]) for r in rows})
    lines = []
    for alpha, seed in settings:
        here = [r for r in rows if (r["alpha"], r["seed"]) == (alpha, seed)]
        lines += [f"\n**alpha = {alpha}, seed {seed}** (final global accuracy; in brackets, the "
                  "change in points against the clean run of the same rule)\n",
                  "| attack | attackers | " + " | ".join(rules) + " |",
                  "|---|---|" + "---|" * len(rules)]  # fmt: skip
        cases = sorted({(r["attack"], r["fraction"], r["count_factor"]) for r in here},
                       key=lambda c: (c[0] != "none", c))  # fmt: skip
        for attack, fraction, factor in cases:
            cells = []
            for rule in rules:
                case = (attack, fraction, factor, rule)
                match = [
                    r
                    for r in here
                    if (r["attack"], r["fraction"], r["count_factor"], r["rule"]) == case
                ]
                if not match:
                    cells.append("–")
                    continue
                acc = match[0]["final_accuracy"]
                base = clean.get((alpha, seed, rule))
                delta = "" if attack == "none" or base is None else f" ({100 * (acc - base):+.1f})"
                cells.append(f"{acc:.4f}{delta}")
            share = f"{fraction:.0%}" + (f", counts x{factor:g}" if factor != 1 else "")
            lines.append(f"| {attack} | {share} | " + " | ".join(cells) + " |")
    wrong = [r for r in rows if r["honest_quarantined"]]
    honest = sum(r["honest_quarantined"] for r in wrong)
    caught = sum(r["attackers_quarantined"] for r in rows)
    lines.append(
        f"\nHonest clients quarantined by mistake: {honest} (in {len(wrong)} of {len(rows)} "
        f"runs); attackers quarantined: {caught} of {sum(r['num_attackers'] for r in rows)}."
    )
    return "\n".join(lines).strip() + "\n"


def plot(rows: list[dict[str, Any]], out: Path) -> Path:
    """One panel per attack (and per attack with count lies): final accuracy against the share
    of attackers, one line per rule, from the clean run (share 0) on; alpha 0.5, seed 0."""
    main = [r for r in rows if r["seed"] == 0 and r["alpha"] == 0.5]
    panels = sorted({(r["attack"], r["count_factor"]) for r in main if r["attack"] != "none"})
    rules = sorted({r["rule"] for r in rows})
    cols = min(4, max(1, len(panels)))
    nrows = max(1, -(-len(panels) // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False)
    for ax, (attack, factor) in zip(axes.flat, panels, strict=False):
        for rule in rules:
            points = sorted(
                (r["fraction"], r["final_accuracy"])
                for r in main
                if r["rule"] == rule
                and (r["attack"] == "none" or (r["attack"], r["count_factor"]) == (attack, factor))
            )
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=rule)
        ax.set_title(attack + (f" + counts x{factor:g}" if factor != 1 else ""))
        ax.set_xlabel("share of attacking clients")
        ax.set_ylabel("final global accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return save_figure(
        fig,
        out / "accuracy_vs_attackers.png",
        "Fashion-MNIST, 20 clients (10 per round), recommended method, alpha 0.5",
    )


BENCHMARK = Benchmark(__doc__ or "", RESULTS, BASE, GRIDS, jobs_of, row_of, table, plot)

if __name__ == "__main__":
    BENCHMARK.main()
