"""Start a fedkd run on Flower's own runtime, never a transport of ours.

* ``mode=simulation``: the launcher first writes the run's data once for all its processes to
  map (:mod:`fedkd.data.shared`). With ``simulation.engine=in_process`` (the default) it then
  drives Flower's simulation engine itself (:mod:`fedkd.engine`); with ``superlink`` a private
  simulation SuperLink is started on a free loopback port with its own ``FLWR_HOME``, the run
  goes through it with ``flwr run``, and it is stopped (by PID) afterwards -- so concurrent
  runs, sweeps and tests never share or leak a SuperLink.
* ``mode=deploy``: the run goes to a named connection of the user's ``$FLWR_HOME/config.toml``
  (a real SuperLink with SuperNodes).

Either way the validated config travels as one JSON string in ``run_config`` (``cfg-json``), so
the ServerApp and every ClientApp see exactly the same config.
"""

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from fedkd.checkpoint import STOP_MARKER, ServerCheckpoint, has_checkpoint
from fedkd.config import ConfigError, ExperimentConfig, from_json, to_json
from fedkd.data.shared import SHARED_DATA_ENV
from fedkd.project import is_app, write_bare_app
from fedkd.protocol import RUN_CONFIG_KEY, RUN_RESUME_KEY
from fedkd.results import (
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    RunSummary,
    read_metrics,
)
from fedkd.results import read_summary as read_run_summary

if TYPE_CHECKING:
    from fedkd.workers import WorkerPool

log = logging.getLogger("fedkd.launch")

SUPERLINK_START_TIMEOUT = 30.0
SIMULATION_CONNECTION = "fedkd-simulation"
SHARED_DATA_DIR = "data"  # in a run's working directory: the data its processes map
NO_DEPENDENCY_INSTALL = {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}


def flower_env(**extra: str) -> dict[str, str]:
    """The environment for Flower processes: this Python's bin directory first on PATH (the
    SuperLink spawns ``flower-superexec`` and ``flwr-serverapp`` by name), no runtime installs."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, **NO_DEPENDENCY_INSTALL, "PATH": path, **extra}


class LaunchError(RuntimeError):
    """The run could not be started, or ended without a summary."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run (a ``KeyboardInterrupt``: ``except Exception`` lets it
    through, so a benchmark matrix stops instead of moving to its next run)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def interruptible(run_dir: Path | None = None) -> Iterator[None]:
    """Within this block SIGINT and SIGTERM raise :class:`RunInterrupted`, so every ``finally``
    runs: ``flwr run`` is killed and the private SuperLink's process group (its simulation
    process and Ray) is stopped. First the run folder ``run_dir`` gets the stop marker, so the
    ServerApp records no round whose clients the stop may already have killed. Signal handlers
    live in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        if run_dir is not None:
            (run_dir / STOP_MARKER).touch()
        raise RunInterrupted(signum)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def app_dir(workdir: Path) -> Path:
    """The Flower app to ship: the working directory when it is one (a fedkd project from
    ``fedkd-new``, or fedkd's checkout), so the user's modules travel with it; else a bare app
    (fedkd's installed apps, no user code) written into ``workdir``."""
    here = Path.cwd()
    return here if is_app(here) else write_bare_app(workdir / "app")


def run_config_dict(cfg: ExperimentConfig, resume: bool = False) -> dict[str, Any]:
    """The run config the apps receive: the config as one JSON string (and, to continue a
    stopped run from its checkpoint, ``resume = true``)."""
    return {RUN_CONFIG_KEY: to_json(cfg), **({RUN_RESUME_KEY: True} if resume else {})}


def write_run_config(cfg: ExperimentConfig, path: Path, resume: bool = False) -> Path:
    """:func:`run_config_dict` as the TOML ``--run-config`` file ``flwr run`` takes."""
    path.write_text(tomli_w.dumps(run_config_dict(cfg, resume)))
    return path


def resume_config(run_dir: str | Path) -> ExperimentConfig:
    """The config of the stopped run in ``run_dir``, to continue it (``fedkd resume=<dir>``).
    Raises :class:`ConfigError` when there is nothing to resume."""
    out = Path(run_dir).resolve()
    if not (out / CONFIG_FILE).is_file():
        raise ConfigError(f"resume={run_dir}: not a fedkd run folder (no {CONFIG_FILE})")
    cfg = from_json((out / CONFIG_FILE).read_text())
    if (out / SUMMARY_FILE).is_file() and read_run_summary(out).status == "completed":
        raise ConfigError(f"resume={run_dir}: the run completed; there is nothing to resume")
    if not cfg.algorithm.distills:
        raise ConfigError(
            f"resume={run_dir}: algorithm={cfg.algorithm.kind} does not checkpoint (resume "
            "continues federated-distillation runs); start it again"
        )
    if cfg.output_dir and Path(cfg.output_dir).resolve() != out:
        log.warning("the run folder moved from %s to %s", cfg.output_dir, out)
    if not has_checkpoint(out):
        log.warning("%s has no checkpoint (no round finished): starting it from round 1", out)
    return dataclasses.replace(cfg, output_dir=str(out))


def flower_bin(name: str) -> str:
    """A Flower executable, preferring the one beside this Python (a venv not on PATH)."""
    found = shutil.which(name, path=flower_env()["PATH"])
    if found is None:
        raise LaunchError(f"'{name}' not found: install flwr[simulation] (make setup)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) from Linux's /proc; empty elsewhere."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
            table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (Flower's SuperExec starts its own process group, and
    the simulation's Ray processes live in that one)."""
    table = _process_table()
    tree, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        children = [p for p, (ppid, _, _) in table.items() if ppid == parent]
        tree += children
        todo += children
    return tree


def still_running(pids: list[int]) -> list[int]:
    """Those of ``pids`` that are still running (zombies count as gone)."""
    table = _process_table()
    return [p for p in pids if p in table and table[p][2] != "Z"]


def proportional_memory(pids: list[int]) -> int:
    """Bytes of memory ``pids`` hold together, each shared page counted once in all (the sum
    of their proportional set sizes, ``Pss`` in ``/proc/<pid>/smaps_rollup``); processes that
    are gone or unreadable count 0."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024  # kB
                    break
    return total


class MemoryWatch:
    """The peak memory of this process and every process below it (the run's SuperLink,
    simulation, Ray workers), sampled every ``interval`` seconds on a daemon thread while the
    ``with`` block runs; ``peak`` is in bytes (0 where ``/proc`` is unavailable)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fedkd-memory", daemon=True)

    def _watch(self) -> None:
        while True:
            self.peak = max(self.peak, proportional_memory(process_tree(os.getpid())))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "MemoryWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 3.0) -> None:
    """Stop ``proc`` and every process below it, in all their process groups: SIGTERM, then
    SIGKILL what is left after ``timeout`` seconds."""
    tree = process_tree(proc.pid) if proc.poll() is None else []
    table = _process_table()
    groups = {table[p][1] for p in tree if p in table} - {os.getpgrp()}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        for pid in still_running(tree):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while still_running(tree) and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.2)
        if not still_running(tree):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


def wait_healthy(port: int, proc: subprocess.Popen[Any], timeout: float, log_file: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LaunchError(
                f"flower-superlink exited with code {proc.returncode}; see {log_file}"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise LaunchError(f"flower-superlink did not become healthy in {timeout:.0f}s; see {log_file}")


@contextlib.contextmanager
def simulation_superlink(workdir: Path, extra_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A private simulation SuperLink (its processes get ``extra_env`` too); yields the
    environment for ``flwr`` commands using it."""
    port = free_port()
    flwr_home = workdir / "flwr-home"
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{SIMULATION_CONNECTION}"\n\n'
        f'[superlink.{SIMULATION_CONNECTION}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = flower_env(FLWR_HOME=str(flwr_home), **extra_env)
    log_file = workdir / "superlink.log"
    command = [
        flower_bin("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
        "--host", "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation",
    ]  # fmt: skip
    with log_file.open("w") as sink:
        # A neutral working directory: the simulation puts it on sys.path.
        proc = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_healthy(port, proc, SUPERLINK_START_TIMEOUT, log_file)
        yield env
    finally:
        stop_process(proc)


RUN_STARTED = re.compile(r"Successfully started run (\d+)")


@dataclasses.dataclass(frozen=True)
class FlowerRun:
    """What ``flwr run`` left: its exit code and the id of the run it started (None: none).
    Its code is 0 whenever the log stream ended, however the run did: see
    :func:`run_status`."""

    code: int
    run_id: int | None


def run_status(connection: str, run_id: int, env: dict[str, str]) -> tuple[str, str]:
    """The SuperLink's status of run ``run_id`` (``finished:completed``, ``finished:failed``,
    ...) and its details, from ``flwr ls --format json``; ``("unknown", why)`` when it cannot
    be read."""
    command = [flower_bin("flwr"), "ls", connection, "--run-id", str(run_id), "--format", "json"]
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        runs = json.loads(proc.stdout).get("runs") or []
    except (OSError, subprocess.TimeoutExpired, ValueError, AttributeError) as err:
        return "unknown", f"{' '.join(command)}: {err}"
    if not runs or not isinstance(runs[0], dict):
        return "unknown", f"{' '.join(command)} printed no run: {proc.stdout[-500:]!r}"
    return str(runs[0].get("status", "unknown")), str(runs[0].get("status-details", ""))


def flwr_run(
    app: Path,
    connection: str,
    run_config: Path,
    env: dict[str, str],
    federation_config: str | None = None,
    stop_remote: bool = False,
) -> FlowerRun:
    """``flwr run <app> <connection> --stream``, its output passed through; returns its exit
    code and the id of the run it started. Stopped by SIGINT/SIGTERM (:class:`RunInterrupted`),
    it is killed and, with ``stop_remote`` (a SuperLink that outlives this process:
    deployment), the run it started is stopped there too (``flwr stop <run id> <connection>``)."""
    command = [
        flower_bin("flwr"),
        "run",
        str(app),
        connection,
        "--stream",
        "--run-config",
        str(run_config),
    ]
    if federation_config:
        command += ["--federation-config", federation_config]
    log.info("$ %s", " ".join(command))
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    run_id = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if run_id is None and (started := RUN_STARTED.search(line)):
                run_id = int(started.group(1))
        return FlowerRun(proc.wait(), run_id)
    except RunInterrupted:
        if stop_remote and run_id is not None:
            log.warning("stopping run %d on %s", run_id, connection)
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    [flower_bin("flwr"), "stop", str(run_id), connection],
                    env=env, timeout=30, capture_output=True,
                )  # fmt: skip
        raise
    finally:
        stop_process(proc)


def read_summary(cfg: ExperimentConfig) -> dict[str, Any]:
    path = Path(cfg.output_dir) / SUMMARY_FILE
    if not path.is_file():
        raise LaunchError(f"the run wrote no {path}; see the log above")
    summary: dict[str, Any] = json.loads(path.read_text())
    if summary.get("status") != "completed":
        raise LaunchError(f"the run failed: {summary.get('error')} (details in {path.parent})")
    return summary


def federation_config(cfg: ExperimentConfig) -> str:
    sim = cfg.simulation
    return (
        f"num-supernodes={cfg.clients.num_clients} "
        f"client-resources-num-cpus={sim.client_num_cpus} init-args-num-cpus={sim.num_cpus}"
    )


def check_before_start(cfg: ExperimentConfig, workdir: Path | None = None) -> None:
    """Load the data and build every model here, so bad input fails before Flower starts;
    in simulation, write the data into ``workdir`` for every process of the run to map
    (:mod:`fedkd.data.shared`).

    In deployment the data may live only where the ServerApp runs (the SuperLink's machine):
    data that is absent here is then left for the server to load, with a warning; data that is
    here but malformed still fails.
    """
    from fedkd.experiment import forget_data, preflight, share_data

    try:
        preflight(cfg, private=cfg.mode == "simulation")
        if cfg.mode == "simulation" and workdir is not None:
            share_data(cfg, workdir / SHARED_DATA_DIR)
    except ConfigError as err:
        if cfg.mode != "deploy" or not isinstance(err.__cause__, FileNotFoundError):
            raise
        log.warning("cannot check the data here (%s); the ServerApp will load it", err)
    finally:
        forget_data()  # the launcher need not hold the data while Flower runs


def run(cfg: ExperimentConfig, resume: bool = False) -> dict[str, Any]:
    """Run ``cfg`` (simulation or deployment) and return its summary; ``resume``: continue
    the stopped run in ``cfg.output_dir`` from its checkpoint (see :func:`resume_config`)."""
    if not cfg.output_dir:
        raise LaunchError("output_dir must be set")
    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.algorithm.in_process:
        from fedkd.baselines import run_baseline

        with interruptible():
            return run_baseline(cfg)
    start = time.monotonic()
    # what the run had behind it when it resumed: its wall time, and the rounds it resumed after
    earlier = ServerCheckpoint.load(out) if resume and has_checkpoint(out) else None
    before = _peak_before(out) if resume else 0
    workdir = Path(tempfile.mkdtemp(prefix="fedkd-"))
    memory = MemoryWatch()
    pool = None
    try:
        app = app_dir(workdir)
        pool = _early_workers(cfg, app, workdir)
        check_before_start(cfg, workdir)
        (out / STOP_MARKER).unlink(missing_ok=True)  # left by an earlier stop
        with interruptible(out), memory:
            summary = _run_flower(cfg, out, app, workdir, resume, pool)
    except RunInterrupted:
        stopped = write_interrupted_summary(out, cfg, time.monotonic() - start, earlier)
        (out / STOP_MARKER).unlink(missing_ok=True)
        if cfg.mode == "simulation":
            _add_peak_memory(out, memory.peak, before)
        log.warning("run stopped after %d finished rounds -> %s", stopped.rounds, out)
        raise
    finally:
        if pool is not None:
            pool.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if cfg.mode != "simulation":  # the SuperLink and SuperNodes are not this process's tree
        return summary
    return _add_peak_memory(out, memory.peak, before).to_dict()


def _peak_before(out: Path) -> int:
    """The peak memory the stopped run in ``out`` had recorded before it stopped (0: none)."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        return read_run_summary(out).peak_memory_bytes or 0
    return 0


def _add_peak_memory(out: Path, peak: int, before: int) -> RunSummary:
    """Record in ``summary.json`` the peak memory of the process tree on this machine (for a
    resumed run, the larger of this stretch's and the one before the stop)."""
    summary = read_run_summary(out)
    summary.peak_memory_bytes = max(peak, before) or None
    (out / SUMMARY_FILE).write_text(summary.to_json())
    return summary


def write_interrupted_summary(
    out: Path, cfg: ExperimentConfig, wall_seconds: float, earlier: ServerCheckpoint | None = None
) -> RunSummary:
    """``summary.json`` of a stopped run: ``status: interrupted`` and the rounds it finished
    (the ServerApp, stopped with its process, could not write it); for a resumed run, counting
    the time and the resumes behind the checkpoint it resumed from (``earlier``)."""
    rounds = read_metrics(out) if (out / METRICS_FILE).is_file() else []
    if earlier is not None:
        wall_seconds += earlier.wall_seconds
    summary = RunSummary.of_rounds(rounds, "interrupted", wall_seconds)
    if earlier is not None:
        summary.resumed_after = [*earlier.resumed_after, earlier.round]
    if cfg.dp.enabled:
        summary.dp_delta = cfg.dp.delta
    (out / SUMMARY_FILE).write_text(summary.to_json())
    return summary


def _shared_env(workdir: Path) -> dict[str, str]:
    """Where the run's processes find the data check_before_start shares."""
    return {SHARED_DATA_ENV: str(workdir / SHARED_DATA_DIR)}


def _early_workers(cfg: ExperimentConfig, app: Path, workdir: Path) -> "WorkerPool | None":
    """A ``simulation.backend=process`` run's client workers, started before the data is
    checked: their zygote imports torch and the ClientApp meanwhile (about 2 s of start-up)."""
    sim = cfg.simulation
    if cfg.mode != "simulation" or (sim.engine, sim.backend) != ("in_process", "process"):
        return None
    from fedkd.engine import start_workers

    return start_workers(cfg, app, _shared_env(workdir))


def _run_flower(
    cfg: ExperimentConfig,
    out: Path,
    app: Path,
    workdir: Path,
    resume: bool,
    pool: "WorkerPool | None" = None,
) -> dict[str, Any]:
    """The run of the Flower app in ``app`` through Flower's own runtime; returns its
    summary."""
    run_config = write_run_config(cfg, workdir / "run_config.toml", resume)
    if cfg.mode == "simulation":
        shared = _shared_env(workdir)
        if cfg.simulation.engine == "in_process":
            from fedkd.engine import run_in_process

            try:
                run_in_process(cfg, app, run_config_dict(cfg, resume), shared, pool)
            except Exception as err:  # a failing ServerApp wrote its error into the summary
                log.warning("Flower's engine ended with %s: %s", type(err).__name__, err)
            return read_summary(cfg)
        with simulation_superlink(workdir, shared) as env:
            flower = flwr_run(app, SIMULATION_CONNECTION, run_config, env, federation_config(cfg))
    else:
        env = flower_env()
        flower = flwr_run(app, cfg.connection, run_config, env, stop_remote=True)
    if flower.code != 0:
        log.warning("flwr run exited with code %d", flower.code)
    elif cfg.mode == "deploy" and not (out / SUMMARY_FILE).is_file():
        return _remote_summary(cfg.connection, flower.run_id, env, out)
    return read_summary(cfg)


def _remote_summary(
    connection: str, run_id: int | None, env: dict[str, str], out: Path
) -> dict[str, Any]:
    """A deployed run that wrote no summary here: its ServerApp ran on another machine (its
    run folder is there), or it failed before it could write one -- which ``flwr run``, whose
    code is 0 either way, does not tell. The SuperLink does."""
    if run_id is None:
        raise LaunchError(f"flwr run started no run on '{connection}'; see the log above")
    status, details = run_status(connection, run_id, env)
    if status != "finished:completed":
        raise LaunchError(
            f"run {run_id} on '{connection}' ended {status} ({details or 'no details'}) and "
            f"wrote no {out / SUMMARY_FILE}; its ServerApp log is in the output above"
        )
    log.info("run %d completed; its run folder is on the SuperLink's machine, at %s", run_id, out)
    return {"status": "remote", "run_id": run_id, "output_dir": str(out)}
