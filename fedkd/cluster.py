"""``fedkd-cluster``: a real Flower SuperLink and N SuperNodes on 127.0.0.1, for trying deployment.

    fedkd-cluster up   --workdir W --nodes 3 [--tls] [--data-root DIR] [-- overrides]
    fedkd-cluster down --workdir W

``up`` starts ``flower-superlink`` and ``flower-supernode`` processes (distinct ports), writes a
Flower connection named ``local-cluster`` into ``W/flwr-home/config.toml`` and the PIDs into
``W/cluster.json``; ``down`` stops exactly those PIDs. With ``--tls`` it creates a test CA,
enables SuperNode authentication and registers each node's public key. Nodes get
``partition-id``/``num-partitions``, or ``data-dir=<data-root>/client-<i>`` with ``--data-root``
(see ``fedkd-export-partitions``), and ``state-dir=W/supernode-<i>/state``: a node restarted
with the same node config continues from its student instead of from scratch. Then:

    FLWR_HOME=W/flwr-home fedkd mode=deploy connection=local-cluster ...

No Flower import here: only Flower's own executables, so this is what a user would type.
"""

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedkd.certs import generate_node_key, generate_tls
from fedkd.launch import LaunchError, flower_bin, flower_env, free_port, wait_healthy

CONNECTION = "local-cluster"
STATE_FILE = "cluster.json"
NODE_START_TIMEOUT = 30.0


@dataclass
class ClusterState:
    """What ``up`` started, so ``down`` (possibly another process) can stop it by PID."""

    workdir: str
    port: int
    tls: bool
    superlink_pid: int
    supernode_pids: dict[int, int] = field(default_factory=dict)  # node index -> pid
    supernode_ports: dict[int, int] = field(default_factory=dict)

    @property
    def flwr_home(self) -> Path:
        return Path(self.workdir) / "flwr-home"

    @property
    def certs(self) -> Path:
        return Path(self.workdir) / "certs"

    def save(self) -> None:
        (Path(self.workdir) / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, workdir: Path) -> "ClusterState":
        data = json.loads((workdir / STATE_FILE).read_text())
        for key in ("supernode_pids", "supernode_ports"):
            data[key] = {int(k): v for k, v in data[key].items()}
        return cls(**data)


def _spawn(command: Sequence[str], log_file: Path, env: dict[str, str]) -> subprocess.Popen[Any]:
    with log_file.open("ab") as sink:
        return subprocess.Popen(
            list(command),
            env=env,
            cwd=log_file.parent,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with its children
        )


def write_connection(state: ClusterState) -> Path:
    """The ``local-cluster`` connection in ``W/flwr-home/config.toml``."""
    state.flwr_home.mkdir(parents=True, exist_ok=True)
    security = f'root-certificates = "{state.certs / "ca.crt"}"' if state.tls else "insecure = true"
    path = state.flwr_home / "config.toml"
    path.write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{state.port}"\n{security}\n'
    )
    return path


def start_superlink(workdir: Path, tls: bool) -> ClusterState:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [flower_bin("flower-superlink"), "--port", str(port),
               "--disable-runtime-dependency-installation"]  # fmt: skip
    if tls:
        certs = workdir / "certs"
        generate_tls(certs, ["127.0.0.1", "localhost"])
        command += [
            "--ssl-ca-certfile", str(certs / "ca.crt"),
            "--ssl-certfile", str(certs / "server.pem"),
            "--ssl-keyfile", str(certs / "server.key"),
            "--enable-supernode-auth",
        ]  # fmt: skip
    else:
        command.append("--insecure")
    link_home = workdir / "superlink"
    link_home.mkdir(parents=True, exist_ok=True)
    log_file = link_home / "superlink.log"
    proc = _spawn(command, log_file, flower_env(FLWR_HOME=str(link_home)))
    state = ClusterState(str(workdir), port, tls, proc.pid)
    state.save()
    write_connection(state)
    if tls:
        # The health endpoint is plain HTTP only without TLS: wait for the port instead.
        _wait_port(port, proc, log_file)
    else:
        wait_healthy(port, proc, NODE_START_TIMEOUT, log_file)
    return state


def _wait_port(port: int, proc: subprocess.Popen[Any], log_file: Path) -> None:
    deadline = time.monotonic() + NODE_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LaunchError(f"process exited with code {proc.returncode}; see {log_file}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise LaunchError(f"nothing listens on port {port} after {NODE_START_TIMEOUT:.0f}s")


def register_node_key(state: ClusterState, index: int) -> tuple[Path, Path]:
    """Create SuperNode ``index``'s key pair and register its public key with the SuperLink."""
    private, public = generate_node_key(state.certs, f"supernode_{index}")
    out = subprocess.run(
        [flower_bin("flwr"), "supernode", "register", str(public), CONNECTION],
        env=flower_env(FLWR_HOME=str(state.flwr_home)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0 or "registered" not in out.stdout:
        raise LaunchError(f"could not register {public}: {out.stdout}{out.stderr}")
    return private, public


def start_supernode(
    state: ClusterState,
    index: int,
    node_config: str,
    private_key: Path | None = None,
    insecure: bool | None = None,
) -> subprocess.Popen[Any]:
    """Start SuperNode ``index`` (its own port and FLWR_HOME) and record its PID.

    ``insecure`` defaults to the cluster's mode; pass ``True`` on a TLS cluster to try a
    plaintext node (it must be refused).
    """
    port = free_port()
    home = Path(state.workdir) / f"supernode-{index}"
    home.mkdir(parents=True, exist_ok=True)
    command = [
        flower_bin("flower-supernode"),
        "--superlink", f"127.0.0.1:{state.port}",
        "--port", str(port),
        "--node-config", node_config,
    ]  # fmt: skip
    plaintext = (not state.tls) if insecure is None else insecure
    if plaintext:
        command.append("--insecure")
    else:
        command += ["--root-certificates", str(state.certs / "ca.crt")]
        if private_key is not None:
            command += ["--auth-supernode-private-key", str(private_key)]
    proc = _spawn(command, home / "supernode.log", flower_env(FLWR_HOME=str(home)))
    state.supernode_pids[index] = proc.pid
    state.supernode_ports[index] = port
    state.save()
    return proc


def node_config_for(
    index: int, num_nodes: int, data_root: Path | None, state_dir: Path | None = None
) -> str:
    """SuperNode ``index``'s ``--node-config``: its data (its own files under ``data_root``, or a
    demo partition) and, with ``state_dir``, where it keeps its students across restarts."""
    if data_root is not None:
        config = f'data-dir="{data_root / f"client-{index}"}" client-id={index}'
    else:
        config = f"partition-id={index} num-partitions={num_nodes}"
    return config if state_dir is None else f'{config} state-dir="{state_dir}"'


def node_state_dir(state: ClusterState, index: int) -> Path:
    """Where the cluster's SuperNode ``index`` keeps its students (survives its restarts)."""
    return Path(state.workdir) / f"supernode-{index}" / "state"


def up(workdir: Path, num_nodes: int, tls: bool, data_root: Path | None = None) -> ClusterState:
    """Start a SuperLink and ``num_nodes`` SuperNodes; stop everything if any step fails."""
    state = start_superlink(workdir, tls)
    try:
        for i in range(num_nodes):
            key = register_node_key(state, i)[0] if tls else None
            config = node_config_for(i, num_nodes, data_root, node_state_dir(state, i))
            start_supernode(state, i, config, key)
    except BaseException:
        down(workdir)
        raise
    return state


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        _reap(pid)
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def down(workdir: Path) -> None:
    """Stop every process ``up`` recorded in ``workdir``: SuperNodes first, then the SuperLink."""
    state = ClusterState.load(workdir)
    for pid in state.supernode_pids.values():
        stop_pid(pid)
    stop_pid(state.superlink_pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start a SuperLink and N SuperNodes on 127.0.0.1")
    p_up.add_argument("--workdir", type=Path, required=True)
    p_up.add_argument("--nodes", type=int, default=3)
    p_up.add_argument("--tls", action="store_true", help="TLS + SuperNode authentication")
    p_up.add_argument("--data-root", type=Path, help="node i serves <data-root>/client-<i>")
    p_down = sub.add_parser("down", help="stop the processes started by `up`")
    p_down.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "up":
        state = up(args.workdir.resolve(), args.nodes, args.tls, args.data_root)
        print(
            f"SuperLink on 127.0.0.1:{state.port} (pid {state.superlink_pid}), SuperNodes "
            f"{state.supernode_pids}.\nRun: FLWR_HOME={state.flwr_home} fedkd mode=deploy "
            f"connection={CONNECTION} clients.num_clients={args.nodes} ...\n"
            f"Stop: fedkd-cluster down --workdir {args.workdir}"
        )
    else:
        down(args.workdir.resolve())
        print("stopped")


if __name__ == "__main__":
    main()
