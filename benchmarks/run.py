"""The accuracy benchmark: every method in one harness, resumable.

    python benchmarks/run.py --matrix reduced     # about 30 minutes on 2 cores
    python benchmarks/run.py --matrix full        # hours: re-run to resume, finished runs are kept

Fashion-MNIST, 20 clients, 20 % sampled per round, Dirichlet alpha in {0.1, 0.5}, 10 k public
images held out of the training set (2 k queried per round), heterogeneous students (CNN, MLP,
wide CNN, ResNet) for the distillation methods, the CNN as global model and as FedAvg's model.
Local training budget: FedAvg and local-only clients train 2 epochs on their private data per
round; distillation clients 1 epoch over their private data mixed with as many teacher-labelled
public samples (``clients.kd_schedule=joint``: the same number of gradient steps), except the
``+sequential`` ablation row (digest 1 epoch, then 2 private epochs).
Each run writes its run folder under ``benchmarks/results/<matrix>/runs/<method>_a<alpha>_s<seed>``;
a run whose ``summary.json`` says "completed" and whose ``config.json`` is the config the matrix
asks for now is skipped, a run stopped half-way continues from its checkpoint, and a changed
method is re-run. The report (``fedkd-report``: table.md, summary.csv/json, rounds.csv, PNG
plots) is rewritten at the end from the matrix's finished, current runs.
"""

import argparse
import json
import logging
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from grid import is_done, run_job

from fedkd.config import compose
from fedkd.launch import RunInterrupted
from fedkd.logs import configure_logging
from fedkd.report import report

RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("fedkd.benchmark")


# Each method is an experiment file, conf/experiment/fmnist_<method>.yaml (the common setting is
# conf/experiment/fmnist_benchmark.yaml): every number in the tables is one `fedkd experiment=...`
# away. The matrix adds only alpha, seed, the number of rounds and the run folder.
@dataclass(frozen=True)
class Matrix:
    methods: tuple[str, ...]
    alphas: tuple[float, ...]
    seeds: tuple[int, ...]
    rounds: int
    centralized_epochs: int


MATRICES = {
    "full": Matrix(
        (
            "fedavg",
            "local",
            "centralized",
            "fedmd",
            "dsfl",
            "feddf",
            "dsfl_plus",
            "dsfl_plus_nodecay",
            "dsfl_plus_nodecay_sequential",
            "dsfl_plus_abstain",
            "dsfl_plus_pretrain",
        ),
        (0.1, 0.5),
        (0, 1),
        rounds=50,
        centralized_epochs=5,
    ),
    "reduced": Matrix(
        (
            "fedavg",
            "local",
            "centralized",
            "fedmd",
            "dsfl",
            "feddf",
            "dsfl_plus",
            "dsfl_plus_ema",
            "dsfl_plus_nodecay_augment",
        ),
        (0.1, 0.5),
        (0,),
        rounds=10,
        centralized_epochs=2,
    ),
}


def overrides_for(method: str, alpha: float, seed: int, matrix: Matrix, out: Path) -> list[str]:
    rounds = matrix.centralized_epochs if method == "centralized" else matrix.rounds
    return [
        f"experiment=fmnist_{method}",
        f"partition.alpha={alpha}",
        f"seed={seed}",
        f"num_rounds={rounds}",
        f"output_dir={out}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", choices=sorted(MATRICES), default="reduced")
    parser.add_argument("--only", nargs="*", help="run only these methods (the report has all)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    configure_logging()
    matrix = MATRICES[args.matrix]
    root = RESULTS / args.matrix
    (root / "runs").mkdir(parents=True, exist_ok=True)
    description = {"experiments": {m: f"conf/experiment/fmnist_{m}.yaml" for m in matrix.methods}}
    (root / "matrix.json").write_text(json.dumps({**description, **vars(matrix)}, indent=2))
    unknown = set(args.only or ()) - set(matrix.methods)
    if unknown:
        parser.error(f"--only: {sorted(unknown)} not in the {args.matrix} matrix {matrix.methods}")
    jobs = [
        (method, alpha, seed)
        for seed in matrix.seeds
        for alpha in matrix.alphas
        for method in matrix.methods
    ]
    finished = []
    for i, (method, alpha, seed) in enumerate(jobs, 1):
        out = root / "runs" / f"{method}_a{alpha}_s{seed}"
        cfg = compose(overrides_for(method, alpha, seed, matrix, out))
        wanted = not args.report_only and (not args.only or method in args.only)
        if wanted and not is_done(out, cfg):
            log.info("[%d/%d] %s alpha=%s seed=%d -> %s", i, len(jobs), method, alpha, seed, out)
            try:
                run_job(out, cfg)  # (a run stopped half-way continues from its checkpoint)
            except Exception:  # one failed run must not stop the matrix; its folder says why
                log.error("run %s failed:\n%s", out.name, traceback.format_exc())
        if is_done(out, cfg):
            finished.append(out)
    runs = sorted(finished)
    if runs:
        print(report(runs, root))


if __name__ == "__main__":
    try:
        main()
    except RunInterrupted as stop:  # SIGINT / SIGTERM: the current run says "interrupted"
        log.warning("%s: the matrix stops here; re-run to resume", stop)
        sys.exit(128 + stop.signum)
