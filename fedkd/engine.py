"""Flower's simulation engine, driven in this process (``simulation.engine=in_process``).

``flwr run`` against a private SuperLink (``simulation.engine=superlink``) starts a SuperLink,
the ``flwr`` CLI and a simulation process before Flower's engine runs: about 8 s of a small
run's start-up. Here the launcher calls the same engine directly: the ServerApp runs in a thread
of this process against Flower's in-memory Grid, the ClientApps in Ray actors, and both receive
the run config the app's ``pyproject.toml`` fuses with fedkd's, as under ``flwr run``. The apps
are the ones the app directory names, loaded the way Flower loads them.

A stop (SIGINT/SIGTERM, :class:`fedkd.launch.RunInterrupted` in the main thread) tears Ray down;
the ServerApp's wait for replies then ends at once (:class:`fedkd.checkpoint.RunStopped`), and
the call returns only after the ServerApp thread has finished.
"""

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from flwr.app import Context, Message, RecordDict
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

from fedkd.checkpoint import RunStopped
from fedkd.config import ExperimentConfig

log = logging.getLogger("fedkd.engine")

SERVER_STOP_TIMEOUT = 30.0  # seconds the ServerApp thread gets to end after a stop
_PULL_INTERVAL = 0.05


class _StoppableGrid:
    """Flower's Grid, whose wait for replies ends (:class:`RunStopped`) once ``stop`` is set;
    everything else is the Grid's own."""

    def __init__(self, grid: Grid, stop: threading.Event) -> None:
        self._grid = grid
        self._stop = stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        waiting = set(self._grid.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting and (end is None or time.monotonic() < end):
            if self._stop.is_set():
                raise RunStopped("the run was stopped while waiting for replies")
            got = list(self._grid.pull_messages(waiting))
            replies += got
            waiting -= {m.metadata.reply_to_message_id for m in got}
            if waiting:
                time.sleep(_PULL_INTERVAL)
        return replies


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


def run_in_process(
    cfg: ExperimentConfig, app: Path, run_config: dict[str, Any], env: dict[str, str]
) -> None:
    """Run the Flower app in ``app`` on Flower's simulation engine in this process, with
    ``run_config`` (overriding the app's ``[tool.flwr.app.config]``) and ``env`` added to the
    environment of this process and the Ray actors it starts."""
    components = get_project_config(app)["tool"]["flwr"]["app"]["components"]
    user_app = load_app(components["serverapp"], ValueError, str(app))
    if not isinstance(user_app, ServerApp):
        kind = type(user_app).__name__
        raise TypeError(f"{components['serverapp']} is a {kind}, not a ServerApp")
    stop, started, finished = threading.Event(), threading.Event(), threading.Event()
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        started.set()
        try:
            user_app(grid=cast(Grid, _StoppableGrid(grid, stop)), context=context)
        finally:
            finished.set()

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
    # root logger's handler, DEBUG included, as would the SQL migrations' INFO chatter
    logging.getLogger("flwr").propagate = False
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with _restored_environ("PYTHONPATH", *env):
        os.environ.update(env)
        try:
            _run_simulation(
                num_supernodes=cfg.clients.num_clients,
                exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
                client_app_attr=components["clientapp"],
                server_app=server_app,
                backend_config=cast(Any, backend),
                server_app_context=context,
                app_dir=str(app),
                run=run,
                is_app=True,
            )
        finally:
            stop.set()
            if started.is_set() and not finished.wait(SERVER_STOP_TIMEOUT):
                log.warning("the ServerApp did not end within %.0fs", SERVER_STOP_TIMEOUT)
