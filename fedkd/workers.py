"""Flower's simulation engine without Ray: the ClientApps run in forked worker processes.

Flower's engine (``flwr.server.superlink.fleet.vce``) keeps the nodes, their contexts and the
message queues, and hands each message to a *backend*; Flower 1.41 ships one, Ray, which costs a
run several seconds to start (the Ray cluster, then every actor importing torch and fedkd) and
a few to stop, and its daemons and actors hundreds of megabytes. :class:`ProcessBackend` is the
same contract served by :class:`WorkerPool`:

- a **zygote** process imports torch and the app's ClientApp once and then only forks: each
  **worker** is a fork of it, ready in milliseconds, sharing the zygote's imported pages
  copy-on-write, and its datasets through fedkd's shared arrays (:mod:`fedkd.data.shared`);
- the zygote is itself a fork of the launcher while the launcher has a single thread (the
  start of a run: torch and Flower, imported there already, are then shared by every process
  of the run instead of being imported twice); otherwise a fresh ``python -m fedkd.workers``;
- the zygote never runs a torch operation, so a forked worker may use any number of threads
  (a process forked after OpenMP ran cannot), and a worker that dies is replaced by a fresh fork
  while the message it held comes back as an error reply, as under Ray;
- workers talk to the launcher over an authenticated Unix socket, one message at a time:
  ``(Message, Context)`` in, ``(Message, Context)`` or an error out;
- SIGINT (the terminal's Ctrl-C reaches the whole process group) is the launcher's to handle:
  the zygote and workers ignore it, and die with their parent (``PR_SET_PDEATHSIG``).

``simulation.backend=ray`` keeps Flower's Ray backend.
"""

import contextlib
import ctypes
import gc
import logging
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.client_app import ClientAppException
from flwr.server.superlink.fleet.vce.backend import Backend, BackendConfig

log = logging.getLogger("fedkd.workers")

AUTHKEY_ENV = "FEDKD_WORKERS_AUTHKEY"
START_TIMEOUT = 120.0  # seconds the zygote (torch and the app imported) and a fork may take
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the thread that forked it exits (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _native_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # not Linux
        return -1


# numpy's OpenBLAS starts its threads when it loads (it is fork-safe); torch starts none until
# its first parallel region
_THREADS_AT_IMPORT = _native_threads()


def _single_threaded() -> bool:
    """Whether this process is as it was when this module was imported: one Python thread and
    no native thread since (none that could hold a lock at a fork, and no OpenMP pool: its
    threads would be missing in a fork, which then hangs in its first parallel region)."""
    threads = _native_threads()
    return threading.active_count() == 1 and 0 < threads <= _THREADS_AT_IMPORT


class _Forked:
    """A child process running ``target`` in a fork of this one (it never returns to the
    caller's code: it leaves with ``os._exit``), with the part of ``subprocess.Popen``'s
    interface the pool uses."""

    def __init__(self, target: Callable[[], None]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                target()
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(status)
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already (SIGCHLD ignored here): it has ended
                self.returncode = -1
                return self.returncode
            if pid == 0:
                return None
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"fork {self.pid}", timeout or 0.0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


class WorkerDied(RuntimeError):
    """A worker process ended while it held a message (killed, out of memory, a crash)."""


class WorkerPool:
    """``size`` worker processes forked from one zygote that has imported ``app_ref``
    (``module:attribute``, a :class:`flwr.clientapp.ClientApp`) from ``app_dir``.

    Make it in a thread that outlives it (the main thread): the zygote dies with that thread."""

    def __init__(
        self, app_dir: Path, app_ref: str, size: int, env: Mapping[str, str] | None = None
    ) -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {size}")
        self.size = size
        self._authkey = secrets.token_bytes(32)
        self._tmp = tempfile.TemporaryDirectory(prefix="fedkd-workers-")
        self._listener = Listener(str(Path(self._tmp.name) / "socket"), authkey=self._authkey)
        address = str(self._listener.address)
        # workers are forked (and connected) the first time one is needed, or by ready()
        self._zygote: subprocess.Popen[bytes] | _Forked
        if _single_threaded():
            # a fork of this process: torch and the app's imports shared with it, not repeated
            self._zygote = _Forked(lambda: _forked_zygote(address, app_dir, app_ref,
                                                          self._authkey, env or {}))  # fmt: skip
        else:  # a fork could inherit held locks or an OpenMP pool: a fresh interpreter
            zygote_env = {**os.environ, **(env or {}), AUTHKEY_ENV: self._authkey.hex()}
            # it imports what this process imports: its sys.path, the app's folder first
            zygote_env["PYTHONPATH"] = os.pathsep.join([str(app_dir), *sys.path])
            command = [sys.executable, "-m", "fedkd.workers", address, str(app_dir), app_ref]
            # it imports torch and the app while this process goes on
            self._zygote = subprocess.Popen(command, env=zygote_env, stdin=subprocess.DEVNULL)
        self._lock = threading.Lock()
        self._idle: queue.SimpleQueue[tuple[int, Connection]] = queue.SimpleQueue()
        self._workers: dict[int, Connection] = {}
        self._pids: dict[int, int] = {}
        self._control: Connection | None = None
        self._closed = False

    def ready(self) -> "WorkerPool":
        """Wait for the zygote and fork the workers (once); raises if the zygote failed."""
        with self._lock:
            if self._closed:
                raise WorkerDied("the worker pool was closed")
            if self._control is not None:
                return self
            try:
                self._control = self._accept("zygote")[1]
                for index in range(self.size):
                    self._idle.put((index, self._fork(index)))
            except BaseException:
                self._close()
                raise
        return self

    @property
    def zygote_forked(self) -> bool:
        """Whether the zygote is a fork of this process (else a fresh interpreter)."""
        return isinstance(self._zygote, _Forked)

    @property
    def pids(self) -> list[int]:
        """The zygote's and the (started) workers' process ids."""
        return [self._zygote.pid, *self._pids.values()]

    def _accept(self, what: str) -> tuple[int, Connection]:
        """The next connection to the socket (``what`` connecting), or an error if the zygote
        exits or nothing connects within :data:`START_TIMEOUT`."""
        accepted: list[Connection] = []
        error: list[BaseException] = []

        def accept() -> None:
            try:
                accepted.append(self._listener.accept())
            except BaseException as err:  # closed by close(), or a failed handshake
                error.append(err)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while thread.is_alive():
            thread.join(0.05)
            if self._zygote.poll() is not None and thread.is_alive():
                raise RuntimeError(
                    f"the worker zygote exited with status {self._zygote.returncode} before "
                    f"the {what} connected (its error is above)"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {what} did not connect within {START_TIMEOUT:.0f}s")
        if error:
            raise RuntimeError(f"the {what} could not connect: {error[0]}") from error[0]
        conn = accepted[0]
        kind, pid = conn.recv()
        if kind != what:
            raise RuntimeError(f"expected the {what}, got {kind}")
        return pid, conn

    def _fork(self, index: int) -> Connection:
        assert self._control is not None
        self._control.send(("fork", index))
        pid, conn = self._accept("worker")
        self._pids[index] = pid
        self._workers[index] = conn
        return conn

    def run(self, message: Message, context: Context) -> tuple[Message, Context]:
        """``message`` through the ClientApp in an idle worker (blocks until one is idle)."""
        self.ready()
        index, conn = self._idle.get()
        try:
            conn.send((message, context))
            status, *result = conn.recv()
        except (EOFError, OSError) as err:
            with self._lock:
                if self._closed:
                    raise WorkerDied("the worker pool was closed") from err
                pid = self._pids.get(index)
                conn.close()
                conn = self._fork(index)  # a fresh worker takes its place
            raise WorkerDied(f"worker {pid} died while it ran a message") from err
        finally:
            self._idle.put((index, conn))
        if status == "error":
            raise ClientAppException(result[0])
        reply, new_context = result
        return reply, new_context

    def has_idle(self) -> bool:
        return not self.ready()._idle.empty()

    def close(self) -> None:
        """Stop the workers and the zygote (a worker in the middle of a message is killed)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pid in self._pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for conn in self._workers.values():
            conn.close()
        if self._zygote.poll() is None:
            self._zygote.terminate()
            try:
                self._zygote.wait(10)
            except subprocess.TimeoutExpired:
                self._zygote.kill()
                self._zygote.wait()
        # an accepting thread left by a failed start blocks in accept(): a connection wakes it
        # (its handshake fails, and it ends)
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
            wake.settimeout(1.0)
            wake.connect(str(self._listener.address))
        self._listener.close()
        self._tmp.cleanup()

    def __enter__(self) -> "WorkerPool":
        return self.ready()

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProcessBackend(Backend):
    """Flower's ``Backend`` contract served by a :class:`WorkerPool` (made by the caller, which
    closes it: see :func:`flower_backend`)."""

    pool: WorkerPool  # set by flower_backend's subclass

    def __init__(self, backend_config: BackendConfig) -> None:
        super().__init__(backend_config)

    def build(self, app_fn: Callable[[], ClientApp]) -> None:
        """Nothing to build: the workers loaded the ClientApp by reference when they started."""

    @property
    def num_workers(self) -> int:
        return self.pool.size

    def is_worker_idle(self) -> bool:
        return self.pool.has_idle()

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        return self.pool.run(message, context)

    def terminate(self) -> None:
        """The pool outlives Flower's engine; its owner closes it."""


RAY_BACKEND_MODULE = "flwr.server.superlink.fleet.vce.backend.raybackend"


@contextlib.contextmanager
def flower_backend(pool: WorkerPool) -> Iterator[None]:
    """While inside, Flower's simulation engine runs its ClientApps in ``pool`` instead of Ray.

    Flower 1.41's engine takes its backend class from one place, ``RayBackend`` in
    :data:`RAY_BACKEND_MODULE`, imported when the engine starts; for the duration this puts a
    module holding the pool's backend under that name (without importing the real one, which
    imports Ray: a second of start-up and Ray's exit hooks), and then puts back what was
    there."""
    stub = types.ModuleType(RAY_BACKEND_MODULE, "fedkd.workers: the pool's backend for Flower")
    stub.RayBackend = type("PooledBackend", (ProcessBackend,), {"pool": pool})  # type: ignore[attr-defined]
    saved = sys.modules.get(RAY_BACKEND_MODULE)
    sys.modules[RAY_BACKEND_MODULE] = stub
    try:
        yield
    finally:
        if saved is None:
            sys.modules.pop(RAY_BACKEND_MODULE, None)
        else:
            sys.modules[RAY_BACKEND_MODULE] = saved


# ------------------------------------------------------------------ the zygote and its workers
def _serve(conn: Connection, app: ClientApp) -> None:
    """A worker: answer ``(Message, Context)`` pairs until the launcher closes the socket."""
    while True:
        try:
            message, context = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = app(message=message, context=context)
            conn.send(("ok", reply, context))
        except Exception as err:  # as Flower's Ray actor reports it: the round goes on
            conn.send(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))


def zygote(address: str, app_dir: str, app_ref: str, authkey: bytes) -> None:
    """Import the ClientApp, then fork a worker for each ``("fork", index)`` request."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher stops the run, not Ctrl-C
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    _die_with_parent()
    from flwr.supercore.object_ref import load_app

    app = load_app(app_ref, ValueError, app_dir)
    if not isinstance(app, ClientApp):
        raise TypeError(f"{app_ref} is a {type(app).__name__}, not a ClientApp")
    try:
        control = Client(address, authkey=authkey)
    except OSError:  # the pool was closed while this process started: nobody to serve
        return
    control.send(("zygote", os.getpid()))
    while True:
        try:
            command, _index = control.recv()
        except (EOFError, OSError):
            return
        if command != "fork":
            return
        if os.fork() == 0:  # the worker
            gc.freeze()  # the zygote's objects stay shared pages
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # its own children, if any, it waits for
            _die_with_parent()
            try:
                conn = Client(address, authkey=authkey)
                conn.send(("worker", os.getpid()))
                _serve(conn, app)
            finally:
                os._exit(0)


def _forked_zygote(
    address: str, app_dir: Path, app_ref: str, authkey: bytes, env: Mapping[str, str]
) -> None:
    """:func:`zygote` in a fork of the launcher, set up as the fresh interpreter would be."""
    gc.freeze()  # collections here must not touch (and so copy) the pages shared with the parent
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # close() ends it, whatever the parent had
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    logging.root.handlers.clear()  # the parent's run log is the parent's to write
    os.environ.update(env)
    zygote(address, str(app_dir), app_ref, authkey)


def main(argv: Sequence[str] | None = None) -> None:
    address, app_dir, app_ref = (argv if argv is not None else sys.argv[1:])[:3]
    authkey = bytes.fromhex(os.environ.pop(AUTHKEY_ENV))
    zygote(address, app_dir, app_ref, authkey)


if __name__ == "__main__":
    main()


__all__ = ["ProcessBackend", "WorkerDied", "WorkerPool", "flower_backend"]
