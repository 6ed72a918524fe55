"""One app bundle's ClientApp process for ``fedkd-node`` (:mod:`fedkd.node`), kept between messages.

Run by path (``python node_worker.py ...``), never imported as ``fedkd.node_worker``: the app bundle
ships its own copy of ``fedkd``, ``clients`` and ``server``, and this process must import them
from the bundle, as Flower's ``flwr-clientapp`` does. So nothing here imports fedkd.

It reads a task token per line from file descriptor ``--tasks``, runs that task as Flower's
``flwr-clientapp`` runs one (pull the message and context from the SuperNode's runtime API, call
the ClientApp, push the reply, the context and the task's status), and writes one line per task
to file descriptor ``--results``: ``ok`` or ``failed <reason>``. The ClientApp is loaded once, so
what it caches (imported modules, loaded data) stays for the next message.
"""

import argparse
import contextlib
import os
import sys
import traceback
from logging import ERROR
from pathlib import Path

if __name__ == "__main__":  # run by path: this file's folder is not a package root
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p != here]

from flwr.app import Context, Message
from flwr.app.error import Error
from flwr.cli.install import install_from_fab
from flwr.clientapp import ClientApp
from flwr.clientapp.client_app import LoadClientAppError
from flwr.clientapp.utils import get_load_client_app_fn
from flwr.common.constant import ErrorCode, SubStatus
from flwr.supercore import log
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output


class Worker:
    """Runs tasks of one app bundle against the runtime API at ``address``."""

    def __init__(self, address: str, root_certificates: bytes | None) -> None:
        self.address = address
        self.root_certificates = root_certificates
        self.app: ClientApp | None = None
        self.fab_hash: str | None = None

    def _client(self, token: str) -> RuntimeHttpClient:
        return RuntimeHttpClient.from_server_address(
            server_address=self.address,
            insecure=self.root_certificates is None,
            root_certificates=self.root_certificates,
            interceptors=[
                RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                RuntimeTokenHttpInterceptor(token),
            ],
            retry_invoker=make_simple_http_retry_invoker(),
        )

    def _load(self, fab_id: str, fab_version: str, fab_hash: str, fab_content: bytes) -> ClientApp:
        if self.app is None:
            install_from_fab(fab_content, skip_prompt=True)
            load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
            self.app, self.fab_hash = load(fab_id, fab_version, fab_hash), fab_hash
        elif fab_hash != self.fab_hash:  # fedkd-node starts one worker per bundle
            raise LoadClientAppError(f"this worker runs app bundle {self.fab_hash}, not {fab_hash}")
        return self.app

    def run(self, token: str) -> str:
        """Run the task ``token`` names; ``ok`` or ``failed <reason>``."""
        client = self._client(token)
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        message: Message | None = None
        context: Context | None = None
        reply: Message | None = None
        status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
        try:
            message, context, run, fab = pull_task_input(client)
            app = self._load(run.fab_id, run.fab_version, fab.hash_str, fab.content)
            reply = app(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except Exception as err:  # as flwr-clientapp: an error reply, the node goes on
            code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            details = f"{type(err)}:<'{err}'>"
            if isinstance(err, LoadClientAppError):
                code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
                details = "An exception was raised when attempting to load `ClientApp`"
            log(ERROR, "ClientApp raised an exception", exc_info=err)
            if message is not None:
                reply = Message(Error(code=code, reason=details), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
                push_task_output(client, context, status, details)
            except Exception:
                status, details = SubStatus.FAILED, traceback.format_exc()
            heartbeat.stop()
            client.close()
        return "ok" if status == SubStatus.COMPLETED else f"failed {details}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--root-certificates", default=None)
    parser.add_argument("--tasks", type=int, required=True, help="fd to read tokens from")
    parser.add_argument("--results", type=int, required=True, help="fd to write results to")
    parser.add_argument("--preload", default="", help="comma-separated modules to import now")
    args = parser.parse_args()
    for module in filter(None, args.preload.split(",")):
        with contextlib.suppress(ImportError):  # only a head start: the app imports the rest
            __import__(module)
    certificates = Path(args.root_certificates).read_bytes() if args.root_certificates else None
    worker = Worker(args.runtime_api_address, certificates)
    with os.fdopen(args.tasks, "r") as tasks, os.fdopen(args.results, "w") as results:
        for line in tasks:
            outcome = worker.run(line.strip())
            results.write(outcome.replace("\n", " ") + "\n")
            results.flush()


if __name__ == "__main__":
    main()
