"""fedkd-node's worker process handling (the executor as a whole runs in the deployment tests)."""

import threading

import pytest

from fedkd.node import NodeExecutor, WorkerDied, WorkerProcess


def test_a_worker_that_died_is_reported_not_waited_for():
    worker = WorkerProcess("127.0.0.1:1", None, threads=1)
    worker.process.kill()
    worker.process.wait()
    with pytest.raises(WorkerDied, match=str(worker.process.pid)):
        worker.run("token", threading.Event())
    worker.close()


def test_a_stop_ends_the_wait_for_a_task():
    worker = WorkerProcess("127.0.0.1:1", None, threads=1)  # nothing answers: the task hangs
    stop = threading.Event()
    stop.set()
    try:
        with pytest.raises(InterruptedError):
            worker.run("token", stop)
    finally:
        worker.close()
    assert worker.process.poll() is not None  # closed: the process is gone


@pytest.mark.parametrize(("key", "value"), [("poll_interval", 0), ("threads", 0)])
def test_bad_settings_are_refused(key, value):
    with pytest.raises(ValueError, match=key.split("_")[0]):
        NodeExecutor("127.0.0.1:1", **{key: value})
