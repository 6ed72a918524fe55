"""The fedkd ClientApp: decodes the server's message, runs the algorithm's client, replies.

The student persists between rounds in ``context.state`` (Flower keeps it per node, in
simulation and deployment alike), never in module globals.
"""

import logging

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.base import KDClient, RoundTask
from clients.dsfl import DSFLClient
from clients.fedmd import FedMDClient
from fedkd import protocol
from fedkd.config import ExperimentConfig, from_run_config
from fedkd.experiment import build_client_model, client_private_data, load_data
from fedkd.models import count_parameters

CLIENTS: dict[str, type[KDClient]] = {"fedmd": FedMDClient, "dsfl": DSFLClient}
MODEL_STATE = "student"  # context.state key of the student's weights (stays on the node)

log = logging.getLogger("fedkd.client")
app = ClientApp()


def _identity(context: Context, cfg: ExperimentConfig) -> tuple[int, int]:
    """(client id, number of partitions) from the node config; simulation sets both."""
    node_config = context.node_config
    if "partition-id" not in node_config:
        raise ValueError(
            "this SuperNode has no 'partition-id' in its node config: start it with "
            '--node-config "partition-id=<i> num-partitions=<n>"'
        )
    num_partitions = int(node_config.get("num-partitions", cfg.clients.num_clients))
    return int(node_config["partition-id"]), num_partitions


def _make_client(context: Context) -> KDClient:
    cfg = from_run_config(context.run_config)
    torch.set_num_threads(cfg.clients.num_threads)
    client_id, num_partitions = _identity(context, cfg)
    splits = load_data(cfg.dataset, cfg.seed)
    model = build_client_model(cfg, client_id, splits)
    if MODEL_STATE in context.state.array_records:
        model.load_state_dict(context.state.array_records[MODEL_STATE].to_torch_state_dict())
    test = splits.test.subset(
        torch.arange(min(cfg.clients.num_eval_samples, len(splits.test))).numpy()
    )
    return CLIENTS[cfg.algorithm.name](
        cfg,
        client_id,
        model,
        client_private_data(cfg, client_id, num_partitions),
        splits.public.x,
        test,
    )


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    """Tell the server who this client is: id, architecture, number of private examples."""
    client = _make_client(context)
    content = RecordDict(
        {
            protocol.REPLY_METRICS: MetricRecord(
                {
                    protocol.CLIENT_ID: client.client_id,
                    protocol.NUM_EXAMPLES: len(client.private),
                    protocol.NUM_PARAMETERS: count_parameters(client.model),
                }
            ),
            protocol.DESCRIBE_CONFIG: ConfigRecord(
                {protocol.ARCHITECTURE: client.cfg.clients.architecture_of(client.client_id)}
            ),
        }
    )
    return Message(content, reply_to=msg)


@app.train("kd_round")
def kd_round(msg: Message, context: Context) -> Message:
    """One round: digest the consensus, revisit private data, predict on the public subset."""
    client = _make_client(context)
    arrays = msg.content.array_records[protocol.ROUND_ARRAYS]
    has_consensus = protocol.CONSENSUS_PROBS in arrays
    server_round = msg.content.config_records[protocol.ROUND_CONFIG][protocol.SERVER_ROUND]
    if not isinstance(server_round, int):
        raise TypeError(f"'{protocol.SERVER_ROUND}' must be an int, got {server_round!r}")
    task = RoundTask(
        server_round=server_round,
        public_indices=arrays[protocol.PUBLIC_INDICES].numpy(),
        consensus_indices=arrays[protocol.CONSENSUS_INDICES].numpy() if has_consensus else None,
        consensus_probs=arrays[protocol.CONSENSUS_PROBS].numpy() if has_consensus else None,
    )
    soft, metrics = client.run_round(task)
    context.state[MODEL_STATE] = ArrayRecord(client.model.state_dict())
    content = RecordDict(
        {
            protocol.REPLY_ARRAYS: ArrayRecord({protocol.SOFT_LABELS: Array(soft)}),
            protocol.REPLY_METRICS: MetricRecord(
                {protocol.NUM_EXAMPLES: len(client.private), **metrics}
            ),
        }
    )
    return Message(content, reply_to=msg)
