"""The ``fedkd`` command (also ``python -m fedkd``): Hydra config in, a run folder out.

fedkd                                   # default experiment (conf/config.yaml)
fedkd algorithm=fedmd partition.alpha=0.1 num_rounds=30
fedkd -m algorithm=fedmd,dsfl partition.alpha=0.1,0.5      # sweep
fedkd experiment=digits_quick
"""

import logging
from pathlib import Path
from typing import Any

from fedkd.config import ExperimentConfig, hydra_main
from fedkd.launch import run

log = logging.getLogger("fedkd")


def _task(cfg: ExperimentConfig) -> dict[str, Any]:
    # Relative paths would resolve against the SuperLink's working directory: pin them here.
    cfg = _absolute_output(cfg)
    summary = run(cfg)
    log.info(
        "final global accuracy %.4f (best %.4f), %d rounds, %.0fs -> %s",
        summary["final_global_accuracy"],
        summary["best_global_accuracy"],
        summary["rounds"],
        summary["wall_seconds"],
        cfg.output_dir,
    )
    return summary


def _absolute_output(cfg: ExperimentConfig) -> ExperimentConfig:
    import dataclasses

    return dataclasses.replace(cfg, output_dir=str(Path(cfg.output_dir).resolve()))


def main() -> Any:
    return hydra_main(_task)()


if __name__ == "__main__":
    main()
