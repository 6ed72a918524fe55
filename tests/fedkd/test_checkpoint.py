"""Checkpoints: atomic, complete, and a client finds the state it had before a re-run round."""

import numpy as np
import pytest
import torch

from fedkd.checkpoint import (
    KEEP_STATES,
    ServerCheckpoint,
    StudentState,
    StudentStore,
    has_checkpoint,
    remove_checkpoint,
)


def _state(round_: int, value: float) -> StudentState:
    return StudentState(
        round=round_,
        weights={"w": torch.full((2, 3), value)},
        dp_history=[(1.1, 0.25, 8)],
        memory={"indices": np.array([4, 9]), "probs": np.eye(2, 3, dtype=np.float32)},
    )


def test_a_student_state_round_trips_through_bytes():
    back = StudentState.from_bytes(_state(3, 0.5).to_bytes())
    assert back.round == 3 and back.dp_history == [(1.1, 0.25, 8)]
    assert torch.equal(back.weights["w"], torch.full((2, 3), 0.5))
    np.testing.assert_array_equal(back.memory["indices"], [4, 9])


def test_the_store_returns_the_newest_state_before_a_round_and_prunes(tmp_path):
    store = StudentStore(tmp_path, "run1")
    assert store.load(7, before_round=5) is None  # never trained: a fresh student
    for r in (1, 3, 4, 6, 8):
        store.save(7, _state(r, float(r)))
    files = sorted(p.name for p in (tmp_path / "run1" / "client-7").iterdir())
    assert files == [f"round-{r}.pt" for r in (4, 6, 8)][-KEEP_STATES:]
    # a resumed server re-runs round 8: the client starts from what it had before it
    state = store.load(7, before_round=8)
    assert state is not None and state.round == 6
    assert float(state.weights["w"][0, 0]) == 6.0
    assert store.load(7, before_round=9).round == 8
    # another run (another token) does not see these states
    assert StudentStore(tmp_path, "run2").load(7, before_round=9) is None


def test_the_server_checkpoint_is_written_atomically_and_read_back(tmp_path):
    torch.manual_seed(5)
    rng_before = torch.get_rng_state()
    ckpt = ServerCheckpoint(
        round=4, run_token="abc123", wall_seconds=12.5, resumed_after=[2],
        strategy={"global_model": {"w": torch.ones(3)}, "memory": np.arange(6.0)},
    )  # fmt: skip
    path = ckpt.save(tmp_path)
    assert has_checkpoint(tmp_path) and not list(path.parent.glob(".*tmp"))
    torch.rand(10)  # move the generator on
    back = ServerCheckpoint.load(tmp_path)
    assert (back.round, back.run_token, back.resumed_after) == (4, "abc123", [2])
    np.testing.assert_array_equal(back.strategy["memory"], np.arange(6.0))
    back.restore_rng()
    assert torch.equal(torch.get_rng_state(), rng_before)
    remove_checkpoint(tmp_path)
    assert not has_checkpoint(tmp_path)


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    import json

    import pytest

    from fedkd.config import ConfigError, to_json
    from fedkd.launch import resume_config
    from tests.conftest import digits_config

    with pytest.raises(ConfigError, match="not a fedkd run folder"):
        resume_config(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(to_json(digits_config("algorithm=fedavg")))
    with pytest.raises(ConfigError, match="does not checkpoint"):
        resume_config(run)
    (run / "config.json").write_text(to_json(digits_config(output_dir="/elsewhere")))
    assert resume_config(run).output_dir == str(run)  # the folder it is in now
    (run / "summary.json").write_text(json.dumps({"status": "completed", "rounds": 3}))
    with pytest.raises(ConfigError, match="nothing to resume"):
        resume_config(run)


def test_a_stopped_deployment_run_is_stopped_on_the_superlink_too(tmp_path, monkeypatch):
    """SIGTERM to the launcher: `flwr run` is killed, and `flwr stop <run id> <connection>`
    ends the run the SuperLink would otherwise keep running."""
    import os
    import signal
    import threading

    import pytest

    from fedkd import launch

    calls = tmp_path / "calls"
    fake = tmp_path / "flwr"
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = stop ]; then echo "$@" >> {calls}; exit 0; fi\n'
        "echo 'Successfully started run 42'\nexec sleep 60\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(launch, "flower_bin", lambda name: str(fake))
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(launch.RunInterrupted), launch.interruptible():
        launch.flwr_run(tmp_path, "mycluster", tmp_path / "cfg.toml", dict(os.environ),
                        stop_remote=True)  # fmt: skip
    timer.cancel()
    assert calls.read_text().split() == ["stop", "42", "mycluster"]


@pytest.mark.parametrize(
    ("status", "details", "fails"),
    [("finished:failed", "Task failed because the run expired", True),
     ("finished:completed", "", False)],
)  # fmt: skip
def test_a_deployed_run_that_wrote_no_summary_fails_unless_the_superlink_says_it_completed(
    tmp_path, monkeypatch, status, details, fails
):
    """`flwr run --stream` exits 0 however the run ended: a deployment run with no summary
    here asks the SuperLink (`flwr ls --run-id`) whether it completed on another machine."""
    import json
    import os

    from fedkd import launch

    listing = {
        "success": True,
        "runs": [{"run-id": 42, "status": status, "status-details": details}],
    }
    fake = tmp_path / "flwr"
    fake.write_text(
        "#!/bin/sh\n"
        f"if [ \"$1\" = ls ]; then echo '{json.dumps(listing)}'; exit 0; fi\n"
        "echo 'Successfully started run 42'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(launch, "flower_bin", lambda name: str(fake))
    flower = launch.flwr_run(tmp_path, "mycluster", tmp_path / "cfg.toml", dict(os.environ))
    assert flower == launch.FlowerRun(0, 42)
    out = tmp_path / "out"
    if fails:
        with pytest.raises(launch.LaunchError, match=r"run 42 .* ended finished:failed .*expired"):
            launch._remote_summary("mycluster", flower.run_id, dict(os.environ), out)
    else:
        summary = launch._remote_summary("mycluster", flower.run_id, dict(os.environ), out)
        assert summary == {"status": "remote", "run_id": 42, "output_dir": str(out)}


def test_a_deployed_run_that_never_started_fails(tmp_path):
    from fedkd import launch

    with pytest.raises(launch.LaunchError, match="started no run"):
        launch._remote_summary("mycluster", None, {}, tmp_path)


def test_a_resumed_run_stopped_again_counts_its_earlier_time_and_resumes(tmp_path):
    import json

    from fedkd.launch import write_interrupted_summary
    from fedkd.results import RoundRecord, RunRecorder
    from tests.conftest import digits_config

    cfg = digits_config("dp.epsilon=4", output_dir=str(tmp_path))
    recorder = RunRecorder(tmp_path, cfg)
    for r in (1, 2, 3):
        recorder.log_round(RoundRecord(r, global_accuracy=0.5 + r / 10))
    earlier = ServerCheckpoint(round=2, run_token="t", wall_seconds=100.0, resumed_after=[1],
                               strategy={})  # fmt: skip
    summary = write_interrupted_summary(tmp_path, cfg, 20.0, earlier)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["status"] == "interrupted" and written["rounds"] == 3 == summary.rounds
    assert written["wall_seconds"] == 120.0  # before the resume, and since
    assert written["resumed_after"] == [1, 2]
    assert written["dp_delta"] == 1e-5
