"""An in-process stand-in for Flower's Grid: routes messages to a real ClientApp.

It lets strategy tests drive whole rounds in milliseconds with real Messages; the end-to-end
tests use Flower's real simulation engine and deployment instead.
"""

import traceback
import uuid
from collections.abc import Callable, Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from fedkd import protocol

Tamper = Callable[[Message, Message], Message | None]  # (instruction, reply) -> reply or None


class InProcessGrid:
    def __init__(self, app: ClientApp, run_config: dict, num_nodes: int) -> None:
        self.app = app
        self.contexts = {
            1000 + i: Context(
                run_id=1,
                node_id=1000 + i,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=run_config,
            )
            for i in range(num_nodes)
        }
        self.tamper: dict[int, Tamper] = {}
        self.sent: list[Message] = []

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as Flower's grids do
            self.sent.append(msg)
            node_id = msg.metadata.dst_node_id
            try:
                reply = self.app(msg, self.contexts[node_id])
            except Exception:  # Flower's runtime turns a handler's exception into an error reply
                reply = Message(Error(code=2, reason=traceback.format_exc()), reply_to=msg)
            if msg.metadata.message_type == protocol.KD_ROUND and node_id in self.tamper:
                reply = self.tamper[node_id](msg, reply)
            if reply is not None:
                replies.append(reply)
        return replies
