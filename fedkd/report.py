"""``fedkd-report RUN_DIR... --out DIR``: tables and plots from any fedkd run folders.

Runs are grouped by their config ``name`` and Dirichlet ``partition.alpha``; seeds are averaged.
Writes to ``DIR``:

* ``rounds.csv``: every run's per-round metrics (with cumulative uplink MB);
* ``summary.csv`` and ``summary.json``: one row per group (mean and std over seeds);
* ``table.md``: the markdown table (final / best global accuracy, mean client accuracy over the
  last 10 rounds, rounds to reach the target accuracy, uplink MB per client per round, total MB,
  wall time);
* ``accuracy_vs_round.png`` and ``accuracy_vs_uplink.png``: one panel per alpha.

Local-only runs have no global model: their "accuracy" is the mean accuracy of the client models.
"""

import argparse
import csv
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedkd.results import CONFIG_FILE, SUMMARY_FILE, RoundRecord, read_metrics

MB = 1e6
TARGET_ACCURACY = 0.80


@dataclass(frozen=True)
class Run:
    path: Path
    name: str
    algorithm: str
    alpha: float | None
    seed: int
    rounds: list[RoundRecord]
    summary: dict[str, Any]

    @property
    def accuracy(self) -> list[float]:
        """The headline accuracy per round: the global model's (mean client's for local-only)."""
        key = "client_accuracy_mean" if self.algorithm == "local" else "global_accuracy"
        return [float(getattr(r, key)) for r in self.rounds]

    @property
    def uplink_mb_per_client_round(self) -> float:
        sent = [r.uplink_bytes / r.num_accepted for r in self.rounds if r.num_accepted]
        return float(np.mean(sent)) / MB if sent else 0.0


def load_run(path: Path) -> Run:
    cfg = json.loads((path / CONFIG_FILE).read_text())
    partition = cfg["partition"]
    return Run(
        path=path,
        name=cfg["name"],
        algorithm=cfg["algorithm"].get("name") or cfg["algorithm"]["_target_"],
        alpha=partition["alpha"] if partition.get("name") == "dirichlet" else None,
        seed=cfg["seed"],
        rounds=read_metrics(path),
        summary=json.loads((path / SUMMARY_FILE).read_text()),
    )


def rounds_to(accuracy: Sequence[float], target: float) -> int | None:
    """The first round (1-based) whose accuracy reaches ``target``."""
    return next((i + 1 for i, a in enumerate(accuracy) if a >= target), None)


def _mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), float(np.std(vals))


def summarise(runs: Sequence[Run], target: float = TARGET_ACCURACY) -> list[dict[str, Any]]:
    groups: dict[tuple[str, float | None], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.name, run.alpha)].append(run)
    rows = []
    for (name, alpha), members in sorted(groups.items(), key=lambda g: (g[0][1] or 0, g[0][0])):
        final = _mean_std([r.accuracy[-1] for r in members])
        best = _mean_std([max(r.accuracy) for r in members])
        last10 = _mean_std([max(r.accuracy) - min(r.accuracy[-10:]) for r in members])
        # each round reports only its few sampled clients: average the last rounds' means
        clients = _mean_std(
            [float(np.nanmean([x.client_accuracy_mean for x in r.rounds[-10:]])) for r in members]
        )
        reach = [rounds_to(r.accuracy, target) for r in members]
        reached = [n for n in reach if n is not None]
        total_mb = _mean_std([r.summary["uplink_bytes_total"] / MB for r in members])
        rows.append(
            {
                "name": name,
                "algorithm": members[0].algorithm,
                "alpha": alpha,
                "seeds": len(members),
                "rounds": len(members[0].rounds),
                "final_accuracy": final[0],
                "final_accuracy_std": final[1],
                "best_accuracy": best[0],
                "client_accuracy": clients[0],
                "max_drop_last10": last10[0],
                "rounds_to_target": float(np.mean(reached)) if len(reached) == len(reach) else None,
                "uplink_mb_per_client_round": float(
                    np.mean([r.uplink_mb_per_client_round for r in members])
                ),
                "uplink_mb_total": total_mb[0],
                "wall_seconds": float(np.mean([r.summary["wall_seconds"] for r in members])),
            }
        )
    return rows


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def markdown_table(rows: Sequence[dict[str, Any]], target: float = TARGET_ACCURACY) -> str:
    header = (
        "| method | α | seeds | rounds | final acc | best acc | mean client acc, last 10 | "
        f"max drop, last 10 | rounds to {target:.0%} | uplink MB / client / round | "
        "uplink MB total | wall s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['name']} | {_fmt(r['alpha'], 'g')} | {r['seeds']} | {r['rounds']} | "
        f"{_fmt(r['final_accuracy'], '.4f')} ± {_fmt(r['final_accuracy_std'], '.4f')} | "
        f"{_fmt(r['best_accuracy'], '.4f')} | {_fmt(r['client_accuracy'], '.4f')} | "
        f"{_fmt(r['max_drop_last10'], '.4f')} | {_fmt(r['rounds_to_target'], '.1f')} | "
        f"{_fmt(r['uplink_mb_per_client_round'], '.4f')} | {_fmt(r['uplink_mb_total'], '.1f')} | "
        f"{_fmt(r['wall_seconds'], '.0f')} |"
        for r in rows
    ]
    return header + "\n".join(lines) + "\n"


def write_rounds_csv(runs: Sequence[Run], path: Path) -> None:
    keys = ["global_accuracy", "global_loss", "consensus_accuracy", "ensemble_accuracy",
            "client_accuracy_mean", "uplink_bytes", "downlink_bytes", "num_accepted",
            "round_seconds"]  # fmt: skip
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "name", "algorithm", "alpha", "seed", "round", "accuracy",
                         *keys, "uplink_mb_cumulative"])  # fmt: skip
        for run in runs:
            cumulative = 0.0
            for r, acc in zip(run.rounds, run.accuracy, strict=True):
                cumulative += r.uplink_bytes / MB
                ident = [run.path.name, run.name, run.algorithm, run.alpha, run.seed, r.round]
                writer.writerow([*ident, acc, *(getattr(r, k) for k in keys), cumulative])


def plot(runs: Sequence[Run], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = sorted({r.alpha for r in runs}, key=lambda a: -1 if a is None else a)
    names = sorted({r.name for r in runs})
    colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
    written = []
    for x_axis, filename in (("round", "accuracy_vs_round.png"),
                             ("uplink", "accuracy_vs_uplink.png")):  # fmt: skip
        fig, axes = plt.subplots(1, len(alphas), figsize=(6 * len(alphas), 4.5), squeeze=False)
        for ax, alpha in zip(axes[0], alphas, strict=True):
            for name in names:
                group = [r for r in runs if r.name == name and r.alpha == alpha]
                if not group:
                    continue
                length = min(len(r.accuracy) for r in group)
                acc = np.mean([r.accuracy[:length] for r in group], axis=0)
                if x_axis == "round":
                    xs = np.arange(1, length + 1)
                else:
                    xs = np.mean(
                        [np.cumsum([q.uplink_bytes for q in r.rounds[:length]]) / MB
                         for r in group], axis=0,
                    )  # fmt: skip
                    if xs[-1] == 0:
                        continue  # no communication (local-only, centralized)
                ax.plot(xs, acc, label=name, color=colors[name])
            ax.set_title(f"Dirichlet α = {alpha}" if alpha is not None else "IID / shards")
            ax.set_xlabel("round" if x_axis == "round" else "cumulative uplink (MB)")
            if x_axis == "uplink":
                ax.set_xscale("log")
            ax.set_ylabel("test accuracy")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / filename, dpi=120)
        plt.close(fig)
        written.append(out / filename)
    return written


def report(run_dirs: Sequence[Path], out: Path, target: float = TARGET_ACCURACY) -> str:
    """Write the report for ``run_dirs`` (folders holding a summary) into ``out``."""
    runs = [load_run(p) for p in run_dirs if (p / SUMMARY_FILE).is_file()]
    runs = [r for r in runs if r.summary.get("status") == "completed" and r.rounds]
    if not runs:
        raise SystemExit("no completed run folders (with summary.json) among the arguments")
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(runs, target)
    write_rounds_csv(runs, out / "rounds.csv")
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    table = markdown_table(rows, target)
    (out / "table.md").write_text(table)
    plot(runs, out)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folders (or parents of them)")
    parser.add_argument("--out", type=Path, default=Path("report"))
    parser.add_argument("--target", type=float, default=TARGET_ACCURACY)
    args = parser.parse_args()
    dirs = sorted({p.parent for d in args.run_dirs for p in d.rglob(SUMMARY_FILE)})
    print(report(dirs, args.out, args.target))


if __name__ == "__main__":
    main()
