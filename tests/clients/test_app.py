"""The ClientApp called directly with real Flower Messages and a Context."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from clients.app import STUDENT_STATE, app
from fedkd import protocol
from fedkd.checkpoint import StudentState
from fedkd.config import to_json
from fedkd.experiment import client_private_data, load_data
from fedkd.sampling import public_subset, round_public_seed
from tests.conftest import digits_config


def _context(cfg, partition_id=1, num_partitions=4):
    return Context(
        run_id=1,
        node_id=100 + partition_id,
        node_config={"partition-id": partition_id, "num-partitions": num_partitions},
        state=RecordDict(),
        run_config={protocol.RUN_CONFIG_KEY: to_json(cfg)},
    )


def _student(ctx) -> StudentState:
    """The student state the app left in ``context.state`` (no state-dir)."""
    return StudentState.from_bytes(ctx.state.config_records[STUDENT_STATE][STUDENT_STATE])


SOFT_LABELS_KEY = protocol.part_key(protocol.SOFT_LABELS, "values")  # the float16 codec's one part


def _subset(server_round, count):
    """The public subset a round message with ``count`` samples asks for (seed 0)."""
    num_public = len(load_data(digits_config()).public)
    return public_subset(num_public, count, round_public_seed(0, server_round))


def _round_message(server_round, count, consensus=None, token="run1"):
    arrays = {}
    if consensus is not None:
        idx, probs = consensus
        arrays[protocol.CONSENSUS_INDICES] = Array(idx.astype(np.int32))
        arrays[protocol.part_key(protocol.CONSENSUS_PROBS, "values")] = Array(
            probs.astype(np.float16)
        )
    content = RecordDict(
        {
            protocol.ROUND_CONFIG: ConfigRecord(
                {
                    protocol.SERVER_ROUND: server_round,
                    protocol.RUN_TOKEN: token,
                    protocol.PUBLIC_SEED: round_public_seed(0, server_round),
                    protocol.PUBLIC_COUNT: count,
                }
            ),
            protocol.ROUND_ARRAYS: ArrayRecord(arrays),
        }
    )
    return Message(content, dst_node_id=101, message_type=protocol.KD_ROUND)


def test_describe_reports_identity_architecture_and_size():
    cfg = digits_config()
    ctx = _context(cfg, partition_id=1)
    reply = app(Message(RecordDict(), dst_node_id=101, message_type=protocol.DESCRIBE), ctx)
    assert not reply.has_error(), reply.error
    metrics = reply.content.metric_records[protocol.REPLY_METRICS]
    assert metrics[protocol.CLIENT_ID] == 1
    assert metrics[protocol.NUM_EXAMPLES] == len(client_private_data(cfg, 1, 4))
    arch = reply.content.config_records[protocol.DESCRIBE_CONFIG][protocol.ARCHITECTURE]
    assert arch == cfg.clients.architecture_of(1).kind == "mlp"


@pytest.mark.parametrize(("algorithm", "kind"), [("dsfl", "probs"), ("fedmd", "logits")])
def test_kd_round_replies_only_soft_labels_and_metrics(algorithm, kind):
    cfg = digits_config(f"algorithm={algorithm}", "clients.revisit_epochs=3")
    ctx = _context(cfg, partition_id=0)
    splits = load_data(cfg)
    public_idx = _subset(1, 100)

    reply = app(_round_message(1, len(public_idx)), ctx)
    assert not reply.has_error(), reply.error
    # The wire contract: exactly one array (the soft labels) and one metric record.
    assert set(reply.content.keys()) == {protocol.REPLY_ARRAYS, protocol.REPLY_METRICS}
    arrays = reply.content.array_records[protocol.REPLY_ARRAYS]
    assert set(arrays.keys()) == {SOFT_LABELS_KEY}
    soft = arrays[SOFT_LABELS_KEY].numpy()
    assert soft.shape == (len(public_idx), splits.num_classes)
    assert soft.dtype == np.float16
    if kind == "probs":
        np.testing.assert_allclose(soft.astype(np.float64).sum(axis=1), 1.0, atol=1e-2)
    metrics = reply.content.metric_records[protocol.REPLY_METRICS]
    assert metrics[protocol.NUM_EXAMPLES] == len(client_private_data(cfg, 0, 4))
    # the student learnt something on its private data: well above chance (0.1) on the test set
    assert metrics[protocol.TEST_ACCURACY] > 0.5
    # its predictions on the public subset agree with the (hidden) public labels above chance
    assert (soft.argmax(1) == splits.public.y[public_idx]).mean() > 0.5
    # the student stays on the node, in context.state, with the round it was trained in
    assert _student(ctx).round == 1
    assert metrics[protocol.STUDENT_ROUND] == 0  # it started from a fresh student


def test_student_persists_in_context_state_and_digests_consensus():
    cfg = digits_config(
        "clients.kd_schedule=sequential", "clients.revisit_epochs=0", "clients.digest_epochs=20"
    )
    ctx = _context(cfg, partition_id=2)
    public_idx = _subset(2, 100)
    first = app(_round_message(1, 100), ctx)
    before = first.content.array_records[protocol.REPLY_ARRAYS][SOFT_LABELS_KEY].numpy()
    # A consensus that says "class 3" everywhere: after digesting it the student must move there.
    target = np.zeros((100, 10), dtype=np.float32)
    target[:, 3] = 1.0
    reply = app(_round_message(2, 100, consensus=(public_idx, target)), ctx)
    after = reply.content.array_records[protocol.REPLY_ARRAYS][SOFT_LABELS_KEY].numpy()
    assert (after.argmax(1) == 3).mean() > 0.9 > (before.argmax(1) == 3).mean()
    assert reply.content.metric_records[protocol.REPLY_METRICS][protocol.DIGEST_LOSS] >= 0


def test_node_without_partition_id_fails_with_a_clear_error():
    # Called directly the app raises; Flower's runtime turns that into an error reply.
    cfg = digits_config()
    ctx = Context(
        run_id=1,
        node_id=7,
        node_config={},
        state=RecordDict(),
        run_config={protocol.RUN_CONFIG_KEY: to_json(cfg)},
    )
    with pytest.raises(ValueError, match=r"data-dir.*partition-id"):
        app(_round_message(1, 10), ctx)


def test_joint_schedule_learns_teacher_and_private_data_in_one_pass():
    cfg = digits_config(
        "clients.kd_schedule=joint", "clients.revisit_epochs=10", "clients.digest_epochs=1"
    )
    ctx = _context(cfg, partition_id=2)
    public_idx = _subset(2, 100)
    first = app(_round_message(1, 100), ctx)  # no teacher yet: private data only
    first_metrics = first.content.metric_records[protocol.REPLY_METRICS]
    assert first_metrics[protocol.TEST_ACCURACY] > 0.5
    before = first.content.array_records[protocol.REPLY_ARRAYS][SOFT_LABELS_KEY].numpy()
    target = np.zeros((100, 10), dtype=np.float32)
    target[:, 3] = 1.0
    reply = app(_round_message(2, 100, consensus=(public_idx, target)), ctx)
    after = reply.content.array_records[protocol.REPLY_ARRAYS][SOFT_LABELS_KEY].numpy()
    metrics = reply.content.metric_records[protocol.REPLY_METRICS]
    # the teacher's samples moved toward its label (which contradicts most of the private data,
    # so not all the way), and the private labels were still learnt
    assert (after.argmax(1) == 3).mean() > 0.5 > 0.3 > (before.argmax(1) == 3).mean()
    assert metrics[protocol.TEST_ACCURACY] > 0.3
    assert protocol.DIGEST_LOSS not in metrics  # one pass: no separate digest


def test_an_attacking_client_learns_honestly_and_lies_only_in_what_it_sends():
    honest_cfg = digits_config("algorithm=dsfl")
    liar_cfg = digits_config("algorithm=dsfl", "attack=wrong_class", "attack.clients=[2]")
    replies, states = [], []
    runs = ((honest_cfg, 2), (liar_cfg, 2), (honest_cfg, 1), (liar_cfg, 1))
    for cfg, partition in runs:
        ctx = _context(cfg, partition_id=partition)
        replies.append(app(_round_message(1, 100), ctx))
        states.append(_student(ctx).weights)

    def soft(reply):
        return reply.content.array_records[protocol.REPLY_ARRAYS][SOFT_LABELS_KEY].numpy()

    def metrics(reply):
        return dict(reply.content.metric_records[protocol.REPLY_METRICS])

    honest, liar, honest_1, bystander = replies
    assert metrics(honest) == metrics(liar)  # same learning, same reported numbers
    for key, value in states[0].items():
        np.testing.assert_array_equal(value.numpy(), states[1][key].numpy())  # same student
    assert (soft(liar).argmax(1) != soft(honest).argmax(1)).all()  # every sample is a lie
    assert (soft(liar).max(1) == 1).all()  # ... a confident one
    # client 1 is not an attacker: it sends exactly what it sends in an honest run
    np.testing.assert_array_equal(soft(bystander), soft(honest_1))


def test_an_attacker_can_inflate_the_counts_it_reports_consistently():
    cfg = digits_config("attack=collude", "attack.clients=[1]", "attack.count_factor=1000")
    describe = Message(RecordDict(), dst_node_id=101, message_type=protocol.DESCRIBE)
    true = len(client_private_data(cfg, 1, 4))
    described = app(describe, _context(cfg, partition_id=1)).content.metric_records[
        protocol.REPLY_METRICS
    ]
    assert described[protocol.NUM_EXAMPLES] == sum(described[protocol.CLASS_COUNTS]) > 900 * true
    reply = app(_round_message(1, 50), _context(cfg, partition_id=1))
    sent = reply.content.metric_records[protocol.REPLY_METRICS][protocol.NUM_EXAMPLES]
    assert sent == described[protocol.NUM_EXAMPLES]  # the lie is consistent: validation passes
    honest = app(describe, _context(cfg, partition_id=2)).content.metric_records[
        protocol.REPLY_METRICS
    ]
    assert honest[protocol.NUM_EXAMPLES] == len(client_private_data(cfg, 2, 4))


def test_a_client_whose_dp_budget_is_spent_reports_no_loss_and_is_accepted():
    """It takes no step, so it has no training loss to report: it says it is exhausted and its
    reply passes the server's checks (a NaN loss used to get it rejected every round)."""
    from clients.base import RoundTask
    from clients.dsfl import DSFLClient
    from fedkd.experiment import build_client_model
    from fedkd.validation import check_metrics

    class SpentBudget:
        epsilon = 8.0

        def can_afford(self, num_examples, train_cfg):
            return False

    cfg = digits_config()
    splits = load_data(cfg)
    private = client_private_data(cfg, 0, cfg.clients.num_clients)
    model = build_client_model(cfg, 0, splits)
    client = DSFLClient(cfg, 0, model, private, splits.public.x, None, SpentBudget())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    soft, metrics = client.run_round(RoundTask(1, np.arange(20)))
    assert protocol.TRAIN_LOSS not in metrics and metrics[protocol.DP_EXHAUSTED] == 1.0
    assert all(v.equal(before[k]) for k, v in model.state_dict().items())  # no step taken
    checked = {protocol.NUM_EXAMPLES: len(private), **metrics}
    assert check_metrics(checked, protocol.REPLY_METRIC_KEYS)[protocol.DP_EXHAUSTED] == 1.0
    assert soft.shape == (20, splits.num_classes)


def test_a_client_builds_a_rounds_views_once_for_its_answer_and_its_abstentions():
    """views.* with clients.abstain: the answer and the mask are on the same views, built once;
    other indices or another seed build new ones."""
    from clients.dsfl import DSFLClient
    from fedkd.experiment import build_client_model

    cfg = digits_config(
        "views.shift=1", "views.flip=true", "algorithm=dsfl", "algorithm.consensus_memory=false"
    )
    splits = load_data(cfg)
    private = client_private_data(cfg, 0, cfg.clients.num_clients)
    client = DSFLClient(cfg, 0, build_client_model(cfg, 0, splits), private, splits.public.x, None)
    built = []
    views = client.views
    client.views = lambda x, idx, seed: built.append(seed) or views(x, idx, seed)
    idx = np.arange(30)
    first = client.public_inputs(idx, [7, 1])
    assert client.public_inputs(idx.astype(np.int32), [7, 1]) is first and built == [[7, 1]]
    assert torch.equal(first, torch.from_numpy(views(splits.public.x, idx, [7, 1])))
    client.public_inputs(idx, [7, 2])
    client.public_inputs(idx[::-1], [7, 2])
    assert built == [[7, 1], [7, 2], [7, 2]]
