"""Who is in the federation: nodes, their client ids, and a seeded sample of them per round.

Flower draws node ids at random, so the server asks each new node once (``query.describe``) for
its client id, architecture and example count, and samples by client id: the same seed picks the
same clients in every run, in simulation and in deployment. Shared by every server strategy.
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message, RecordDict
from flwr.common.serde import recorddict_to_proto
from flwr.serverapp import Grid

from fedkd import protocol
from fedkd.config import ExperimentConfig
from fedkd.experiment import sample_client_ids
from fedkd.results import RoundRecord
from fedkd.validation import InvalidReply

log = logging.getLogger("fedkd.server")

NODE_WAIT_POLL_SECONDS = 0.5


class FederationLost(RuntimeError):
    """Every sampled client failed ``max_failed_rounds`` rounds in a row: the run stops."""


@dataclass
class FailureStreak:
    """Rounds in a row in which every sampled client failed: not a bad reply (those are rejected
    and the round goes on) but a runtime that is gone, e.g. Ray's node lost. ``limit`` such rounds
    (``max_failed_rounds``; 0: never) end the run instead of recording empty rounds to the end."""

    limit: int
    length: int = 0

    @staticmethod
    def everyone_failed(record: RoundRecord) -> bool:
        return record.num_sampled > 0 and record.num_failed == record.num_sampled

    def update(self, record: RoundRecord, what_now: str) -> None:
        """Count ``record``'s round; raise :class:`FederationLost` (ending with ``what_now``)
        at the limit."""
        self.length = self.length + 1 if self.everyone_failed(record) else 0
        if self.limit and self.length >= self.limit:
            raise FederationLost(
                f"every sampled client failed in {self.length} rounds in a row (rounds "
                f"{record.round - self.length + 1}-{record.round}; max_failed_rounds="
                f"{self.limit}): their runtime is gone. {what_now}"
            )


@dataclass(frozen=True)
class ClientInfo:
    """What a node told the server about itself (``query.describe``)."""

    node_id: int
    client_id: int
    architecture: str
    num_examples: int
    class_counts: tuple[int, ...] | None = None  # only when the combine rule needs them


def addressee(reply: Message, messages: Sequence[Message]) -> int:
    """The node a reply is about. Not always its sender: when a node is gone, the SuperLink
    itself answers with an error ("Node Unavailable") in the node's stead."""
    for message in messages:
        if message.metadata.message_id and (
            message.metadata.message_id == reply.metadata.reply_to_message_id
        ):
            return message.metadata.dst_node_id
    return reply.metadata.src_node_id


def message_bytes(message: Message) -> int:
    """Bytes of a message's content as Flower serialises it (the protobuf ``RecordDict``: every
    array with its header, metrics, configs and their keys): what fedkd puts on the wire, the
    same in simulation and deployment. Flower adds its routing metadata (node and message ids,
    ~100 bytes) and the transport's framing."""
    if not message.has_content():
        return 0
    return int(recorddict_to_proto(message.content).ByteSize())


def error_reason(reply: Message) -> str:
    """The last line of the error a client's handler raised (Flower sends the traceback)."""
    lines = str(reply.error.reason).strip().splitlines() or ["unknown error"]
    return lines[-1][:300]


def parse_describe(reply: Message, node_id: int) -> ClientInfo:
    if reply.has_error():
        raise InvalidReply(error_reason(reply))
    try:
        metrics = reply.content.metric_records[protocol.REPLY_METRICS]
        config = reply.content.config_records[protocol.DESCRIBE_CONFIG]
        client_id, num_examples = metrics[protocol.CLIENT_ID], metrics[protocol.NUM_EXAMPLES]
        architecture = config[protocol.ARCHITECTURE]
    except KeyError as err:
        raise InvalidReply(f"describe reply lacks {err}") from err
    if not (isinstance(client_id, int) and isinstance(num_examples, int) and num_examples > 0):
        raise InvalidReply(f"bad client id {client_id!r} or example count {num_examples!r}")
    counts = metrics.get(protocol.CLASS_COUNTS)
    if counts is not None and not (
        isinstance(counts, list) and all(isinstance(c, int) and c >= 0 for c in counts)
    ):
        raise InvalidReply(f"bad class counts {counts!r}")
    if counts is not None and sum(counts) != num_examples:  # type: ignore[arg-type]
        raise InvalidReply(f"class counts sum to {sum(counts)}, not the {num_examples} examples")
    class_counts = None if counts is None else tuple(int(c) for c in counts)
    return ClientInfo(node_id, client_id, str(architecture), num_examples, class_counts)


@dataclass
class Roster:
    cfg: ExperimentConfig
    num_classes: int
    clients: dict[int, ClientInfo] = field(default_factory=dict)  # node id -> info
    unusable: dict[int, str] = field(default_factory=dict)  # node id -> why it cannot take part
    # quarantine (``quarantine.*``), by client id: strikes in a row, and the last round a
    # quarantined client sits out (None: the rest of the run)
    strikes: dict[int, int] = field(default_factory=dict)
    quarantine: dict[int, int | None] = field(default_factory=dict)

    def wait_for_nodes(self, grid: Grid) -> None:
        """Wait until ``clients.num_clients`` nodes are connected, or at most
        ``node_wait_timeout`` seconds as long as ``clients.min_clients`` are; then meet them.

        First contact starts each node's ClientApp (imports, loading its data), which on a busy
        machine can take longer than ``round_timeout``: the nodes get until the same deadline to
        describe themselves, so a slow start is not mistaken for a node that cannot take part.
        """
        want, need = self.cfg.clients.num_clients, self.cfg.clients.min_clients
        deadline = time.monotonic() + self.cfg.node_wait_timeout
        while (num := len(list(grid.get_node_ids()))) < want:
            if time.monotonic() > deadline:
                if num >= need:
                    log.warning("only %d of %d nodes connected; starting with them", num, want)
                    break
                raise RuntimeError(
                    f"only {num} nodes connected after {self.cfg.node_wait_timeout:.0f}s; "
                    f"clients.min_clients={need}"
                )
            time.sleep(NODE_WAIT_POLL_SECONDS)
        while True:
            remaining = max(deadline - time.monotonic(), self.cfg.round_timeout)
            online = self.update(grid, timeout=remaining)
            if not online - set(self.clients) - set(self.unusable) or time.monotonic() > deadline:
                return

    def update(self, grid: Grid, timeout: float | None = None) -> set[int]:
        """Ask nodes the server has not met yet who they are (one exchange, only when needed;
        ``timeout`` defaults to ``round_timeout``). A node that does not answer is asked again
        next time. Returns the ids of the nodes online now.
        """
        online = set(grid.get_node_ids())
        new = sorted(online - set(self.clients) - set(self.unusable))
        if not new:
            return online
        messages = [
            Message(RecordDict(), dst_node_id=node_id, message_type=protocol.DESCRIBE)
            for node_id in new
        ]
        wait = self.cfg.round_timeout if timeout is None else timeout
        for reply in grid.send_and_receive(messages, timeout=wait):
            node_id = addressee(reply, messages)
            try:
                info = parse_describe(reply, node_id)
                wanted = self.cfg.algorithm.needs_class_counts
                if wanted and len(info.class_counts or ()) != self.num_classes:
                    raise InvalidReply(f"class weighting needs {self.num_classes} class counts")
            except InvalidReply as err:
                # e.g. its data is missing: the run goes on without it (not asked again)
                self.unusable[node_id] = str(err)
                log.warning("node %d cannot take part: %s", node_id, err)
                continue
            # A SuperNode restarted without node authentication comes back under a new node id:
            # forget the old one. (With authentication it keeps its id and is not asked again.)
            for old in [n for n, c in self.clients.items() if c.client_id == info.client_id]:
                del self.clients[old]
            self.clients[node_id] = info
            log.info(
                "client %d on node %d: %s, %d private examples",
                info.client_id,
                node_id,
                info.architecture,
                info.num_examples,
            )
        return online

    def sample(self, server_round: int, online: set[int]) -> list[ClientInfo]:
        """A seeded sample of the online, described clients, ordered by client id."""
        known = sorted(
            (c for n, c in self.clients.items() if n in online), key=lambda c: c.client_id
        )
        if not known:
            raise RuntimeError("no client could describe itself: check the SuperNodes' logs")
        allowed = [c for c in known if c.client_id not in self.quarantined(server_round)]
        if not allowed:
            log.warning(
                "round %d: every online client is quarantined; asking them anyway", server_round
            )
        known = allowed or known
        by_id = {c.client_id: c for c in known}
        return [by_id[i] for i in sample_client_ids(self.cfg, server_round, list(by_id))]

    def quarantined(self, server_round: int) -> list[int]:
        """Client ids sitting out ``server_round``."""
        return sorted(
            cid for cid, last in self.quarantine.items() if last is None or last >= server_round
        )

    def judge(self, server_round: int, answered: Sequence[int], struck: set[int]) -> list[int]:
        """Count strikes (a rejected or out-weighed reply) of the clients that ``answered``: a
        clean round clears a client's strikes, ``quarantine.after`` strikes in a row send it
        out for ``quarantine.rounds`` rounds. Returns the clients quarantined now."""
        rule = self.cfg.quarantine
        sent_out = []
        for cid in answered:
            self.strikes[cid] = self.strikes.get(cid, 0) + 1 if cid in struck else 0
            if rule.after and self.strikes[cid] >= rule.after:
                self.quarantine[cid] = None if rule.rounds is None else server_round + rule.rounds
                self.strikes[cid] = 0
                sent_out.append(cid)
                log.warning(
                    "client %d quarantined after %d struck rounds in a row (until %s)",
                    cid,
                    rule.after,
                    "the end" if rule.rounds is None else f"round {server_round + rule.rounds}",
                )
        return sent_out

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps (node ids are not: nodes describe themselves again)."""
        return {"strikes": dict(self.strikes), "quarantine": dict(self.quarantine)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.strikes = dict(state["strikes"])
        self.quarantine = dict(state["quarantine"])

    def offline(self, online: set[int]) -> list[int]:
        """Client ids the server has met whose node is not connected now (left or died)."""
        return sorted(c.client_id for n, c in self.clients.items() if n not in online)

    def summary(self) -> dict[str, Any]:
        """Roster facts for ``summary.json``."""
        return {
            "clients": [vars(c) for c in sorted(self.clients.values(), key=lambda c: c.client_id)],
            "unusable_nodes": {str(n): why for n, why in self.unusable.items()},
        }
