"""The strategy tests' Grid: :class:`fedkd.grid.LoopGrid`, which also keeps every message it
sent and lets a test tamper with a node's replies to round work.

It drives whole rounds in milliseconds with real Messages; the end-to-end tests use Flower's
real simulation engine and deployment instead.
"""

from collections.abc import Callable

from flwr.app import Message, MessageType
from flwr.clientapp import ClientApp

from fedkd import protocol
from fedkd.grid import LoopGrid

Tamper = Callable[[Message, Message], Message | None]  # (instruction, reply) -> reply or None


class InProcessGrid(LoopGrid):
    def __init__(self, app: ClientApp, run_config: dict, num_nodes: int) -> None:
        super().__init__(app, run_config, num_nodes)
        self.tamper: dict[int, Tamper] = {}
        self.sent: list[Message] = []

    def deliver(self, message: Message) -> Message | None:
        self.sent.append(message)
        reply = super().deliver(message)
        node_id = message.metadata.dst_node_id
        trains = message.metadata.message_type in (protocol.KD_ROUND, MessageType.TRAIN)
        if trains and node_id in self.tamper:  # a round's work: distillation or FedAvg
            assert reply is not None
            return self.tamper[node_id](message, reply)
        return reply
