"""Flower's simulation engine, driven in this process (``simulation.engine=in_process``).

``flwr run`` against a private SuperLink (``simulation.engine=superlink``) starts a SuperLink,
the ``flwr`` CLI and a simulation process before Flower's engine runs: about 8 s of a small
run's start-up. Here the launcher calls the same engine directly: the ServerApp runs in a thread
of this process against Flower's in-memory Grid, the ClientApps in fedkd's forked worker
processes (``simulation.backend=process``, :mod:`fedkd.workers`: no Ray to start) or in Ray
actors (``ray``, Flower's backend), and both receive the run config the app's ``pyproject.toml``
fuses with fedkd's, as under ``flwr run``. The apps are the ones the app directory names, loaded
the way Flower loads them.

Flower's engine runs in a thread beside the main one, which keeps taking signals. A stop
(SIGINT/SIGTERM: :class:`fedkd.launch.RunInterrupted` in the main thread) ends the ServerApp's
wait for replies at once (:class:`fedkd.checkpoint.RunStopped`); fedkd's workers are stopped
at once (under Ray, Flower lets its actors finish the messages in flight and shuts Ray down),
and the call returns once Flower's engine has stopped.
"""

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.config import get_fused_config_from_dir, get_project_config
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
from flwr.serverapp import Grid, ServerApp
from flwr.simulation.run_simulation import _run_simulation
from flwr.supercore.constant import NOOP_FEDERATION_ID
from flwr.supercore.object_ref import load_app
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.supercore.telemetry import EventType

from fedkd.config import ExperimentConfig
from fedkd.grid import PollingGrid
from fedkd.workers import WorkerPool, flower_backend

log = logging.getLogger("fedkd.engine")

ENGINE_STOP_TIMEOUT = 60.0  # seconds Flower's engine gets to wind down after a stop


@contextlib.contextmanager
def _restored_environ(*names: str) -> Iterator[None]:
    """Flower's Ray backend rewrites ``PYTHONPATH`` in this process: put it back afterwards."""
    saved = {n: os.environ.get(n) for n in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _start_ray(num_cpus: int) -> None:
    """Start Ray as Flower's backend would (which then finds it started), keeping this
    process's SIGINT/SIGTERM handlers: Ray's driver replaces them with ones that exit or abort,
    so the launcher could not stop the run cleanly."""
    import ray

    if ray.is_initialized():
        return
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    # Ray's processes inherit the environment, not this process's sys.path (the app's folder)
    path = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ["PYTHONPATH"] = path
    try:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _stop_ray() -> None:
    """Shut Ray down if Flower's engine did not (it failed before it built its backend)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _load(reference: str, app: Path, kind: type) -> Any:
    """The app ``reference`` (``module:attribute``) names in the app directory ``app``."""
    loaded = load_app(reference, ValueError, str(app))
    if not isinstance(loaded, kind):
        raise TypeError(f"{reference} is a {type(loaded).__name__}, not a {kind.__name__}")
    return loaded


def start_workers(cfg: ExperimentConfig, app: Path, env: dict[str, str]) -> WorkerPool:
    """The worker pool of a ``simulation.backend=process`` run of the app in ``app``, its
    zygote started now (it imports torch and the ClientApp while the caller goes on)."""
    components = get_project_config(app)["tool"]["flwr"]["app"]["components"]
    return WorkerPool(app, components["clientapp"], cfg.simulation.num_workers, env)


def run_in_process(
    cfg: ExperimentConfig,
    app: Path,
    run_config: dict[str, Any],
    env: dict[str, str],
    pool: WorkerPool | None = None,
) -> None:
    """Run the Flower app in ``app`` on Flower's simulation engine in this process, with
    ``run_config`` (overriding the app's ``[tool.flwr.app.config]``) and ``env`` added to the
    environment of this process and of the client workers (``pool``, from
    :func:`start_workers`, or started here; closed either way) or Ray actors."""
    components = get_project_config(app)["tool"]["flwr"]["app"]["components"]
    # Both apps are loaded here, before any thread starts: Flower would parse the ClientApp's
    # module (ast) in its engine thread while the ServerApp starts, which CPython 3.11 cannot do
    # concurrently ("AST constructor recursion depth mismatch").
    user_app = _load(components["serverapp"], app, ServerApp)
    client_app = _load(components["clientapp"], app, ClientApp)
    stop = threading.Event()
    server_app = ServerApp()

    served = threading.Event()  # the ServerApp returned: the run folder is written
    failure: list[BaseException] = []

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            user_app(grid=cast(Grid, PollingGrid(grid, stop=stop)), context=context)
        except BaseException as err:
            failure.append(err)
            raise
        finally:
            served.set()

    run_id = generate_rand_int_from_bytes(8)
    run = Run.create_empty(run_id=run_id)
    run.primary_task_id = generate_rand_int_from_bytes(8)
    run.federation_id = NOOP_FEDERATION_ID
    run.override_config = run_config
    TaskIdentity.task_id, TaskIdentity.run_id = 1, run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    context = Context(
        run_id=run_id,
        node_id=0,
        node_config={},
        state=RecordDict(),
        run_config=get_fused_config_from_dir(app, run_config),
    )
    sim = cfg.simulation
    backend = {
        "client_resources": {"num_cpus": sim.client_num_cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": sim.num_cpus},
    }
    # Flower prints its own records (its console handler); under Hydra they would also reach the
    # root logger's handler, DEBUG included
    logging.getLogger("flwr").propagate = False
    done = threading.Event()

    def engine() -> None:
        try:
            _run_simulation(
                num_supernodes=cfg.clients.num_clients,
                exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
                client_app=client_app,
                server_app=server_app,
                backend_config=cast(Any, backend),
                server_app_context=context,
                app_dir=str(app),
                run=run,
                is_app=True,
            )
        except BaseException as err:
            if not failure:  # (the ServerApp's own error is already there)
                failure.append(err)
        finally:
            done.set()

    with _restored_environ("PYTHONPATH", *env), contextlib.ExitStack() as stack:
        os.environ.update(env)
        if sim.backend == "process":
            pool = pool or start_workers(cfg, app, env)
            stack.enter_context(pool)
            stack.enter_context(flower_backend(pool))
        elif pool is not None:
            raise ValueError(f"a worker pool was given to a simulation.backend={sim.backend} run")
        else:
            _start_ray(sim.num_cpus)
            stack.callback(_stop_ray)
        # The engine runs beside the main thread, which keeps taking signals. A stop ends the
        # ServerApp's wait; under Ray, Flower then lets its actors finish the messages in
        # flight and shuts Ray down (killing Ray under them would leave Flower's workers
        # waiting forever); fedkd's workers are stopped at once instead.
        thread = threading.Thread(target=engine, name="fedkd-simulation", daemon=True)
        thread.start()
        try:
            # an Event, not Thread.join: a signal interrupting join() can leave the thread
            # marked as finished while it still runs (CPython before 3.13)
            while not (done.wait(0.2) or served.is_set()):
                pass
        finally:
            stop.set()
            if pool is not None and not done.is_set():
                pool.close()  # its messages in flight come back as errors: the round ends
            # Once the ServerApp has returned, Flower's threads only wind down (their queues
            # poll once a second): they end on their own, after this returns.
            if not served.is_set() and not done.wait(ENGINE_STOP_TIMEOUT):
                log.warning("Flower's engine did not stop within %.0fs", ENGINE_STOP_TIMEOUT)
    if failure:
        raise failure[0]
