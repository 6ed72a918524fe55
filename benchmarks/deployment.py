"""The deployment benchmark: what a deployment round is made of, next to the same run simulated.

    python benchmarks/deployment.py                 # about 12 minutes on 2 cores, as root
    python benchmarks/deployment.py --modes loopback netns_50ms
    python benchmarks/deployment.py --report-only

The digits preset (``experiment=digits_quick``) with 5 clients, one per SuperNode, 6 rounds,
seed 0, in six settings:

* ``simulation``: fedkd's default engine, no network (the rounds' compute);
* ``loopback_flower``: a SuperLink and 5 SuperNodes on 127.0.0.1 with Flower's default executor
  (a new ``flwr-clientapp`` process per message, which imports torch and loads the data);
* ``loopback_flower_poll``: the same with ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL=0.1`` (Flower's
  executor asks for tasks every 0.1 s instead of every second);
* ``loopback_stock_poll``: the same nodes with ``fedkd-node`` executors (one long-lived worker
  process per node keeps its imports and data between messages), Flower's SuperNodes as they
  are (an idle node asks for a message every 3 s);
* ``loopback``: ``fedkd-cluster``'s default: ``fedkd-node`` executors and ``fedkd-supernode``
  (Flower's SuperNode asking every 0.5 s);
* ``netns_50ms``: the SuperLink and each SuperNode in network namespaces of their own on a
  bridge, TLS issued for the coordinator's address, SuperNode authentication, and 50 ms added
  each way on the coordinator's link (``fedkd-cluster up --netns --delay 0.05``: root only).

All send one message per client per round. Every setting reaches the same accuracy round by
round (same seed). Reported per setting: the mean round time over rounds 2-6 (round 1 includes
the clients' first data load), split into the exchange (from sending the round's messages to
the last reply: the clients' work, Flower's polling and the network) and the server's own part
(aggregation, distillation, evaluation, checkpoint). Target (issue 11): <= 5 s per round on
loopback and across namespaces with 50 ms.

Writes ``benchmarks/results/deployment/``: ``results.json`` / ``results.csv``, ``table.md`` and
``deployment.png``.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "deployment"
NODES = 5
ROUNDS = 6
LATENCY = 0.05
SETTING = ("experiment=digits_quick", f"clients.num_clients={NODES}", f"num_rounds={ROUNDS}",
           "seed=0")  # fmt: skip
MODES = ("simulation", "loopback_flower", "loopback_flower_poll", "loopback_stock_poll",
         "loopback", "netns_50ms")  # fmt: skip
STOCK_SUPERNODE = ("loopback_flower", "loopback_flower_poll", "loopback_stock_poll")
FLOWER_POLL = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"}
TARGET_S = 5.0


def run_mode(mode: str, work: Path) -> dict[str, Any]:
    """One run of ``mode`` in ``work``; its per-round times and accuracy."""
    from fedkd import cluster
    from fedkd.results import read_metrics, read_summary
    from fedkd.supernode import POLL_INTERVAL

    out = work / "run"
    command = [sys.executable, "-m", "fedkd", *SETTING, f"output_dir={out}",
               f"hydra.run.dir={out}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    state = None
    saved = dict(os.environ)
    try:
        if mode != "simulation":
            os.environ.update(FLOWER_POLL if mode == "loopback_flower_poll" else {})
            netns = mode == "netns_50ms"
            state = cluster.up(
                work / "cluster",
                NODES,
                tls=netns,
                executor="flower" if mode.startswith("loopback_flower") else "fedkd",
                netns=netns,
                delay=LATENCY if netns else 0.0,
                poll_interval=None if mode in STOCK_SUPERNODE else POLL_INTERVAL,
            )
            command += ["mode=deploy", f"connection={cluster.CONNECTION}"]
            env["FLWR_HOME"] = str(state.flwr_home)
        log = (work / "run.log").open("w")
        proc = subprocess.run(command, cwd=work, env=env, stdout=log, stderr=log, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"{mode} failed ({proc.returncode}); see {work / 'run.log'}")
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if state is not None:
            cluster.down(Path(state.workdir))
    rounds = read_metrics(out)
    later = rounds[1:]
    return {
        "mode": mode,
        "rounds": len(rounds),
        "round_s": mean(r.round_seconds for r in later),
        "exchange_s": mean(r.exchange_seconds for r in later),
        "server_s": mean(r.round_seconds - r.exchange_seconds for r in later),
        "first_round_s": rounds[0].round_seconds,
        "final_accuracy": read_summary(out).final_global_accuracy,
        "round_seconds": [r.round_seconds for r in rounds],
        "exchange_seconds": [r.exchange_seconds for r in rounds],
        "accuracy_by_round": [r.global_accuracy for r in rounds],
    }


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row for repeated runs of a mode: means over all their rounds 2-6."""
    if len(runs) == 1:
        return runs[0]
    later = [
        pair
        for r in runs
        for pair in zip(r["round_seconds"][1:], r["exchange_seconds"][1:], strict=True)
    ]
    return {
        **runs[0],
        "runs": len(runs),
        "round_s": mean(rs for rs, _ in later),
        "exchange_s": mean(es for _, es in later),
        "server_s": mean(rs - es for rs, es in later),
        "first_round_s": mean(r["first_round_s"] for r in runs),
        "round_seconds": [r["round_seconds"] for r in runs],
        "exchange_seconds": [r["exchange_seconds"] for r in runs],
    }


def table(rows: list[dict[str, Any]]) -> str:
    sim = next((r for r in rows if r["mode"] == "simulation"), None)
    lines = [
        "| setting | runs | round (s) | exchange (s) | server (s) | round - simulation's (s) | "
        "first round (s) | final accuracy | target <= 5 s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: MODES.index(r["mode"])):
        extra = f"{r['round_s'] - sim['round_s']:+.2f}" if sim else "–"
        met = "–" if r["mode"] == "simulation" else ("met" if r["round_s"] <= TARGET_S else "no")
        lines.append(
            f"| {r['mode']} | {r.get('runs', 1)} | {r['round_s']:.2f} | {r['exchange_s']:.2f} | "
            f"{r['server_s']:.2f} | "
            f"{extra} | {r['first_round_s']:.1f} | {r['final_accuracy']:.4f} | {met} |"
        )
    return "\n".join(lines) + (
        f"\n\nDigits preset, {NODES} clients (one per SuperNode), {ROUNDS} rounds; times are the "
        "mean of rounds 2-6 (of every run). Exchange: from sending the round's messages to the "
        "last reply.\n"
    )


def plot(rows: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from grid import save_figure

    rows = sorted(rows, key=lambda r: MODES.index(r["mode"]))
    modes = [r["mode"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(modes, [r["exchange_s"] for r in rows], label="exchange (clients, polling, network)")
    ax.bar(modes, [r["server_s"] for r in rows], bottom=[r["exchange_s"] for r in rows],
           label="server (aggregate, distil, evaluate)")  # fmt: skip
    ax.axhline(TARGET_S, color="grey", linestyle="--", linewidth=1, label="target (5 s)")
    ax.set_ylabel("seconds per round")
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return save_figure(fig, out / "deployment.png", f"digits preset, {NODES} SuperNodes")


def write_report(rows: list[dict[str, Any]]) -> str:
    from grid import write_results

    return write_results(rows, RESULTS, table, plot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--repeats", type=int, default=1, help="runs per mode, pooled")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    results = RESULTS / "results.json"
    rows = json.loads(results.read_text()) if results.is_file() else []
    if not args.report_only:
        for mode in args.modes:
            runs = []
            for _ in range(args.repeats):
                work = Path(tempfile.mkdtemp(prefix=f"fedkd-deploy-{mode}-"))
                try:
                    runs.append(run_mode(mode, work))
                finally:
                    shutil.rmtree(work, ignore_errors=True)
            row = pooled(runs)
            rows = [r for r in rows if r["mode"] != mode] + [row]  # a re-run replaces it
            print(f"{mode}: {row['round_s']:.2f} s/round", flush=True)
            write_report(rows)
    print(write_report(rows))


if __name__ == "__main__":
    main()
