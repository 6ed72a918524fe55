"""The fedkd ServerApp: load the config Flower passed in, build the strategy, run it.

Writes the run folder (config, per-round metrics, summary, global model) and a checkpoint after
every round as it goes; on failure the summary records the error and every finished round is
kept. With ``resume = true`` in the run config it continues from the run folder's checkpoint.
"""

import logging
from pathlib import Path
from typing import cast

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedkd.checkpoint import RunStopped, ServerCheckpoint, has_checkpoint
from fedkd.config import from_run_config
from fedkd.experiment import build_global_model, load_data
from fedkd.grid import PollingGrid
from fedkd.logs import configure_logging
from fedkd.protocol import RUN_RESUME_KEY
from fedkd.results import RunRecorder
from fedkd.schema import import_object
from fedkd.training import seed_everything

log = logging.getLogger("fedkd.server")
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    configure_logging()
    cfg = from_run_config(context.run_config)
    output_dir = cfg.output_dir or str(Path.cwd() / "outputs" / f"run-{context.run_id}")
    seed_everything(cfg.seed)
    checkpoint = None
    if context.run_config.get(RUN_RESUME_KEY) is True and has_checkpoint(output_dir):
        checkpoint = ServerCheckpoint.load(output_dir)
        recorder = RunRecorder.resume(
            output_dir, cfg, checkpoint.round, checkpoint.wall_seconds, checkpoint.resumed_after
        )
    else:
        recorder = RunRecorder(output_dir, cfg)
    try:
        splits = load_data(cfg, private=False)
        strategy_cls = import_object(cfg.algorithm.server, "algorithm")  # its server part
        strategy = strategy_cls(cfg, splits, build_global_model(cfg, splits), recorder)
        if checkpoint is not None:
            strategy.resume(checkpoint)
        # Flower's deployment Grid sleeps 3 s between pulls for replies: pull every 0.1 s
        polling = grid if isinstance(grid, PollingGrid) else PollingGrid(grid)
        summary = strategy.start(cast(Grid, polling))
    except RunStopped:  # the launcher writes the summary of a stopped run
        log.warning("run stopped; finished rounds are in %s", recorder.dir)
        raise
    except BaseException as err:
        recorder.write_summary(status="failed", error=f"{type(err).__name__}: {err}")
        log.exception("run failed; finished rounds are in %s", recorder.dir)
        raise
    log.info(
        "done: final global accuracy %.4f (best %.4f) in %.0fs -> %s",
        summary["final_global_accuracy"],
        summary["best_global_accuracy"],
        summary["wall_seconds"],
        recorder.dir,
    )
