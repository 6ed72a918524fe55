"""The Python API: what the ``fedkd`` command does, for notebooks and scripts.

>>> import fedkd
>>> result = fedkd.run(["experiment=digits_quick", "algorithm=fedmd"])   # doctest: +SKIP
>>> result.summary["final_global_accuracy"], len(result.rounds)          # doctest: +SKIP

The overrides are the command line's (``fedkd experiment=digits_quick algorithm=fedmd``), the
working directory's ``conf/`` overlays fedkd's as it does for the command, and the run folder is
the same (``outputs/<date>/<time>-<name>`` unless ``output_dir`` is given).
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fedkd.config import compose, with_absolute_paths
from fedkd.launch import resume_config
from fedkd.launch import run as launch
from fedkd.results import SUMMARY_FILE, RoundRecord, read_metrics

__all__ = ["RunResult", "resume", "run"]


@dataclass(frozen=True)
class RunResult:
    """A finished run: its folder, ``summary.json`` (as a dict) and the per-round records."""

    output_dir: Path
    summary: dict[str, Any]
    rounds: list[RoundRecord]


def run(overrides: Sequence[str] = (), *, output_dir: str | Path | None = None) -> RunResult:
    """Compose the config from Hydra ``overrides``, run it (simulation or ``mode=deploy``) and
    return its results. Raises :class:`fedkd.config.ConfigError` on a bad config, before
    anything starts, and :class:`fedkd.launch.LaunchError` if the run fails."""
    cfg = compose(list(overrides), run_dir=True)
    if output_dir is not None:
        cfg = replace(cfg, output_dir=str(output_dir))
    cfg = with_absolute_paths(cfg, Path.cwd())
    return _result(cfg, launch(cfg))


def resume(run_dir: str | Path) -> RunResult:
    """Continue the stopped run in ``run_dir`` from its checkpoint (``fedkd resume=<dir>``)."""
    cfg = resume_config(run_dir)
    return _result(cfg, launch(cfg, resume=True))


def _result(cfg: Any, summary: dict[str, Any]) -> RunResult:
    folder = Path(cfg.output_dir)
    rounds = read_metrics(folder) if (folder / SUMMARY_FILE).is_file() else []
    return RunResult(folder, summary, rounds)
