"""fedkd's worker pool for Flower's simulation engine: forked workers run the ClientApp, carry
its context, report its errors, are replaced when they die, and leave nothing behind."""

import os
import signal
import time
from pathlib import Path

import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.client_app import ClientAppException

from fedkd.launch import still_running
from fedkd.workers import ProcessBackend, WorkerDied, WorkerPool, flower_backend

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.fedkd.workers_app:app"


def _message(**config) -> Message:
    return Message(
        RecordDict({"config": ConfigRecord(config)}), dst_node_id=7, message_type="query"
    )


def _context() -> Context:
    return Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})


@pytest.fixture(scope="module")
def pool():
    with WorkerPool(ROOT, APP, 2) as pool:
        yield pool


def _ask(pool: WorkerPool, context: Context, **config) -> tuple[ConfigRecord, Context]:
    reply, context = pool.run(_message(**config), context)
    return reply.content["reply"], context


def test_a_worker_runs_the_app_and_hands_back_the_updated_context(pool):
    context = _context()
    first, context = _ask(pool, context, action="echo")
    second, context = _ask(pool, context, action="echo")
    assert (first["seen"], second["seen"]) == (1, 2)  # the node's state travels with it
    assert {first["pid"], second["pid"]} <= set(pool.pids[1:])
    assert os.getpid() not in (first["pid"], second["pid"])


def test_an_app_error_is_reported_and_the_worker_goes_on(pool):
    with pytest.raises(ClientAppException, match="failed on purpose"):
        pool.run(_message(action="raise"), _context())
    assert _ask(pool, _context(), action="echo")[0]["seen"] == 1


@pytest.mark.timeout(120)  # the failure this guards against is a hang
def test_workers_use_threads_even_after_this_process_ran_openmp(pool):
    """A process forked after OpenMP ran hangs in its first parallel region; the zygote never
    runs torch, so its forks do not."""
    torch.set_num_threads(2)
    torch.nn.Conv2d(1, 16, 3)(torch.randn(128, 1, 28, 28)).sum().backward()  # OpenMP here
    reply, _ = _ask(pool, _context(), action="conv", threads=2)
    assert reply["threads"] == 2


def test_a_dead_worker_fails_its_message_and_is_replaced():
    with WorkerPool(ROOT, APP, 1) as pool:
        victim = pool.pids[1]
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(WorkerDied, match=str(victim)):
            pool.run(_message(action="echo"), _context())
        reply, _ = _ask(pool, _context(), action="echo")
        assert reply["pid"] == pool.pids[1] != victim


def test_close_leaves_no_process():
    pool = WorkerPool(ROOT, APP, 2)
    assert len(pool.pids) == 1  # the zygote starts at once, the workers when first needed
    pids = pool.ready().pids
    assert len(pids) == 3  # the zygote and two workers
    pool.close()
    deadline = time.monotonic() + 10
    while still_running(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert still_running(pids) == []
    with pytest.raises(WorkerDied):
        pool.run(_message(action="echo"), _context())


def test_a_missing_app_fails_the_start_with_the_zygotes_error():
    with pytest.raises(RuntimeError, match="zygote exited"):
        WorkerPool(ROOT, "tests.fedkd.no_such_module:app", 1).ready()


def test_flowers_engine_gets_the_pool_as_its_backend_only_inside(pool):
    import importlib
    import sys

    name = "flwr.server.superlink.fleet.vce.backend.raybackend"
    before = sys.modules.get(name)
    with flower_backend(pool):
        # as Flower's engine looks its backend up (vce_api.start_vce)
        backend = importlib.import_module(name).RayBackend({})
        assert isinstance(backend, ProcessBackend) and backend.num_workers == 2
        assert backend.is_worker_idle()
    assert sys.modules.get(name) is before


FRESH_PROCESS = """
import json, sys, threading
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from fedkd.workers import WorkerPool

root, app = sys.argv[1], sys.argv[2]
TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 7

def conv(pool):
    message = Message(RecordDict({"config": ConfigRecord({"action": "conv", "threads": 2})}),
                      dst_node_id=7, message_type="query")
    context = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    reply = pool.run(message, context)[0].content["reply"]
    zygote = open(f"/proc/{pool.pids[0]}/cmdline", "rb").read()
    return {"forked": pool.zygote_forked, "threads": reply["threads"],
            "same_command": zygote == open("/proc/self/cmdline", "rb").read()}

result = {}
missing = WorkerPool(root, "tests.fedkd.no_such_module:app", 1)
try:
    missing.ready()
except RuntimeError as err:
    result["missing"] = [missing.zygote_forked, str(err)]
for thread in threading.enumerate():  # the failed start's accepting thread
    if thread is not threading.main_thread():
        thread.join(10)
with WorkerPool(root, app, 1) as pool:
    result["fresh"] = conv(pool)
torch.set_num_threads(2)
torch.nn.Conv2d(1, 16, 3)(torch.randn(128, 1, 28, 28)).sum().backward()  # an OpenMP pool here
with WorkerPool(root, app, 1) as pool:
    result["after_openmp"] = conv(pool)
print(json.dumps(result))
"""


@pytest.mark.timeout(180)  # a fork that inherits an OpenMP pool hangs
def test_the_zygote_is_a_fork_of_a_single_threaded_launcher_and_a_fresh_one_otherwise():
    """At a run's start the launcher has one thread: the zygote is its fork (torch and Flower
    shared, not imported again). Once an OpenMP pool (or any thread) exists, a fork could hang:
    the zygote is a fresh interpreter. Both run multi-threaded torch in their workers."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(ROOT), APP],
        capture_output=True, text=True, timeout=170, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["fresh"] == {"forked": True, "threads": 2, "same_command": True}
    assert result["after_openmp"] == {"forked": False, "threads": 2, "same_command": False}
    forked, error = result["missing"]
    assert forked and "zygote exited" in error  # the forked zygote's error fails the start
    assert "no_such_module" in done.stderr  # and its traceback reaches the launcher's stderr
