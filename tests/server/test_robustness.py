"""The server distrusts clients over time and survives restarts: quarantine, a node that lost
its student, logits of any scale, privacy spent, and checkpoints that resume exactly."""

import dataclasses

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, RecordDict

from clients.app import app as client_app
from fedkd import protocol
from fedkd.checkpoint import ServerCheckpoint, has_checkpoint
from fedkd.config import to_json
from fedkd.experiment import build_global_model, load_data
from fedkd.results import TIMING_FIELDS, RunRecorder, read_metrics
from fedkd.schema import import_object
from server.strategies.roster import FederationLost
from tests.conftest import digits_config
from tests.server.grid import InProcessGrid

SOFT_LABELS_KEY = protocol.part_key(protocol.SOFT_LABELS, "values")  # the float16 codec's one part


def _setup(cfg, run_dir, checkpoint=None):
    cfg = dataclasses.replace(cfg, output_dir=str(run_dir))
    splits = load_data(cfg)
    strategy_cls = import_object(cfg.algorithm.server, "algorithm")
    recorder = (
        RunRecorder(run_dir, cfg)
        if checkpoint is None
        else RunRecorder.resume(
            run_dir, cfg, checkpoint.round, checkpoint.wall_seconds, checkpoint.resumed_after
        )
    )
    strategy = strategy_cls(cfg, splits, build_global_model(cfg, splits), recorder)
    grid = InProcessGrid(client_app, {protocol.RUN_CONFIG_KEY: to_json(cfg)}, 4)
    return strategy, grid


def _soft_labels(transform):
    def tamper(msg, reply):
        arrays = reply.content.array_records[protocol.REPLY_ARRAYS]
        soft = transform(arrays[SOFT_LABELS_KEY].numpy())
        content = RecordDict(
            {
                protocol.REPLY_ARRAYS: ArrayRecord({SOFT_LABELS_KEY: Array(soft)}),
                protocol.REPLY_METRICS: reply.content.metric_records[protocol.REPLY_METRICS],
            }
        )
        return Message(content, reply_to=msg)

    return tamper


def test_a_client_rejected_round_after_round_sits_out_then_returns(tmp_path):
    cfg = digits_config("algorithm=dsfl", "quarantine.after=2", "quarantine.rounds=2")
    strategy, grid = _setup(cfg, tmp_path)
    bad = sorted(grid.contexts)[0]  # client 0
    grid.tamper[bad] = _soft_labels(lambda s: np.full_like(s, np.nan))
    records = [strategy.run_round(grid, r) for r in range(1, 6)]
    assert [0 in r.rejected for r in records] == [True, True, False, False, True]
    assert [r.num_sampled for r in records] == [4, 4, 3, 3, 4]  # out for rounds 3 and 4
    assert [r.quarantined for r in records] == [[], [0], [0], [], []]
    assert all(r.num_accepted == 3 for r in records)  # the honest clients carry every round


def test_a_liar_out_weighed_by_the_history_rule_is_quarantined(tmp_path):
    cfg = digits_config(
        "algorithm=dsfl", "algorithm.combine=reputation", "attack=wrong_class",
        "attack.clients=[2]", "quarantine.after=2", "quarantine.rounds=null",
    )  # fmt: skip
    strategy, grid = _setup(cfg, tmp_path)
    records = [strategy.run_round(grid, r) for r in range(1, 5)]
    assert any(2 in r.quarantined for r in records)
    assert all(set(r.quarantined) <= {2} for r in records)  # no honest client is struck
    assert records[-1].num_sampled == 3 and records[-1].global_accuracy > 0.8
    assert strategy.roster.strikes.get(0, 0) == strategy.roster.strikes.get(1, 0) == 0


def test_a_node_that_lost_its_student_is_noticed(tmp_path):
    cfg = digits_config("algorithm=dsfl")
    strategy, grid = _setup(dataclasses.replace(cfg, mode="deploy"), tmp_path)  # no disk store
    first = strategy.run_round(grid, 1)
    assert first.restarted == [] and strategy.last_trained == {0: 1, 1: 1, 2: 1, 3: 1}
    lost = sorted(grid.contexts)[1]
    grid.contexts[lost].state = RecordDict()  # the node restarted: its memory is gone
    second = strategy.run_round(grid, 2)
    assert second.restarted == [1] and second.num_accepted == 4
    assert {c["client_id"]: c[protocol.STUDENT_ROUND] for c in second.clients} == {
        0: 1, 1: 0, 2: 1, 3: 1,
    }  # fmt: skip


def test_a_student_round_from_the_future_is_rejected(tmp_path):
    strategy, grid = _setup(digits_config("algorithm=dsfl"), tmp_path)
    node = sorted(grid.contexts)[0]

    def claim_round_9(msg, reply):
        metrics = reply.content.metric_records[protocol.REPLY_METRICS]
        metrics[protocol.STUDENT_ROUND] = 9.0
        return reply

    grid.tamper[node] = claim_round_9
    record = strategy.run_round(grid, 1)
    assert "student-round" in record.rejected[0]


@pytest.mark.parametrize(("bound", "survives"), [("true", True), ("false", False)])
def test_logits_scaled_by_a_million_cannot_own_the_fedmd_mean(tmp_path, bound, survives):
    # float32 on the wire: a float16 codec could not even carry logits of 1e6
    cfg = digits_config(
        "algorithm=fedmd", f"algorithm.bound_logits={bound}", "algorithm.codec=float32"
    )
    strategy, grid = _setup(cfg, tmp_path)
    liar = sorted(grid.contexts)[0]
    # valid, finite float32 logits: the client's own predictions reversed and scaled by 1e6
    grid.tamper[liar] = _soft_labels(lambda s: (-1e6 * s.astype(np.float32)).astype(np.float32))
    record = strategy.run_round(grid, 1)
    assert record.num_accepted == 4  # well-formed: only the aggregation can defend
    assert (record.consensus_accuracy > 0.8) == survives, record.consensus_accuracy


def test_privacy_spent_is_recorded_per_client_and_summarised(tmp_path):
    cfg = digits_config("algorithm=dsfl", "dp.epsilon=4", "num_rounds=2")
    strategy, grid = _setup(cfg, tmp_path)
    summary = strategy.start(grid)
    rounds = read_metrics(tmp_path)
    assert set(rounds[0].dp_epsilon) == {0, 1, 2, 3}
    assert all(0 < rounds[0].dp_epsilon[c] < rounds[1].dp_epsilon[c] <= 4 for c in range(4))
    assert summary["dp_epsilon"] == max(rounds[1].dp_epsilon.values())
    assert summary["dp_delta"] == 1e-5
    assert rounds[1].global_accuracy > 0.3  # noisy, but learning


def _comparable(records):
    return [
        {k: v for k, v in dataclasses.asdict(r).items() if k not in TIMING_FIELDS} for r in records
    ]


def test_a_run_resumed_from_its_checkpoint_repeats_the_uninterrupted_rounds(tmp_path):
    cfg = digits_config(
        "num_rounds=4", "model.ema_decay=0.5", "algorithm.combine=reputation",
        "attack=replay", "attack.clients=[1]", "clients.fraction=0.5",
    )  # fmt: skip
    straight, grid = _setup(cfg, tmp_path / "straight")
    straight.roster.update(grid)
    for r in range(1, 5):
        straight.recorder.log_round(straight.run_round(grid, r))

    first, grid = _setup(cfg, tmp_path / "stopped")
    first.roster.update(grid)
    for r in range(1, 3):
        first.recorder.log_round(first.run_round(grid, r))
        first.checkpoint(r)
    first.run_round(grid, 3)  # round 3 ran (students moved on) but was never checkpointed
    assert has_checkpoint(tmp_path / "stopped")

    # a new server process and new nodes: only the disk is left
    ckpt = ServerCheckpoint.load(tmp_path / "stopped")
    resumed, grid = _setup(cfg, tmp_path / "stopped", checkpoint=ckpt)
    resumed.resume(ckpt)
    summary = resumed.start(grid)
    assert summary["resumed_after"] == [2] and summary["rounds"] == 4
    assert _comparable(read_metrics(tmp_path / "stopped")) == _comparable(
        read_metrics(tmp_path / "straight")
    )
    assert not has_checkpoint(tmp_path / "stopped")  # a completed run keeps no states


def _failing(msg, reply):
    return Message(Error(code=2, reason="the client's runtime is gone"), reply_to=msg)


def _stops_when_every_client_fails_after_round_1(strategy, grid, run_dir):
    """All 4 clients answer round 1, then fail: with ``max_failed_rounds=2`` the run stops
    after round 3, recording the three rounds."""
    answered = {"n": 0}

    def gone_after_round_1(msg, reply):
        answered["n"] += 1
        return reply if answered["n"] <= 4 else _failing(msg, reply)

    for node in grid.contexts:
        grid.tamper[node] = gone_after_round_1
    with pytest.raises(FederationLost, match="rounds 2-3"):
        strategy.start(grid)
    rounds = read_metrics(run_dir)
    assert [(r.round, r.num_accepted, r.num_failed) for r in rounds] == [
        (1, 4, 0),
        (2, 0, 4),
        (3, 0, 4),
    ]


def test_a_run_whose_clients_all_fail_round_after_round_stops_and_resumes_from_before(tmp_path):
    cfg = digits_config("algorithm=dsfl", "max_failed_rounds=2", "num_rounds=4")
    strategy, grid = _setup(cfg, tmp_path / "stopped")
    _stops_when_every_client_fails_after_round_1(strategy, grid, tmp_path / "stopped")
    # the checkpoint is the last round anyone answered: a resumed run repeats the lost ones
    ckpt = ServerCheckpoint.load(tmp_path / "stopped")
    assert ckpt.round == 1

    straight, grid = _setup(cfg, tmp_path / "straight")
    straight.start(grid)
    resumed, grid = _setup(cfg, tmp_path / "stopped", checkpoint=ckpt)
    resumed.resume(ckpt)
    summary = resumed.start(grid)
    assert summary["rounds"] == 4 and summary["resumed_after"] == [1]
    assert _comparable(read_metrics(tmp_path / "stopped")) == _comparable(
        read_metrics(tmp_path / "straight")
    )


def test_a_fedavg_run_whose_clients_all_fail_stops_too(tmp_path):
    """``max_failed_rounds`` holds for the weight-averaging baseline as well."""
    cfg = digits_config("algorithm=fedavg", "max_failed_rounds=2", "num_rounds=5")
    strategy, grid = _setup(cfg, tmp_path)
    _stops_when_every_client_fails_after_round_1(strategy, grid, tmp_path)


def test_one_failing_round_among_answered_ones_does_not_stop_the_run(tmp_path):
    cfg = digits_config("algorithm=dsfl", "max_failed_rounds=2", "num_rounds=3")
    strategy, grid = _setup(cfg, tmp_path)
    calls = {"n": 0}

    def every_other_round(msg, reply):  # rounds 1 and 3 fail entirely, round 2 answers
        calls["n"] += 1
        return _failing(msg, reply) if ((calls["n"] - 1) // 4) % 2 == 0 else reply

    for node in grid.contexts:
        grid.tamper[node] = every_other_round
    summary = strategy.start(grid)
    assert summary["rounds"] == 3
    assert [r.num_accepted for r in read_metrics(tmp_path)] == [0, 4, 0]
