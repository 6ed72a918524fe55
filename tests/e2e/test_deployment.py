"""Real deployment on 127.0.0.1: flower-superlink + flower-supernode processes, `fedkd mode=deploy`.

Every process is started by `fedkd.cluster` and stopped by PID in teardown.
"""

import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from fedkd import cluster, netlab
from fedkd.results import read_metrics
from tests.e2e.conftest import QUICK_CLIENTS, QUICK_DSFL, USER_MODEL_OVERRIDES

pytestmark = pytest.mark.deployment

NUM_NODES = QUICK_CLIENTS
DEPLOY = QUICK_DSFL


def deploy_command(out: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "fedkd", "mode=deploy", f"connection={cluster.CONNECTION}",
            *DEPLOY, *overrides, f"output_dir={out}"]  # fmt: skip


def run_deploy(state: cluster.ClusterState, out: Path, *overrides: str) -> dict:
    env = {**os.environ, "FLWR_HOME": str(state.flwr_home)}
    proc = subprocess.run(
        deploy_command(out, *overrides), env=env, capture_output=True, text=True, timeout=600,
        cwd=out.parent,
    )  # fmt: skip
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    assert (out / "summary.json").is_file(), log
    return json.loads((out / "summary.json").read_text())


LATENCY = 0.05  # seconds the coordinator's link delays each direction

# the fault test's federation: one more node, whose client lies in every round it answers
FAULT_NODES = NUM_NODES + 1
LIAR = FAULT_NODES - 1
FAULTS = [f"clients.num_clients={FAULT_NODES}", "algorithm.combine=median",
          "attack=sharpened", f"attack.clients=[{LIAR}]"]  # fmt: skip


@pytest.fixture
def plain_cluster(tmp_path):
    state = cluster.up(tmp_path / "cluster", FAULT_NODES, tls=False)
    yield state
    cluster.down(Path(state.workdir))


@pytest.fixture
def tls_cluster(tmp_path):
    state = cluster.up(tmp_path / "cluster", NUM_NODES, tls=True)
    yield state
    cluster.down(Path(state.workdir))


@pytest.fixture
def flower_executor_cluster(tmp_path):
    # Flower's own executor: a flwr-clientapp process per message (fedkd-node in the others)
    state = cluster.up(tmp_path / "cluster", NUM_NODES, tls=False, executor="flower")
    yield state
    cluster.down(Path(state.workdir))


@pytest.fixture
def netns_cluster(tmp_path):
    if why := netlab.namespaces_available():
        pytest.skip(why)  # CI runs as root: it runs there
    state = cluster.up(tmp_path / "cluster", NUM_NODES, tls=True, netns=True, delay=LATENCY)
    yield state
    cluster.down(Path(state.workdir))
    assert not set(state.namespaces) & set(_namespaces()), "namespaces left behind"


def test_tls_deployment_learns_matches_simulation_and_refuses_strangers(
    tls_cluster, tmp_path, dsfl_run
):
    """One deploy run (each costs minutes here) checks learning, parity with the simulation
    engine and node authentication; the plaintext path is the dead-node test's."""
    state = tls_cluster
    # a node whose key was never registered, and a plaintext node: both must be refused
    stranger_key, _ = cluster.generate_node_key(state.certs, "stranger")
    config = "partition-id=0 num-partitions=3 client-id={}"
    stranger = cluster.start_supernode(state, 90, config.format(90), stranger_key)
    cluster.start_supernode(state, 91, config.format(91), insecure=True)
    summary = run_deploy(state, tmp_path / "tls")
    assert summary["status"] == "completed" and summary["rounds"] == 3
    assert summary["final_global_accuracy"] >= 0.80
    # only the three registered TLS nodes ever took part, each with its own student
    assert {c["client_id"] for c in summary["clients"]} == {0, 1, 2}
    assert len({c["architecture"] for c in summary["clients"]}) == NUM_NODES
    assert stranger.wait(timeout=60) == 1  # its log says "Exit Code: 305"; the status is 1
    stranger_log = (Path(state.workdir) / "supernode-90" / "supernode.log").read_text()
    assert "Failed to activate SuperNode" in stranger_log and "Exit Code: 305" in stranger_log
    # the plaintext node cannot even complete a connection (it keeps retrying until stopped)
    plain_log = (Path(state.workdir) / "supernode-91" / "supernode.log").read_text()
    assert "Connection attempt failed" in plain_log
    # the same config in Flower's simulation engine learns the same
    sim_summary = json.loads((dsfl_run / "summary.json").read_text())
    assert abs(sim_summary["final_global_accuracy"] - summary["final_global_accuracy"]) <= 0.01
    # one exchange per round (plus one describe at the start): rounds are recorded with times
    assert all(r.round_seconds > 0 for r in read_metrics(tmp_path / "tls"))
    # and the same bytes cross the wire, client by client and round by round
    assert _bytes_by_client(tmp_path / "tls") == _bytes_by_client(dsfl_run)


@pytest.mark.slow  # 1-4 min: Flower's SuperNode polls for each message's process every 3 s
def test_flowers_own_executor_runs_the_same_deployment(flower_executor_cluster, tmp_path, dsfl_run):
    summary = run_deploy(flower_executor_cluster, tmp_path / "flower")
    assert summary["status"] == "completed" and summary["rounds"] == 3
    sim_summary = json.loads((dsfl_run / "summary.json").read_text())
    assert abs(sim_summary["final_global_accuracy"] - summary["final_global_accuracy"]) <= 0.01
    assert _bytes_by_client(tmp_path / "flower") == _bytes_by_client(dsfl_run)
    assert flower_executor_cluster.executor_pids == {}  # no fedkd-node: Flower ran the apps


def _bytes_by_client(run: Path) -> list[dict[int, tuple[int, int]]]:
    return [
        {c["client_id"]: (c["uplink_bytes"], c["downlink_bytes"]) for c in r.clients}
        for r in read_metrics(run)
    ]


def test_dead_node_does_not_hang_the_run_a_restarted_one_continues_and_a_liar_is_outvoted(
    plain_cluster, tmp_path, user_project
):
    """Run from a user project whose own model class some clients and the global model use:
    the class reaches the SuperNodes in the app bundle, as Flower ships an app. One SuperNode
    dies and comes back (with its state-dir: it continues from its student), another lies."""
    state, out = plain_cluster, tmp_path / "faults"
    env = {**os.environ, "FLWR_HOME": str(state.flwr_home)}
    run = subprocess.Popen(
        # short enough that the dead node costs little, long enough for a busy machine
        deploy_command(out, "num_rounds=5", "round_timeout=45", *FAULTS, *USER_MODEL_OVERRIDES),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=user_project,
    )  # fmt: skip
    try:
        _wait_for_rounds(out, 1, run)
        cluster.stop_pid(state.supernode_pids[2])  # client 2 dies after round 1
        # ... and comes back, its disk intact, after round 2: a SuperNode starting on a loaded
        # machine can take longer than a round, and it must be back by the last one
        _wait_for_rounds(out, 2, run)
        config = cluster.node_config_for(2, FAULT_NODES, None, cluster.node_state_dir(state, 2))
        cluster.start_supernode(state, 2, config)
        output, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    rounds = read_metrics(out)
    assert summary["status"] == "completed" and summary["rounds"] == 5
    # recorded as missing (no answer), failed (the SuperLink: "Node Unavailable"), or offline
    # (the SuperLink already knew it was gone when the round was sampled)
    lost = [r for r in rounds if 2 in r.missing or 2 in r.failed or 2 in r.offline]
    assert lost, "the dead node was never recorded as missing"
    assert summary["missing_by_client"].get("2")
    assert all(r.num_accepted >= 2 for r in rounds)  # the others carried on
    assert 2 in {c["client_id"] for c in rounds[-1].clients}, "node 2 did not rejoin"
    # it trained from its own student of round 1, not from scratch, and nobody saw a restart
    back = next(c for r in rounds[3:] for c in r.clients if c["client_id"] == 2)
    assert back["student-round"] >= 1
    assert not any(r.restarted for r in rounds)
    # the liar's well-formed replies were accepted every round, and out-voted by the median
    assert all(LIAR in {c["client_id"] for c in r.clients} for r in rounds)
    assert summary["final_global_accuracy"] >= 0.80
    archs = {c["client_id"]: c["architecture"] for c in summary["clients"]}
    assert archs == {0: "cnn", 1: "usermodels.Perceptron", 2: "cnn", 3: "usermodels.Perceptron"}
    assert json.loads((out / "config.json").read_text())["model"]["architecture"] == (
        "usermodels.Perceptron"
    )


def _wait_for_rounds(out: Path, num: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "metrics.jsonl").exists() and len(read_metrics(out)) >= num:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.stdout.read()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"no {num} rounds after {timeout}s")


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def test_deployment_across_namespaces_with_latency_and_tls_for_the_coordinator(
    netns_cluster, tmp_path
):
    """The SuperLink and each SuperNode in a network namespace of its own, on a bridge; the
    coordinator's link delays every byte 50 ms each way; nodes verify the SuperLink's
    certificate for the coordinator's address; each node's ClientApps run in fedkd-node."""
    state = netns_cluster
    assert state.address == netlab.COORDINATOR and state.delay == LATENCY
    assert len(state.node_netns) == NUM_NODES and set(state.namespaces) <= set(_namespaces())
    # flwr (here, the user's machine) and the nodes reach the coordinator at its address, and
    # the SuperLink's certificate is issued for it
    assert f'"{netlab.COORDINATOR}:{state.port}"' in (state.flwr_home / "config.toml").read_text()
    cert = x509.load_pem_x509_certificate((state.certs / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address(netlab.COORDINATOR) in names.get_values_for_type(x509.IPAddress)
    summary = run_deploy(state, tmp_path / "netns")
    assert summary["status"] == "completed" and summary["rounds"] == 3
    assert summary["final_global_accuracy"] >= 0.80
    assert {c["client_id"] for c in summary["clients"]} == set(range(NUM_NODES))
    # each node ran every message (describe + 3 rounds) in one long-lived worker process
    for i in range(NUM_NODES):
        log = (Path(state.workdir) / f"supernode-{i}" / "node.log").read_text()
        done = re.findall(r"task \d+ ok in worker (\d+)", log)
        assert len(done) == 4 and len(set(done)) == 1, log[-2000:]
