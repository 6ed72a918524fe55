"""The fedkd ClientApp: decodes the server's message, runs the algorithm's client, replies.

The student persists between rounds, never in module globals: on the node's own disk
(:class:`fedkd.checkpoint.StudentStore`) where there is one -- the node config's ``state-dir``
in deployment, the run folder's ``checkpoint/students`` in simulation -- so a restarted node or
a resumed run continues from it; otherwise in ``context.state`` (Flower keeps it per node, in
memory: a restarted node starts afresh, and the server notices).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from clients import fedavg
from clients.base import KDClient, RoundTask
from fedkd import abstain, protocol
from fedkd.attacks import attackers, lie
from fedkd.checkpoint import CHECKPOINT_DIR, SIMULATION_STUDENTS, StudentState, StudentStore
from fedkd.codecs import PROBS, Codec
from fedkd.config import ExperimentConfig, from_run_config
from fedkd.data import ArrayDataset, DatasetSplits
from fedkd.data.node import load_node_private
from fedkd.experiment import (
    build_client_model,
    client_architecture,
    client_private_data,
    load_data,
    planned_rounds,
)
from fedkd.models import count_parameters
from fedkd.sampling import parse_seed, public_subset
from fedkd.schema import import_object
from fedkd.training import derive_seed, local_epochs

if TYPE_CHECKING:
    from fedkd.privacy import PrivateTrainer

STUDENT_STATE = "student"  # context.state key of the student's state (no state-dir)
# Node config keys (flower-supernode --node-config "..."); simulation sets the partition ones.
NODE_DATA_DIR = "data-dir"
NODE_STATE_DIR = "state-dir"  # where the node keeps its students' states across restarts
NODE_CLIENT_ID = "client-id"
NODE_PARTITION_ID = "partition-id"
NODE_NUM_PARTITIONS = "num-partitions"

app = ClientApp()


def _node_int(context: Context, key: str) -> int | None:
    value = context.node_config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not str(value).isdigit():
        raise ValueError(f"node config '{key}' must be a non-negative integer, got {value!r}")
    return int(value)


def _private_data(
    context: Context, cfg: ExperimentConfig, splits: DatasetSplits
) -> tuple[int, ArrayDataset]:
    """(client id, private data) of this node, from its node config.

    * ``data-dir=<path>``: the node's own files (see ``fedkd.data.node``); the client id is
      ``client-id`` if given, else ``partition-id``, else derived from the node id.
    * ``partition-id=<i> num-partitions=<n>``: a demo share of the configured dataset (what
      Flower's simulation sets).
    """
    client_id = _node_int(context, NODE_CLIENT_ID)
    partition_id = _node_int(context, NODE_PARTITION_ID)
    data_dir = context.node_config.get(NODE_DATA_DIR)
    if data_dir:
        if client_id is None:
            client_id = partition_id if partition_id is not None else context.node_id % 2**31
        return client_id, load_node_private(str(data_dir), splits)
    if partition_id is None:
        raise ValueError(
            "this SuperNode has neither 'data-dir' nor 'partition-id' in its node config: "
            'start it with --node-config "data-dir=/path/to/data" or '
            '--node-config "partition-id=<i> num-partitions=<n>"'
        )
    num_partitions = _node_int(context, NODE_NUM_PARTITIONS) or cfg.clients.num_clients
    private = client_private_data(cfg, partition_id, num_partitions)
    return (partition_id if client_id is None else client_id), private


@dataclass(frozen=True)
class Node:
    """Everything a handler needs on this node; the model is a fresh student."""

    cfg: ExperimentConfig
    client_id: int
    model: nn.Module
    private: ArrayDataset
    test: ArrayDataset
    splits: DatasetSplits


def _load_node(context: Context) -> Node:
    cfg = from_run_config(context.run_config)
    torch.set_num_threads(cfg.clients.num_threads)
    splits = load_data(cfg, private=not context.node_config.get(NODE_DATA_DIR))
    client_id, private = _private_data(context, cfg, splits)
    model = build_client_model(cfg, client_id, splits)
    num_eval = min(cfg.clients.num_eval_samples, len(splits.test))
    test = splits.test.subset(torch.arange(num_eval).numpy())
    return Node(cfg, client_id, model, private, test, splits)


def _server_round(msg: Message) -> int:
    server_round = msg.content.config_records[protocol.ROUND_CONFIG][protocol.SERVER_ROUND]
    if not isinstance(server_round, int) or server_round < 1:
        raise TypeError(f"'{protocol.SERVER_ROUND}' must be an int >= 1, got {server_round!r}")
    return server_round


def _round_task(msg: Message, server_round: int, splits: DatasetSplits, codec: Codec) -> RoundTask:
    """What the server asks this round: the public subset (drawn from its seed) and the
    teacher to digest (decoded). A malformed message raises, and the server records why."""
    config = msg.content.config_records[protocol.ROUND_CONFIG]
    seed, count = config[protocol.PUBLIC_SEED], config[protocol.PUBLIC_COUNT]
    if not isinstance(count, int):
        raise TypeError(f"'{protocol.PUBLIC_COUNT}' must be an int, got {count!r}")
    num_public = len(splits.public)
    public = public_subset(num_public, count, parse_seed(seed, protocol.PUBLIC_SEED))
    view_seed = consensus_view_seed = None
    if protocol.VIEW_SEED in config:
        view_seed = parse_seed(config[protocol.VIEW_SEED], protocol.VIEW_SEED)
    arrays = msg.content.array_records[protocol.ROUND_ARRAYS]
    if protocol.CONSENSUS_INDICES not in arrays:
        return RoundTask(server_round, public, view_seed=view_seed)
    if protocol.CONSENSUS_VIEW_SEED in config:
        consensus_view_seed = parse_seed(
            config[protocol.CONSENSUS_VIEW_SEED], protocol.CONSENSUS_VIEW_SEED
        )
    indices = arrays[protocol.CONSENSUS_INDICES].numpy().astype(np.int64)
    if indices.ndim != 1 or ((indices < 0) | (indices >= num_public)).any():
        raise ValueError(f"'{protocol.CONSENSUS_INDICES}' are not public sample indices")
    parts = {
        part: arrays[protocol.part_key(protocol.CONSENSUS_PROBS, part)].numpy()
        for part in codec.layout(len(indices), splits.num_classes, PROBS)
    }
    probs = codec.decode(parts, len(indices), splits.num_classes, PROBS)
    return RoundTask(server_round, public, indices, probs, view_seed, consensus_view_seed)


def _abstentions(node: Node, public: np.ndarray, server_round: int) -> np.ndarray:
    """The packed mask of the round's public samples ``public`` (n, C, H, W: its views, with
    ``views.*`` on) this client abstains on: the ``clients.abstain`` share farthest from its
    private data."""
    seed = derive_seed(node.cfg.seed, server_round, node.client_id, 5)
    scores = abstain.distance_scores(node.private.x, public, seed)
    return abstain.pack(abstain.abstain_mask(scores, node.cfg.clients.abstain))


def _store(msg: Message, context: Context, cfg: ExperimentConfig) -> StudentStore | None:
    """The node's disk store for this run's students, or None (``context.state`` then)."""
    token = msg.content.config_records[protocol.ROUND_CONFIG].get(protocol.RUN_TOKEN)
    if not isinstance(token, str) or not token.isalnum():
        raise TypeError(f"'{protocol.RUN_TOKEN}' must be an alphanumeric id, got {token!r}")
    root = context.node_config.get(NODE_STATE_DIR)
    if root:
        return StudentStore(str(root), token)
    if cfg.mode == "simulation" and cfg.output_dir:  # one machine: the run folder
        return StudentStore(Path(cfg.output_dir) / CHECKPOINT_DIR / SIMULATION_STUDENTS, token)
    return None


def _load_student(
    context: Context, store: StudentStore | None, client_id: int, server_round: int
) -> StudentState | None:
    """The student's state before ``server_round`` (None: it never trained)."""
    if store is not None:
        return store.load(client_id, before_round=server_round)
    record = context.state.config_records.get(STUDENT_STATE)
    if record is None:
        return None
    blob = record[STUDENT_STATE]
    assert isinstance(blob, bytes)
    return StudentState.from_bytes(blob)


def _save_student(
    context: Context, store: StudentStore | None, client_id: int, state: StudentState
) -> None:
    if store is not None:
        store.save(client_id, state)
    else:
        context.state[STUDENT_STATE] = ConfigRecord({STUDENT_STATE: state.to_bytes()})


def _privacy(node: Node, previous: StudentState | None) -> "PrivateTrainer | None":
    """This client's DP-SGD trainer (``dp.*`` on), its accountant's history restored. A target
    ε is turned into noise for the rounds this client is planned to train in."""
    dp = node.cfg.dp
    if not dp.enabled:
        return None
    from fedkd.privacy import PrivateTrainer, calibrate, plan_pass  # Opacus: DP runs only

    noise = dp.noise_multiplier
    if noise is None:
        assert dp.epsilon is not None
        clients = node.cfg.clients
        private = len(node.private)
        # under the joint schedule every round after the first mixes in one teacher sample per
        # private example, or clients.min_teacher_samples (fewer when the round's consensus is
        # smaller): a larger set sampled at a lower rate, which the accountant will charge
        teacher = 0
        if clients.kd_schedule == "joint":
            wanted = max(private, clients.min_teacher_samples)
            teacher = min(wanted, node.cfg.public_per_round or len(node.splits.public))
        # a client id outside the simulated range (a node's own `client-id`) plans for every round
        rounds = planned_rounds(node.cfg, node.client_id) or range(1, node.cfg.num_rounds + 1)
        batch, epochs, steps = clients.batch_size, clients.revisit_epochs, clients.min_local_steps
        plan = []
        for r in rounds:
            examples = private + (teacher if r > 1 else 0)
            plan.append(plan_pass(examples, batch, local_epochs(examples, batch, epochs, steps)))
        noise = calibrate(dp.epsilon, dp.delta, plan, dp.accountant)
    return PrivateTrainer(
        noise_multiplier=noise,
        max_grad_norm=dp.max_grad_norm,
        delta=dp.delta,
        budget=dp.epsilon,
        accountant=dp.accountant,
        history=list(previous.dp_history) if previous else [],
    )


def _attacking(node: Node) -> bool:
    """Whether this client is one of the configured adversaries (tests, benchmarks)."""
    attack = node.cfg.attack
    return attack is not None and node.client_id in attackers(
        node.cfg.clients.num_clients, attack.fraction, attack.clients, node.cfg.seed
    )


def _counts(node: Node) -> dict[str, Any]:
    """The example count, and per-class counts when the combine rule weighs clients per class:
    the true ones, or, for an adversary with ``attack.count_factor``, inflated ones."""
    factor = node.cfg.attack.count_factor if node.cfg.attack and _attacking(node) else 1.0
    counts = [
        round(factor * int(c))
        for c in np.bincount(node.private.y, minlength=node.splits.num_classes)
    ]
    out: dict[str, Any] = {protocol.NUM_EXAMPLES: sum(counts)}
    if node.cfg.algorithm.needs_class_counts:
        out[protocol.CLASS_COUNTS] = counts
    return out


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    """Tell the server who this client is: id, architecture, number of private examples."""
    node = _load_node(context)
    content = RecordDict(
        {
            protocol.REPLY_METRICS: MetricRecord(
                {
                    protocol.CLIENT_ID: node.client_id,
                    protocol.NUM_PARAMETERS: count_parameters(node.model),
                    **_counts(node),
                }
            ),
            protocol.DESCRIBE_CONFIG: ConfigRecord(
                {protocol.ARCHITECTURE: client_architecture(node.cfg, node.client_id).kind}
            ),
        }
    )
    return Message(content, reply_to=msg)


@app.train("kd_round")
def kd_round(msg: Message, context: Context) -> Message:
    """One round: digest the consensus, revisit private data, predict on the public subset."""
    node = _load_node(context)
    client_cls = import_object(node.cfg.algorithm.client or "", "algorithm")  # its client part
    if not (isinstance(client_cls, type) and issubclass(client_cls, KDClient)):
        raise TypeError(f"{node.cfg.algorithm.kind}'s client part is not a KDClient")
    server_round = _server_round(msg)
    store = _store(msg, context, node.cfg)
    previous = _load_student(context, store, node.client_id, server_round)
    if previous is not None:
        node.model.load_state_dict(previous.weights)
    privacy = _privacy(node, previous)
    client = client_cls(
        node.cfg,
        node.client_id,
        node.model,
        node.private,
        node.splits.public.x,
        node.test,
        privacy,
    )
    codec = client.algorithm.soft_label_codec
    task = _round_task(msg, server_round, node.splits, codec)
    if client.views.active != (task.view_seed is not None):  # else labels on other inputs
        state = "on" if client.views.active else "off"
        raise ValueError(
            f"views.* is {state} in this run's config, but the server's message "
            f"{'lacks' if client.views.active else 'has'} '{protocol.VIEW_SEED}'"
        )
    soft, metrics = client.run_round(task)
    memory = previous.memory if previous else {}
    attack = node.cfg.attack
    if attack is not None and _attacking(node):  # it learned honestly, now it lies
        rng = np.random.default_rng(derive_seed(node.cfg.seed, server_round, node.client_id, 3))
        soft, memory = lie(
            attack.behaviour.instantiate(),
            soft,
            client.soft_label_kind,
            task.public_indices,
            task.consensus_indices,
            task.consensus_probs,
            rng,
            memory,
        )
    _save_student(
        context,
        store,
        node.client_id,
        StudentState(
            round=server_round,
            weights=client.model.state_dict(),
            dp_history=privacy.history if privacy else [],
            memory=memory,
        ),
    )
    metrics[protocol.STUDENT_ROUND] = float(previous.round if previous else 0)
    arrays = {
        protocol.part_key(protocol.SOFT_LABELS, part): Array(values)
        for part, values in codec.encode(soft, client.soft_label_kind).items()
    }
    if node.cfg.clients.abstain > 0:
        public = client.public_inputs(task.public_indices, task.view_seed).numpy()
        arrays[protocol.ABSTAIN] = Array(_abstentions(node, public, server_round))
    content = RecordDict(
        {
            protocol.REPLY_ARRAYS: ArrayRecord(arrays),
            protocol.REPLY_METRICS: MetricRecord(
                {protocol.NUM_EXAMPLES: _counts(node)[protocol.NUM_EXAMPLES], **metrics}
            ),
        }
    )
    return Message(content, reply_to=msg)


@app.train()
def fedavg_train(msg: Message, context: Context) -> Message:
    """The FedAvg baseline's round: start from the global weights, train, send weights back."""
    node = _load_node(context)
    node.model.load_state_dict(
        msg.content.array_records[protocol.ROUND_ARRAYS].to_torch_state_dict()
    )
    metrics = fedavg.local_update(
        node.cfg, node.client_id, node.model, node.private, node.test, _server_round(msg)
    )
    content = RecordDict(
        {
            protocol.REPLY_ARRAYS: ArrayRecord(node.model.state_dict()),
            protocol.REPLY_METRICS: MetricRecord(
                {protocol.NUM_EXAMPLES: len(node.private), **metrics}
            ),
        }
    )
    return Message(content, reply_to=msg)
