"""Two Grids for the ServerApp's side of an exchange.

* :class:`PollingGrid` wraps Flower's Grid: it pushes a round's messages and pulls the replies
  every ``interval`` seconds (Flower's deployment Grid sleeps 3 s between pulls, which a round
  pays in full on top of the clients' time), and it stops waiting once a stop event is set.
* :class:`LoopGrid` is Flower's Grid reduced to a loop in this process: each message goes to a
  ClientApp in turn. It drives whole rounds with real Messages and no Flower runtime, for
  strategy tests and the bare baseline of ``benchmarks/overhead.py``.
"""

import threading
import time
import traceback
import uuid
from collections.abc import Iterable
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid

from fedkd.checkpoint import RunStopped

PULL_INTERVAL = 0.1  # seconds between pulls for replies, as Flower's in-memory Grid
FIRST_NODE_ID = 1000  # LoopGrid's node ids: FIRST_NODE_ID + partition id
ERROR_CLIENT_APP_RAISED = 2  # the code Flower's runtime gives a reply whose handler raised


class PollingGrid:
    """Flower's ``grid`` whose ``send_and_receive`` pulls every ``interval`` seconds and raises
    :class:`RunStopped` once ``stop`` is set; everything else is the Grid's own."""

    def __init__(
        self, grid: Grid, interval: float = PULL_INTERVAL, stop: threading.Event | None = None
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self._grid = grid
        self.interval = interval
        self._stop = stop or threading.Event()

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
                self._stop.wait(self.interval)
        return replies


class LoopGrid:
    """``num_nodes`` nodes in this process, each with its own Context (``partition-id`` and
    ``num-partitions`` in its node config, as Flower's simulation sets), answering through
    ``app`` one message at a time."""

    def __init__(self, app: ClientApp, run_config: dict[str, Any], num_nodes: int) -> None:
        self.app = app
        self.contexts = {
            FIRST_NODE_ID + i: Context(
                run_id=1,
                node_id=FIRST_NODE_ID + i,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=run_config,
            )
            for i in range(num_nodes)
        }

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def deliver(self, message: Message) -> Message | None:
        """The reply of ``message``'s node, or an error reply if its handler raised."""
        try:
            return self.app(message, self.contexts[message.metadata.dst_node_id])
        except Exception:  # as Flower's runtime does
            reason = traceback.format_exc()
            return Message(Error(code=ERROR_CLIENT_APP_RAISED, reason=reason), reply_to=message)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as Flower's grids do
            if (reply := self.deliver(message)) is not None:
                replies.append(reply)
        return replies
