"""The ``fedkd`` command (also ``python -m fedkd``): Hydra config in, a run folder out.

fedkd                                   # default experiment (conf/config.yaml)
fedkd algorithm=fedmd partition.alpha=0.1 num_rounds=30
fedkd -m algorithm=fedmd,dsfl partition.alpha=0.1,0.5      # sweep
fedkd experiment=digits_quick
fedkd resume=outputs/2026-12-01/10-00-00-default           # continue a stopped run
"""

import atexit
import logging
import os
import sys
from pathlib import Path
from typing import Any

from fedkd.config import ConfigError, ExperimentConfig, hydra_main, with_absolute_paths
from fedkd.launch import RunInterrupted, resume_config, run
from fedkd.logs import configure_logging

log = logging.getLogger("fedkd")


RESUME = "resume="


def _task(cfg: ExperimentConfig, resume: bool = False) -> dict[str, Any]:
    # Relative paths would resolve against the SuperLink's working directory: pin them here.
    cfg = with_absolute_paths(cfg, Path.cwd())
    summary = run(cfg, resume=resume)
    if summary.get("status") == "completed":
        log.info(
            "final global accuracy %s (best %s), %d rounds, %.0fs -> %s",
            _accuracy(summary["final_global_accuracy"]),
            _accuracy(summary["best_global_accuracy"]),
            summary["rounds"],
            summary["wall_seconds"],
            cfg.output_dir,
        )
    return summary


def _accuracy(value: float | None) -> str:
    """Baselines without a global model (local-only) have no global accuracy."""
    return "n/a" if value is None else f"{value:.4f}"


def main() -> None:
    """The command: :func:`run_command`, then the process ends without Python's teardown of
    its modules (about a second with torch and Flower loaded, after every file of the run is
    written): exit handlers run and output is flushed, as on a normal exit."""
    try:
        run_command()
    except SystemExit as end:
        code = end.code
    else:
        code = 0
    if not isinstance(code, int):  # sys.exit("message") / sys.exit(None)
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_command() -> Any:
    # A user project's own modules (models, sources, algorithms named by import path) are
    # importable from where the command runs, as with `python -m fedkd`.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        resume = [a for a in sys.argv[1:] if a.startswith(RESUME)]
        if not resume:
            return hydra_main(_task)()
        configure_logging()
        if len(sys.argv) != 2:
            log.error("resume=<run folder> continues a run with its own config: nothing else")
            sys.exit(2)
        try:
            cfg = resume_config(resume[0].removeprefix(RESUME))
        except ConfigError as err:
            log.error("%s", err)
            sys.exit(2)
        _task(cfg, resume=True)
        return None
    except RunInterrupted as stop:  # SIGINT / SIGTERM: the run folder says "interrupted"
        log.warning("%s", stop)
        sys.exit(128 + stop.signum)


if __name__ == "__main__":
    main()
