"""Shared by the benchmark scripts: named jobs, each one `fedkd` run, resumable.

A job's run folder is ``<root>/runs/<name>``. A job whose ``summary.json`` says "completed" and
whose ``config.json`` is the config the job asks for now is skipped, so an interrupted grid
resumes (re-run the script) and a changed job is re-run. SIGINT/SIGTERM stop the current run
cleanly (its folder says "interrupted"); the next invocation resumes it from its checkpoint, as
it does a run killed before it could write its summary.
"""

import argparse
import csv
import json
import logging
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedkd.checkpoint import has_checkpoint
from fedkd.config import ConfigError, ExperimentConfig, compose, from_json, to_json
from fedkd.launch import RunInterrupted, resume_config, run
from fedkd.logs import configure_logging
from fedkd.results import CONFIG_FILE, SUMMARY_FILE

log = logging.getLogger("fedkd.benchmark")


@dataclass(frozen=True)
class Job:
    name: str  # its run folder's name
    overrides: tuple[str, ...]  # Hydra overrides (output_dir is added)


@dataclass(frozen=True)
class Variant:
    """A variant of a benchmark's setting: its name in the run folders ("" for the setting as
    it is) and the Hydra overrides it adds."""

    name: str = ""
    overrides: tuple[str, ...] = ()


def is_done(out: Path, cfg: ExperimentConfig) -> bool:
    """Finished, with the config ``cfg`` (where it was written aside, the grid being portable)."""
    try:
        summary = json.loads((out / SUMMARY_FILE).read_text())
        config = json.loads((out / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False  # never started, or interrupted before its files were whole
    return summary.get("status") == "completed" and _same(config, cfg)


def _same(config: dict, cfg: ExperimentConfig) -> bool:
    """The same run: equal configs but for where it was written and how Flower's engine was
    driven on this machine (``simulation.*``; the same seed gives the same metrics on either
    engine). The stored config is read through today's schema first, so a key added since,
    at its default (which keeps the old behaviour), does not make a finished run stale."""
    try:
        stored = json.loads(to_json(from_json(json.dumps(config))))
    except (ConfigError, TypeError, ValueError):
        return False  # written by a schema that no longer reads: stale
    wanted = json.loads(to_json(cfg))
    ignored = {"output_dir": None, "simulation": None}
    return {**stored, **ignored} == {**wanted, **ignored}


def _resumable(out: Path, cfg: ExperimentConfig) -> bool:
    """A stopped run of this very config that can continue from its checkpoint: interrupted,
    failed (e.g. its clients' runtime died: ``max_failed_rounds``) with its checkpoint kept, or
    killed before it could say so (a checkpoint, and no summary saying it completed)."""
    try:
        config = json.loads((out / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    try:
        status = json.loads((out / SUMMARY_FILE).read_text()).get("status")
    except (OSError, json.JSONDecodeError):
        status = None  # killed: it wrote no summary
    stopped = status == "interrupted" or (status in (None, "failed") and has_checkpoint(out))
    return stopped and _same(config, cfg)


def run_job(out: Path, cfg: ExperimentConfig) -> None:
    """Run ``cfg`` into ``out``, or continue a stopped run of that very config from its
    checkpoint (:func:`_resumable`) instead of starting it again."""
    if _resumable(out, cfg):
        log.info("resuming %s from its checkpoint", out)
        run(resume_config(out), resume=True)
    else:
        run(cfg)


def run_jobs(
    root: Path, jobs: Sequence[Job], only: Sequence[str] | None = None, execute: bool = True
) -> list[Path]:
    """Run the jobs not yet done (those whose name contains one of ``only``, if given; none
    without ``execute``); return the run folders of every finished job, in the jobs' order."""
    (root / "runs").mkdir(parents=True, exist_ok=True)
    finished = []
    for i, job in enumerate(jobs, 1):
        out = root / "runs" / job.name
        cfg = compose([*job.overrides, f"output_dir={out}"])
        wanted = execute and (not only or any(o in job.name for o in only))
        if wanted and not is_done(out, cfg):
            log.info("[%d/%d] %s -> %s", i, len(jobs), job.name, out)
            try:
                run_job(out, cfg)
            except Exception:  # one failed run must not stop the grid; its folder says why
                log.error("run %s failed:\n%s", job.name, traceback.format_exc())
        if is_done(out, cfg):
            finished.append(out)
    return finished


Row = dict[str, Any]


def save_figure(fig: Any, path: Path, title: str | None = None) -> Path:
    """Give a report's figure its title, lay it out, write it to ``path`` and free it."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(
    rows: list[Row],
    out: Path,
    table: Callable[[list[Row]], str],
    plot: Callable[[list[Row], Path], Path],
) -> str:
    """A benchmark's report in ``out``: ``results.json`` (every row), ``results.csv`` (without
    the list-valued columns, e.g. per-round curves), ``table.md`` and its plot. Returns the
    table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    if rows:
        with (out / "results.csv").open("w", newline="") as f:
            fields = [k for k, v in rows[0].items() if not isinstance(v, list)]
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        plot(rows, out)
    text = table(rows) if rows else "no finished runs\n"
    (out / "table.md").write_text(text)
    return text


@dataclass(frozen=True)
class Benchmark:
    """A resumable grid benchmark: its grids, how jobs are named, and how runs become a report
    (``results.json``, ``results.csv`` without the list-valued columns, ``table.md``, a plot)."""

    doc: str  # the script's docstring (its first line is the CLI's description)
    results: Path  # benchmarks/results/<name>: one folder per grid
    base: str  # the experiment every job starts from
    grids: Mapping[str, Any]
    jobs_of: Callable[[Any], list[Job]]
    row_of: Callable[[Path], Row]
    table: Callable[[list[Row]], str]
    plot: Callable[[list[Row], Path], Path]

    def write_report(self, runs: list[Path], out: Path) -> str:
        return write_results([self.row_of(r) for r in runs], out, self.table, self.plot)

    def main(self) -> None:
        """The command line: run (or resume) a grid, then write its report. SIGINT/SIGTERM stop
        it cleanly (exit 128 + signal); re-running resumes."""
        parser = argparse.ArgumentParser(description=self.doc.splitlines()[0])
        default = "reduced" if "reduced" in self.grids else next(iter(self.grids))
        parser.add_argument("--grid", choices=sorted(self.grids), default=default)
        parser.add_argument(
            "--only", nargs="*", help="run only jobs whose name contains one of these"
        )
        parser.add_argument("--report-only", action="store_true")
        args = parser.parse_args()
        configure_logging()
        grid = self.grids[args.grid]
        root = self.results / args.grid
        root.mkdir(parents=True, exist_ok=True)
        jobs = self.jobs_of(grid)
        description = {"setting": self.base, "jobs": [j.name for j in jobs], **asdict(grid)}
        (root / "grid.json").write_text(json.dumps(description, indent=2, default=str))
        try:
            runs = run_jobs(root, jobs, args.only, execute=not args.report_only)
        except RunInterrupted as stop:
            log.warning("%s: re-run to resume", stop)
            sys.exit(128 + stop.signum)
        print(self.write_report(runs, root))
