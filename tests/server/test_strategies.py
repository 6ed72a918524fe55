"""Strategies fed real reply Messages: the round template, validation and the algorithms' hooks."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict

from clients.app import app as client_app
from fedkd import protocol
from fedkd.algorithms import ALGORITHMS
from fedkd.config import to_json
from fedkd.experiment import build_global_model, load_data
from fedkd.results import RunRecorder, read_metrics
from fedkd.schema import import_object
from fedkd.training import evaluate, predict_logits
from fedkd.validation import InvalidReply
from server.strategies import DSFL, FedAvgBaseline, FedDF, FedMD
from server.strategies.roster import ClientInfo, addressee
from tests.conftest import digits_config
from tests.server.grid import InProcessGrid

SOFT_LABELS_KEY = protocol.part_key(protocol.SOFT_LABELS, "values")  # the float16 codec's one part


def _strategy(cfg, tmp_path):
    splits = load_data(cfg)
    recorder = RunRecorder(tmp_path / "run", cfg)
    strategy_cls = import_object(cfg.algorithm.server, "algorithm")
    return strategy_cls(cfg, splits, build_global_model(cfg, splits), recorder)


def _grid(cfg):
    return InProcessGrid(
        client_app, {protocol.RUN_CONFIG_KEY: to_json(cfg)}, cfg.clients.num_clients
    )


def _replace_soft_labels(array):
    def tamper(msg, reply):
        metrics = reply.content.metric_records[protocol.REPLY_METRICS]
        content = RecordDict(
            {
                protocol.REPLY_ARRAYS: ArrayRecord({SOFT_LABELS_KEY: Array(array)}),
                protocol.REPLY_METRICS: metrics,
            }
        )
        return Message(content, reply_to=msg)

    return tamper


def test_each_algorithm_names_its_own_server_and_client_parts():
    parts = {
        name: (import_object(cls.server, name), cls.client and import_object(cls.client, name))
        for name, cls in ALGORITHMS.items()
        if not cls.in_process
    }
    assert parts["fedmd"][0] is FedMD and parts["dsfl"][0] is DSFL and parts["feddf"][0] is FedDF
    assert parts["fedavg"] == (FedAvgBaseline, None)  # weights: Flower's own train handler
    assert {c.__name__ for _, c in parts.values() if c} == {
        "FedMDClient",
        "DSFLClient",
        "FedDFClient",
    }
    assert FedMD.soft_label_kind == "logits" and DSFL.soft_label_kind == "probs"


def _clients(*counts):
    return [ClientInfo(i, i, "cnn", sum(c), tuple(c)) for i, c in enumerate(counts)]


def test_consensus_pipeline_dsfl_era_and_fedmd_softened_mean_logits(tmp_path):
    clients = _clients((5, 5), (5, 5))
    stack = np.array([[[2.0, 0.0]], [[0.0, 0.0]]], dtype=np.float32)  # 2 clients, 1 sample
    fedmd = _strategy(digits_config("algorithm=fedmd", "algorithm.temperature=2.0"), tmp_path)
    # mean logits (1, 0) / T=2 -> softmax((0.5, 0))
    p = 1 / (1 + np.exp(-0.5))
    np.testing.assert_allclose(fedmd.consensus(stack, clients)[0], [[p, 1 - p]], rtol=1e-5)
    dsfl = _strategy(digits_config("algorithm=dsfl"), tmp_path / "b")
    probs = np.array([[[0.9, 0.1]], [[0.5, 0.5]]], dtype=np.float32)
    q = 1 / (1 + np.exp(-4.0))  # mean (0.7, 0.3) / 0.1 -> softmax((7, 3))
    np.testing.assert_allclose(dsfl.consensus(probs, clients)[0], [[q, 1 - q]], rtol=1e-5)
    plain = _strategy(digits_config("algorithm=dsfl", "algorithm.postprocess=null"), tmp_path / "c")
    np.testing.assert_allclose(plain.consensus(probs, clients)[0], [[0.7, 0.3]], rtol=1e-5)


def test_consensus_pipeline_class_weighted_then_the_algorithms_formula(tmp_path):
    # client 0 holds only class 0, client 1 only class 1: each speaks for its own class
    clients = _clients((10, 0), (0, 10))
    probs = np.array([[[0.8, 0.2]], [[0.6, 0.4]]], dtype=np.float32)
    cfg = digits_config("algorithm.combine=class_weighted", "algorithm.postprocess=null")
    consensus, combined = _strategy(cfg, tmp_path).consensus(probs, clients)
    np.testing.assert_allclose(consensus, [[0.8 / 1.2, 0.4 / 1.2]], rtol=1e-5)  # renormalised
    np.testing.assert_allclose(combined.class_weight, [10, 10])
    logits = np.array([[[2.0, 0.0]], [[0.0, 4.0]]], dtype=np.float32)
    fedmd = digits_config("algorithm=fedmd", "algorithm.combine=class_weighted")
    consensus, _ = _strategy(fedmd, tmp_path / "b").consensus(logits, clients)
    r = 1 / (1 + np.exp((4.0 - 2.0) / 2.0))  # softmax((2, 4) / T=2)
    np.testing.assert_allclose(consensus, [[r, 1 - r]], rtol=1e-5)


def test_a_round_learns_and_counts_bytes(tmp_path):
    cfg = digits_config()
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    record = strategy.run_round(grid, 1)
    assert record.num_accepted == 4 and record.num_rejected == 0
    assert record.global_accuracy > 0.5
    assert record.consensus_accuracy > 0.5
    # the round's students' plain ensemble, and each reply on its own, on the same samples
    assert 0.5 < record.ensemble_accuracy <= 1.0
    per_client = [c["public_accuracy"] for c in record.clients]
    assert len(per_client) == 4 and all(0 <= a <= 1 for a in per_client)
    assert record.ensemble_accuracy >= min(per_client)
    n, k = record.public_samples, 10
    # each reply: one float16 (n, K) block, plus headers, keys and a few metrics
    per_client = [c["uplink_bytes"] for c in record.clients]
    assert sum(per_client) == record.uplink_bytes
    assert all(n * k * 2 < b < n * k * 2 + 1000 for b in per_client), per_client
    # round 1 asks for the public subset by its seed: a few dozen bytes, not n indices
    assert all(0 < c["downlink_bytes"] < 200 for c in record.clients)
    assert record.downlink_bytes == sum(c["downlink_bytes"] for c in record.clients)
    # round 2 sends the consensus back, as many rows as the client will use
    second = strategy.run_round(grid, 2)
    info = strategy.roster.clients[grid.sent[-1].metadata.dst_node_id]
    rows = min(n, info.num_examples)
    mine = next(c for c in second.clients if c["client_id"] == info.client_id)
    assert rows * (4 + 2 * k) < mine["downlink_bytes"] < rows * (4 + 2 * k) + 1000
    last = grid.sent[-1].content.array_records[protocol.ROUND_ARRAYS]
    consensus = protocol.part_key(protocol.CONSENSUS_PROBS, "values")
    assert set(last.keys()) == {consensus, protocol.CONSENSUS_INDICES}
    # only the teacher samples this client mixes into its pass: as many as its private examples
    info = strategy.roster.clients[grid.sent[-1].metadata.dst_node_id]
    sent = last[protocol.CONSENSUS_INDICES].numpy()
    assert len(sent) == min(len(strategy.state.consensus_indices), info.num_examples) < n
    assert set(sent) <= set(strategy.state.consensus_indices)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (np.full((3, 10), 0.1, dtype=np.float16), "shape"),
        (np.full((500, 10), np.nan, dtype=np.float16), "NaN"),
        (np.full((500, 10), 0.5, dtype=np.float16), "sum to 1"),
        (np.full((500, 10), 0.1, dtype=np.float64), "dtype"),
    ],
)
def test_malformed_replies_are_rejected_logged_and_counted(tmp_path, caplog, bad, reason):
    cfg = digits_config()
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    bad_node = sorted(grid.contexts)[2]
    grid.tamper[bad_node] = _replace_soft_labels(bad)
    record = strategy.run_round(grid, 1)
    assert record.num_rejected == 1 and record.num_accepted == 3
    assert reason in record.rejected[2]
    assert "rejected reply of client 2" in caplog.text
    assert record.global_accuracy > 0.5  # the round went on with the others


def test_replies_carrying_anything_but_soft_labels_are_rejected(tmp_path):
    cfg = digits_config()
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)

    def smuggle_weights(msg, reply):
        reply.content["weights"] = ArrayRecord({"w": Array(np.zeros(10, dtype=np.float32))})
        return reply

    def no_count(msg, reply):
        arrays = reply.content.array_records[protocol.REPLY_ARRAYS]
        return Message(
            RecordDict({protocol.REPLY_ARRAYS: arrays, protocol.REPLY_METRICS: MetricRecord({})}),
            reply_to=msg,
        )

    nodes = sorted(grid.contexts)
    grid.tamper[nodes[0]] = smuggle_weights
    grid.tamper[nodes[1]] = no_count
    grid.tamper[nodes[3]] = lambda msg, reply: Message(Error(code=2, reason="boom"), reply_to=msg)
    record = strategy.run_round(grid, 1)
    assert set(record.rejected) == {0, 1}
    assert "unexpected records" in record.rejected[0]
    assert protocol.NUM_EXAMPLES in record.rejected[1]
    assert record.failed == {3: "boom"}
    assert record.num_accepted == 1


def test_missing_replies_are_recorded_and_all_bad_round_keeps_the_model(tmp_path):
    cfg = digits_config()
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    for node in grid.contexts:
        grid.tamper[node] = lambda msg, reply: None  # nobody answers
    record = strategy.run_round(grid, 1)
    assert record.missing == [0, 1, 2, 3]
    assert np.isnan(record.consensus_accuracy)
    assert strategy.state.consensus_probs is None


def test_first_contact_outlasts_round_timeout_and_asks_slow_nodes_again(tmp_path):
    cfg = digits_config("round_timeout=1", "node_wait_timeout=30")
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    send, timeouts, late = grid.send_and_receive, [], max(grid.contexts)

    def slow_start(messages, *, timeout=None):
        # the last node is still starting up the first time it is asked: its reply is late
        messages = list(messages)
        timeouts.append(timeout)
        replies = send(messages, timeout=timeout)
        return [r for r in replies if len(timeouts) > 1 or addressee(r, messages) != late]

    grid.send_and_receive = slow_start
    strategy.roster.wait_for_nodes(grid)
    described = {c.client_id for c in strategy.roster.clients.values()}
    assert described == set(range(cfg.clients.num_clients))
    assert len(timeouts) == 2 and timeouts[0] > cfg.round_timeout  # asked again, not given up


def test_sampling_is_seeded_by_client_id_not_node_id(tmp_path):
    cfg = digits_config("clients.fraction=0.5", "clients.min_clients=1")
    a, b = _strategy(cfg, tmp_path / "a"), _strategy(cfg, tmp_path / "b")
    grid_a, grid_b = _grid(cfg), _grid(cfg)
    # node ids differ between the two federations, client ids do not
    grid_b.contexts = {n + 555: c for n, c in grid_a.contexts.items()}
    picks = []
    for strategy, grid in ((a, grid_a), (b, grid_b)):
        online = strategy.roster.update(grid)
        picks.append([[c.client_id for c in strategy.roster.sample(r, online)] for r in (1, 2, 3)])
    assert picks[0] == picks[1]
    assert all(len(p) == 2 for p in picks[0])


def test_start_writes_run_folder(tmp_path):
    cfg = digits_config(num_rounds=2)
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    summary = strategy.start(grid)
    rounds = read_metrics(tmp_path / "run")
    assert [r.round for r in rounds] == [1, 2]
    assert summary["rounds"] == 2 and summary["status"] == "completed"
    assert summary["final_global_accuracy"] == rounds[-1].global_accuracy
    assert summary["uplink_bytes_total"] == sum(r.uplink_bytes for r in rounds)
    assert (tmp_path / "run" / "global_model.pt").is_file()
    assert (tmp_path / "run" / "config.json").is_file()


def test_superlink_error_for_a_vanished_node_is_attributed_to_that_client(tmp_path):
    """When a node is gone, the SuperLink answers in its stead (its own node id as sender)."""
    cfg = digits_config()
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)

    def node_unavailable(msg, reply):
        error = Message(Error(code=3, reason="Node Unavailable"), reply_to=msg)
        error.metadata.__dict__["_src_node_id"] = 1  # the SuperLink's node id
        return error

    grid.tamper[sorted(grid.contexts)[1]] = node_unavailable
    record = strategy.run_round(grid, 1)
    assert record.failed == {1: "Node Unavailable"}
    assert record.missing == [] and record.num_accepted == 3


def test_feddf_early_stops_on_holdout_and_refreshes_clients_from_the_global_model(tmp_path):
    cfg = digits_config("algorithm=feddf", "model.distill_epochs=100")
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    record = strategy.run_round(grid, 1)
    assert record.global_accuracy > 0.5
    assert 1 <= record.server["epochs"] < 100  # stopped early on the held-out public samples
    # what goes back to the clients is the global model's prediction, not the raw ensemble
    idx = strategy.state.consensus_indices
    logits = predict_logits(strategy.global_model, strategy._public_x[idx])
    np.testing.assert_allclose(
        strategy.state.consensus_probs, torch.softmax(logits, dim=1).numpy(), rtol=1e-5
    )


def test_consensus_memory_averages_over_rounds(tmp_path):
    cfg = digits_config("algorithm=dsfl", "algorithm.consensus_memory=true")
    strategy = _strategy(cfg, tmp_path)
    idx = np.array([0, 1])
    first = strategy.remember(idx, np.array([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(first, [[1.0, 0.0], [0.0, 1.0]])
    second = strategy.remember(np.array([1, 2]), np.array([[1.0, 0.0], [0.5, 0.5]]))
    np.testing.assert_allclose(second, [[0.5, 0.5], [0.5, 0.5]])  # sample 1 seen twice


def test_memory_decay_fades_older_rounds(tmp_path):
    cfg = digits_config("algorithm.consensus_memory=true", "algorithm.memory_decay=0.5")
    strategy = _strategy(cfg, tmp_path)
    strategy.remember(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    second = strategy.remember(np.array([1]), np.array([[1.0, 0.0]]))
    np.testing.assert_allclose(second, [[2 / 3, 1 / 3]])  # weights 0.5 (old) and 1 (new)
    third = strategy.remember(np.array([0]), np.array([[0.0, 1.0]]))
    np.testing.assert_allclose(third, [[0.25 / 1.25, 1 / 1.25]])  # two rounds old: 0.25


def test_fedavg_baseline_runs_flowers_fedavg_and_records_weight_bytes(tmp_path):
    cfg = digits_config("algorithm=fedavg", "model=cnn", num_rounds=2)
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    summary = strategy.start(grid)
    rounds = read_metrics(tmp_path / "run")
    assert [r.round for r in rounds] == [1, 2] and summary["status"] == "completed"
    assert rounds[-1].global_accuracy > 0.5
    # every client trained the global architecture and sent all of its weights back
    assert {c["architecture"] for c in summary["clients"]} == {"cnn"}
    model_bytes = ArrayRecord(strategy.global_model.state_dict()).count_bytes()
    # serialised messages: the weights plus headers, keys, config and metrics (< 2 kB)
    for sent, count in ((rounds[0].uplink_bytes, rounds[0].num_accepted),
                        (rounds[0].downlink_bytes, rounds[0].num_sampled)):  # fmt: skip
        assert count * model_bytes < sent < count * (model_bytes + 2000)
    types = {m.metadata.message_type for m in grid.sent}
    assert types == {protocol.DESCRIBE, "train"}


def test_distill_on_memory_uses_every_remembered_sample(tmp_path):
    cfg = digits_config("algorithm=dsfl", "algorithm.consensus_memory=true",
                        "algorithm.distill_on_memory=true", "public_per_round=100")  # fmt: skip
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    strategy.run_round(grid, 1)
    strategy.run_round(grid, 2)
    idx, targets = strategy.distillation_set(np.arange(3), np.zeros((3, 10), np.float32))
    assert len(idx) > 100  # two rounds' subsets, not one
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-5)
    # clients learn next round from what the global model was distilled on
    np.testing.assert_array_equal(strategy.state.consensus_indices, idx)
    np.testing.assert_allclose(strategy.state.consensus_probs, targets, rtol=1e-6)


def test_a_node_that_left_is_recorded_offline_and_in_the_summary(tmp_path):
    cfg = digits_config(num_rounds=2)
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    strategy.run_round(grid, 1)
    gone = sorted(grid.contexts)[3]
    del grid.contexts[gone]  # client 3 disconnects cleanly: the SuperLink stops listing it
    record = strategy.run_round(grid, 2)
    assert record.offline == [3] and record.num_accepted == 3
    strategy.recorder.log_round(record)
    assert strategy.recorder.write_summary()["missing_by_client"] == {"3": [2]}


def test_a_node_with_missing_data_is_left_out_and_the_run_goes_on(tmp_path):
    cfg = digits_config(num_rounds=2)
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    broken = sorted(grid.contexts)[1]
    grid.contexts[broken].node_config = {"data-dir": str(tmp_path / "nowhere")}
    summary = strategy.start(grid)
    assert summary["status"] == "completed" and summary["rounds"] == 2
    assert {c["client_id"] for c in summary["clients"]} == {0, 2, 3}
    (reason,) = summary["unusable_nodes"].values()
    assert "does not exist" in reason and "nowhere" in reason


def test_class_weighting_uses_the_counts_clients_report(tmp_path):
    cfg = digits_config(
        "partition=dirichlet",
        "partition.alpha=0.3",
        "algorithm.combine=class_weighted",
        "algorithm.consensus_memory=true",
    )
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    record = strategy.run_round(grid, 1)
    counts = [c.class_counts for c in strategy.roster.clients.values()]
    assert all(c is not None and len(c) == 10 for c in counts)
    assert sum(sum(c) for c in counts) == len(strategy.splits.private)  # the partitions' labels
    assert record.num_accepted == 4 and record.global_accuracy > 0.3


def test_class_counts_are_only_sent_when_asked(tmp_path):
    cfg = digits_config("algorithm=dsfl")  # the default, dsfl_plus, weighs clients per class
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    strategy.roster.update(grid)
    assert all(c.class_counts is None for c in strategy.roster.clients.values())


def test_ema_serves_the_moving_average_of_the_distilled_model(tmp_path):
    cfg = digits_config("model.ema_decay=0.5", "algorithm.client_teacher=global")
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    strategy.run_round(grid, 1)
    after_one = [p.detach().clone() for p in strategy.global_model.parameters()]
    served = list(strategy.served_model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(after_one, served, strict=True))  # a copy
    second = strategy.run_round(grid, 2)
    now = list(strategy.global_model.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(after_one, now, strict=True))
    for old, new, avg in zip(after_one, now, strategy.served_model.parameters(), strict=True):
        torch.testing.assert_close(avg, 0.5 * old + 0.5 * new)
    # the average is what was evaluated and what the clients learn from next round
    acc, _ = evaluate(strategy.served_model, strategy._test_x, strategy._test_y)
    assert second.global_accuracy == acc
    idx = strategy.state.consensus_indices
    logits = predict_logits(strategy.served_model, strategy._public_x[idx])
    np.testing.assert_allclose(
        strategy.state.consensus_probs, torch.softmax(logits, dim=1).numpy(), rtol=1e-5
    )


@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
def test_a_round_learns_with_a_robust_combine_rule(tmp_path, rule):
    cfg = digits_config("algorithm=dsfl", f"algorithm.combine={rule}")
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    record = strategy.run_round(grid, 1)
    assert record.num_accepted == 4 and record.global_accuracy > 0.5


def _with_metrics(**changes):
    def tamper(msg, reply):
        metrics = dict(reply.content.metric_records[protocol.REPLY_METRICS])
        metrics.update(changes)
        reply.content[protocol.REPLY_METRICS] = MetricRecord(metrics)
        return reply

    return tamper


def test_numbers_a_client_reports_are_untrusted(tmp_path):
    """Smuggled metrics, an inflated example count, an impossible accuracy: rejected, and their
    bytes counted apart from the accepted upload."""
    cfg = digits_config("algorithm=dsfl")
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    clean = strategy.run_round(grid, 1)
    nodes = sorted(grid.contexts)
    grid.tamper[nodes[0]] = _with_metrics(payload=[0.5] * 50_000)
    grid.tamper[nodes[1]] = _with_metrics(**{protocol.NUM_EXAMPLES: 10**9})
    grid.tamper[nodes[2]] = _with_metrics(**{protocol.TEST_ACCURACY: 7.0})
    record = strategy.run_round(grid, 2)
    assert set(record.rejected) == {0, 1, 2} and record.num_accepted == 1
    assert "undeclared metrics ['payload']" in record.rejected[0]
    assert "differs from the" in record.rejected[1]
    assert "not in [0, 1]" in record.rejected[2]
    assert record.rejected_bytes > 50_000 * 8  # the smuggled floats are counted ...
    assert record.uplink_bytes < clean.uplink_bytes / 3  # ... but not as accepted upload


def test_class_counts_must_add_up_to_the_example_count(tmp_path):
    from server.strategies.roster import parse_describe

    cfg = digits_config()  # dsfl_plus: clients report class counts
    grid = _grid(cfg)
    node = sorted(grid.contexts)[0]
    describe = Message(RecordDict(), dst_node_id=node, message_type=protocol.DESCRIBE)
    (reply,) = grid.send_and_receive([describe])
    info = parse_describe(reply, node)
    assert info.class_counts is not None and sum(info.class_counts) == info.num_examples
    reply.content.metric_records[protocol.REPLY_METRICS][protocol.CLASS_COUNTS] = [10**6] * 10
    with pytest.raises(InvalidReply, match="class counts sum to"):
        parse_describe(reply, node)


def test_a_history_based_rule_is_kept_for_the_run_and_sees_client_ids(tmp_path):
    cfg = digits_config("algorithm=dsfl", "algorithm.combine=reputation")
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    rule = strategy.combine_rule
    strategy.run_round(grid, 1)
    strategy.run_round(grid, 2)
    assert strategy.combine_rule is rule and set(rule._records) == {0, 1, 2, 3}  # by client id


def test_min_teacher_samples_sends_at_least_that_many_consensus_rows(tmp_path):
    """Small clients mix in more teacher samples than they have private examples: the server
    sends each exactly the rows it will use (``clients.min_teacher_samples``, capped at the
    consensus), not one row more."""
    minimum = 400
    cfg = digits_config(f"clients.min_teacher_samples={minimum}")
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    strategy.run_round(grid, 1)
    consensus_size = len(strategy.state.consensus_indices)
    infos = strategy.roster.clients
    assert any(i.num_examples < minimum < consensus_size for i in infos.values())
    sent_before = len(grid.sent)
    strategy.run_round(grid, 2)
    second = grid.sent[sent_before:]
    assert second
    for msg in second:
        info = infos[msg.metadata.dst_node_id]
        arrays = msg.content.array_records[protocol.ROUND_ARRAYS]
        rows = arrays[protocol.CONSENSUS_INDICES].numpy()
        assert len(rows) == min(consensus_size, max(info.num_examples, minimum))
        assert len(set(rows)) == len(rows) and set(rows) <= set(strategy.state.consensus_indices)


def test_the_global_model_distils_at_the_rate_its_schedule_gives_the_round(tmp_path, monkeypatch):
    import server.strategies.base as base

    rates = []
    real_train = base.train

    def spy(model, x, targets, loss_fn, cfg, optimizer=None):
        rates.append(cfg.lr)
        return real_train(model, x, targets, loss_fn, cfg, optimizer)

    monkeypatch.setattr(base, "train", spy)
    cfg = digits_config("model.lr_schedule=cosine", "num_rounds=2")
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    strategy.run_round(grid, 1)
    strategy.run_round(grid, 2)
    assert rates == [cfg.model.lr, cfg.model.lr / 2]


def test_clients_abstain_where_they_know_least_and_a_bad_mask_is_rejected(tmp_path):
    """clients.abstain=0.3: every reply carries a one-bit-per-sample mask (30 % set), the round
    learns from what is left, and a reply whose mask is missing or malformed is rejected."""
    from fedkd import abstain

    cfg = digits_config("clients.abstain=0.3")
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    masks = []

    def keep_mask(msg, reply):
        arrays = reply.content.array_records[protocol.REPLY_ARRAYS]
        masks.append(abstain.unpack(arrays[protocol.ABSTAIN].numpy(), 500))
        return reply

    def drop_mask(msg, reply):
        del reply.content.array_records[protocol.REPLY_ARRAYS][protocol.ABSTAIN]
        return reply

    def padded_mask(msg, reply):
        arrays = reply.content.array_records[protocol.REPLY_ARRAYS]
        arrays[protocol.ABSTAIN] = Array(np.full(63, 255, dtype=np.uint8))  # 504 bits for 500
        return reply

    nodes = sorted(grid.contexts)
    grid.tamper.update({nodes[0]: keep_mask, nodes[2]: drop_mask, nodes[3]: padded_mask})
    record = strategy.run_round(grid, 1)
    assert record.num_accepted == 2 and record.global_accuracy > 0.5
    assert "'abstain'" in record.rejected[2] and "padding" in record.rejected[3]
    assert len(masks) == 1 and masks[0].sum() == 150  # 30 % of the round's 500 samples
    # the mask costs one bit per sample on the wire
    plain = _strategy(digits_config(), tmp_path / "plain").run_round(_grid(digits_config()), 1)
    extra = record.clients[0]["uplink_bytes"] - plain.clients[0]["uplink_bytes"]
    assert 500 // 8 <= extra <= 500 // 8 + 200


def test_clients_answer_on_the_exact_views_the_global_model_learns_on(tmp_path, monkeypatch):
    """views.*: every client predicts on, and next round digests, the very views the server
    distils the global model on -- built on each side from the seed in the message."""
    import clients.base as client_base
    import server.strategies.base as base
    from fedkd.sampling import round_view_seed

    cfg = digits_config(
        "views.zoom=1.5",
        "views.shift=1",
        "views.flip=true",
        "views.mixup=1.0",
        "algorithm.consensus_memory=false",
        "algorithm.memory_decay=1.0",
    )
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    predicted, taught, distilled = [], [], []
    real_predict, real_fit, real_train = (
        client_base.predict_logits,
        client_base.KDClient._fit_private,
        base.train,
    )

    def predict(model, x, *args, **kwargs):
        predicted.append(x.clone())
        return real_predict(model, x, *args, **kwargs)

    def fit(self, x, targets, loss_fn, train_cfg):
        taught.append(x[len(self.private) :].clone())  # the teacher's samples follow its own
        return real_fit(self, x, targets, loss_fn, train_cfg)

    def distil(model, x, *args, **kwargs):
        distilled.append(x.clone())
        return real_train(model, x, *args, **kwargs)

    monkeypatch.setattr(client_base, "predict_logits", predict)
    monkeypatch.setattr(client_base.KDClient, "_fit_private", fit)
    monkeypatch.setattr(base, "train", distil)
    first = strategy.run_round(grid, 1)
    idx = strategy.sample_public(1)
    views = strategy.public_inputs(idx, round_view_seed(cfg.seed, 1))
    assert len(predicted) == 4 and all(torch.equal(x, views) for x in predicted)
    assert torch.equal(distilled[0], views)
    assert not torch.equal(views, torch.from_numpy(strategy.splits.public.x[idx]))
    assert first.num_accepted == 4 and first.global_accuracy > 0.5

    rows = {row.numpy().tobytes() for row in views}  # round 1's views
    strategy.run_round(grid, 2)
    assert len(taught) == 8 and all(len(x) for x in taught[4:])
    assert all(row.numpy().tobytes() in rows for x in taught[4:] for row in x)


def test_clients_that_do_not_digest_get_no_teacher_and_report_no_loss_they_did_not_compute(
    tmp_path,
):
    """clients.kd_schedule=sequential clients.digest_epochs=0: from round 2 on no teacher is
    sent, and the replies (with no digest loss to report, not a NaN) are all accepted."""
    cfg = digits_config(
        "clients.kd_schedule=sequential", "clients.digest_epochs=0", "algorithm.client_teacher=null"
    )
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    strategy.run_round(grid, 1)
    clients = strategy.roster.sample(2, strategy.roster.update(grid))
    messages = strategy.configure_round(2, clients, strategy.sample_public(2))
    assert all(not m.content.array_records[protocol.ROUND_ARRAYS] for m in messages)
    second = strategy.run_round(grid, 2)
    assert second.num_accepted == 4 and not second.rejected
    assert all(protocol.DIGEST_LOSS not in c for c in second.clients)
    assert all(protocol.TRAIN_LOSS in c for c in second.clients)


def test_replay_distils_on_the_previous_rounds_views_with_the_targets_they_had(
    tmp_path, monkeypatch
):
    """algorithm.replay_rounds=1: from round 2 on the global model learns from this round's
    views and consensus followed by those of the round before, never older ones."""
    import server.strategies.base as base
    from fedkd.sampling import round_view_seed

    cfg = digits_config(
        "views.shift=1",
        "algorithm.consensus_memory=false",
        "algorithm.memory_decay=1.0",
        "algorithm.replay_rounds=1",
        "algorithm.client_teacher=consensus",
    )
    strategy, grid = _strategy(cfg, tmp_path), _grid(cfg)
    seen, real_train = [], base.train

    def spy(model, x, targets, *args, **kwargs):
        seen.append((x.clone(), targets.clone()))
        return real_train(model, x, targets, *args, **kwargs)

    monkeypatch.setattr(base, "train", spy)
    consensus = {}
    for r in (1, 2, 3):
        strategy.run_round(grid, r)
        consensus[r] = strategy.state.consensus_probs.copy()  # (the consensus itself)
    n = len(strategy.sample_public(1))
    assert [len(x) for x, _ in seen] == [n, 2 * n, 2 * n]
    x3, y3 = seen[2]
    for block, r in enumerate((3, 2)):  # this round's first, then the kept one
        rows = slice(block * n, (block + 1) * n)
        views = strategy.public_inputs(strategy.sample_public(r), round_view_seed(cfg.seed, r))
        assert torch.equal(x3[rows], views)
        np.testing.assert_array_equal(y3[rows].numpy(), consensus[r])
    assert len(strategy.state.replay) == 1
    resumed = _strategy(cfg, tmp_path / "resumed")  # what a checkpoint carries over
    resumed.load_state_dict(strategy.state_dict())
    idx = strategy.sample_public(4)
    a, b = (s.distillation_data(4, idx, consensus[3][: len(idx)]) for s in (strategy, resumed))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and len(a[0]) == 2 * n


def test_replay_rounds_and_distill_on_memory_are_refused_together():
    from fedkd.config import compose
    from fedkd.schema import ConfigError

    with pytest.raises(ConfigError, match=r"algorithm\.replay_rounds"):
        compose(["algorithm.distill_on_memory=true", "algorithm.replay_rounds=2"])


def test_a_client_refuses_a_round_whose_views_disagree_with_its_config(tmp_path):
    """A server without views talking to clients configured with them (or the other way
    round) would merge labels of different inputs: the clients fail the round, saying why."""
    no_memory = ("algorithm.consensus_memory=false", "algorithm.memory_decay=1.0")
    plain, viewed = digits_config(*no_memory), digits_config("views.shift=1", *no_memory)
    for server_cfg, client_cfg in ((plain, viewed), (viewed, plain)):
        record = _strategy(server_cfg, tmp_path / str(id(server_cfg))).run_round(
            _grid(client_cfg), 1
        )
        assert record.num_accepted == 0 and len(record.failed) == 4
        assert all(protocol.VIEW_SEED in reason for reason in record.failed.values())
