"""``fedkd-node``: a SuperNode's ClientApp executor that keeps its process between messages.

Under Flower's default ``--isolation subprocess`` a SuperNode starts a new ``flwr-clientapp``
process for every message: Python, Flower, torch and fedkd are imported again and the data is
loaded again, for every client in every round (seconds each, on the critical path of a round).
Start the SuperNode with ``--isolation process`` and this executor beside it instead:

    flower-supernode --isolation process --port 9094 --superlink HOST:PORT ... &
    fedkd-node --runtime-api-address 127.0.0.1:9094

It takes the node's tasks from its runtime API (as Flower's ``flower-superexec`` does) and hands
each to a worker process (:mod:`fedkd.node_worker`) that runs the ClientApp as
``flwr-clientapp`` would, but stays up: it loads an app bundle once and keeps what the app
caches (its imports, its data) for the next message. One worker per app bundle: a new bundle
(a run of changed code) gets a fresh process, so its modules are its own. The first worker is
started with the executor, torch imported, ready for the first bundle. A worker that dies is
replaced; its task is lost like any failed client, and the server's ``round_timeout`` bounds
the wait.
"""

import argparse
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

log = logging.getLogger("fedkd.node")

POLL_INTERVAL = 0.25  # seconds between asks for a task (Flower's superexec: 1 s)
PRELOAD = "numpy,torch"  # what a spare worker imports before it has a bundle
EXIT_GRACE = 5.0  # seconds to stop cleanly once the SuperNode is gone
WORKER_SCRIPT = Path(__file__).resolve().parent / "node_worker.py"


class WorkerDied(RuntimeError):
    pass


class WorkerProcess:
    """A :mod:`fedkd.node_worker` process and the two pipes that feed it tokens and return
    its results."""

    def __init__(self, address: str, root_certificates: str | None, threads: int | None) -> None:
        task_read, self._tasks = os.pipe()
        self._results, result_write = os.pipe()
        command = [sys.executable, str(WORKER_SCRIPT), "--runtime-api-address", address,
                   "--tasks", str(task_read), "--results", str(result_write),
                   "--preload", PRELOAD]  # fmt: skip
        if root_certificates:
            command += ["--root-certificates", root_certificates]
        env = dict(os.environ)
        if threads is not None:  # read by torch (and numpy's BLAS) when they load
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.process = subprocess.Popen(command, pass_fds=(task_read, result_write), env=env)
        os.close(task_read)
        os.close(result_write)
        self.fab_hash: str | None = None  # the bundle it runs, once it has one
        self._buffer = b""

    def run(self, token: str, stop: threading.Event) -> str:
        """Hand ``token``'s task over and wait for its outcome (``ok`` or ``failed ...``)."""
        try:
            os.write(self._tasks, f"{token}\n".encode())
        except BrokenPipeError as err:
            raise WorkerDied(f"worker {self.process.pid} exited ({self.process.wait()})") from err
        while b"\n" not in self._buffer:
            if stop.is_set():
                raise InterruptedError("stopped while a task was running")
            ready, _, _ = select.select([self._results], [], [], 0.2)
            if ready:
                chunk = os.read(self._results, 65536)
                if not chunk:
                    raise WorkerDied(f"worker {self.process.pid} exited ({self.process.wait()})")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        for fd in (self._tasks, self._results):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class NodeExecutor:
    """Polls the runtime API at ``address`` for ClientApp tasks and runs each in the worker of
    its app bundle."""

    def __init__(
        self,
        address: str,
        root_certificates: str | None = None,
        poll_interval: float = POLL_INTERVAL,
        threads: int | None = None,
    ) -> None:
        # Flower's runtime client is imported here, not at module level: `fedkd-node --help`
        # and the module's import stay cheap
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient

        if poll_interval <= 0:
            raise ValueError(f"poll interval must be positive, got {poll_interval}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads
        self.address = address
        self.root_certificates = root_certificates
        self.poll_interval = poll_interval
        certificates = Path(root_certificates).read_bytes() if root_certificates else None
        self.client = RuntimeHttpClient.from_server_address(
            server_address=address,
            insecure=certificates is None,
            root_certificates=certificates,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
            retry_invoker=make_simple_http_retry_invoker(),
        )
        self.workers: dict[str, WorkerProcess] = {}
        self.spare: WorkerProcess | None = None
        self.tasks_run = 0

    def _worker(self, fab_hash: str) -> WorkerProcess:
        worker = self.workers.get(fab_hash)
        if worker is not None and worker.process.poll() is None:
            return worker
        if worker is not None:
            worker.close()
        # a new bundle: the older bundles' workers go (a node serves one run at a time)
        for old in self.workers.values():
            old.close()
        self.workers.clear()
        # the worker started ahead serves the first bundle; later bundles start their own
        worker = self.spare if self.spare and self.spare.process.poll() is None else None
        worker = worker or WorkerProcess(self.address, self.root_certificates, self.threads)
        self.spare = None
        worker.fab_hash = fab_hash
        self.workers[fab_hash] = worker
        return worker

    def serve(self, stop: threading.Event) -> None:
        """Run tasks until ``stop`` is set."""
        from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
        from flwr.supercore.constant import TaskType

        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        self.spare = WorkerProcess(self.address, self.root_certificates, self.threads)
        log.info("fedkd-node: taking ClientApp tasks from %s", self.address)
        try:
            while not stop.is_set():
                response = self.client.AcquireTask(request)
                if not (response.HasField("task") and response.token):
                    stop.wait(self.poll_interval)
                    continue
                worker = self._worker(response.task.fab_hash)
                try:
                    outcome = worker.run(response.token, stop)
                except WorkerDied as err:
                    log.error("task %d lost: %s", response.task.task_id, err)
                    continue
                except InterruptedError:
                    break
                self.tasks_run += 1
                task, pid = response.task.task_id, worker.process.pid
                if outcome == "ok":
                    log.info("task %d ok in worker %d", task, pid)
                else:
                    log.warning("task %d %s in worker %d", task, outcome, pid)
        finally:
            self.close()

    def close(self) -> None:
        for worker in [*self.workers.values(), *filter(None, [self.spare])]:
            worker.close()
        self.workers.clear()
        self.spare = None
        self.client.close()


def _watch(pid: int, stop: threading.Event) -> None:
    """Set ``stop`` once process ``pid`` is gone (or a zombie)."""
    while not stop.wait(0.5):
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (ProcessLookupError, FileNotFoundError):
            state = "Z"
        except OSError:
            continue
        if state == "Z":
            log.info("fedkd-node: process %d is gone, stopping", pid)
            stop.set()
            time.sleep(EXIT_GRACE)  # the main loop may be retrying a runtime API that is gone
            os._exit(0)  # the workers exit when their task pipe closes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fedkd-node",
        description="Run a SuperNode's ClientApp tasks in long-lived processes "
        "(start the SuperNode with --isolation process).",
    )
    parser.add_argument(
        "--runtime-api-address",
        default="127.0.0.1:9094",
        help="the SuperNode's runtime API (flower-supernode --port), default %(default)s",
    )
    parser.add_argument(
        "--root-certificates",
        default=None,
        help="CA certificate of a TLS runtime API (default: plain HTTP, as Flower's default)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of the ClientApp's maths (default: torch's, all cores); "
        "several nodes on one machine: cores / nodes",
    )
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="stop when this process (the SuperNode) is gone",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=POLL_INTERVAL,
        help="seconds between asks for a task, default %(default)s",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per poll otherwise
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("fedkd-node: %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if args.parent_pid is not None:
        threading.Thread(target=_watch, args=(args.parent_pid, stop), daemon=True).start()
    executor = NodeExecutor(
        args.runtime_api_address, args.root_certificates, args.poll_interval, args.threads
    )
    executor.serve(stop)


if __name__ == "__main__":
    main()
