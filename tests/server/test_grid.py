"""fedkd.grid.PollingGrid over a fake Grid: replies as they come, timeouts, a stop."""

import threading

import pytest
from flwr.app import Message, RecordDict

from fedkd.checkpoint import RunStopped
from fedkd.grid import PollingGrid


class SlowGrid:
    """Answers message i at the i-th pull after the push (ids are message indices)."""

    def __init__(self) -> None:
        self.pulls = 0
        self.messages: list[Message] = []

    def push_messages(self, messages):
        self.messages = list(messages)
        return [str(i) for i in range(len(self.messages))]

    def pull_messages(self, ids):
        self.pulls += 1
        due = [i for i in ids if int(i) < self.pulls]
        replies = []
        for i in due:
            reply = Message(RecordDict(), reply_to=self.messages[int(i)])
            reply.metadata.__dict__["_reply_to_message_id"] = i
            replies.append(reply)
        return replies

    def get_node_ids(self):
        return [1, 2, 3]


def _messages(n: int) -> list[Message]:
    return [Message(RecordDict(), dst_node_id=i + 1, message_type="train.x") for i in range(n)]


def test_pulls_until_every_reply_is_in():
    fake = SlowGrid()
    replies = PollingGrid(fake, interval=0.001).send_and_receive(_messages(3), timeout=10)
    assert len(replies) == 3 and fake.pulls == 3


def test_returns_what_came_before_the_timeout():
    fake = SlowGrid()
    replies = PollingGrid(fake, interval=0.05).send_and_receive(_messages(1000), timeout=0.2)
    assert 0 < len(replies) < 1000


def test_a_stop_ends_the_wait():
    stop = threading.Event()
    stop.set()
    with pytest.raises(RunStopped):
        PollingGrid(SlowGrid(), interval=0.001, stop=stop).send_and_receive(_messages(2))


def test_everything_else_is_the_grids_own_and_the_interval_is_checked():
    assert PollingGrid(SlowGrid()).get_node_ids() == [1, 2, 3]
    with pytest.raises(ValueError, match="interval"):
        PollingGrid(SlowGrid(), interval=0)
