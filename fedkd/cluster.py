"""``fedkd-cluster``: a real Flower SuperLink and N SuperNodes on this machine, to try deployment.

    fedkd-cluster up   --workdir W --nodes 3 [--tls] [--data-root DIR] [--executor fedkd|flower]
                       [--netns [--delay SECONDS]] [--poll-interval SECONDS]
    fedkd-cluster down --workdir W

``up`` starts ``flower-superlink`` and SuperNode processes (distinct ports), writes a
Flower connection named ``local-cluster`` into ``W/flwr-home/config.toml`` and the PIDs into
``W/cluster.json``; ``down`` stops exactly those PIDs. With ``--tls`` it creates a test CA,
enables SuperNode authentication and registers each node's public key. Nodes get
``partition-id``/``num-partitions``, or ``data-dir=<data-root>/client-<i>`` with ``--data-root``
(see ``fedkd-export-partitions``), and ``state-dir=W/supernode-<i>/state``: a node restarted
with the same node config continues from its student instead of from scratch. Each SuperNode
runs in process isolation with a ``fedkd-node`` beside it (:mod:`fedkd.node`; ``--executor
flower``: Flower's default, a new process per message). With ``--netns`` (root) the SuperLink
and every SuperNode get a network namespace and an address of their own on a virtual bridge,
and ``--delay`` adds latency to the SuperLink's link (:mod:`fedkd.netlab`). The SuperNodes are
``fedkd-supernode`` (:mod:`fedkd.supernode`: Flower's, asking for messages every 0.5 s instead
of every 3 s when idle; ``--poll-interval 0``: Flower's ``flower-supernode`` as it is). Then:

    FLWR_HOME=W/flwr-home fedkd mode=deploy connection=local-cluster ...

No Flower import here: only executables (Flower's, fedkd-supernode, fedkd-node), so this is what a
user would type.
"""

import argparse
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedkd import netlab
from fedkd.certs import generate_node_key, generate_tls
from fedkd.launch import LaunchError, flower_bin, flower_env, free_port
from fedkd.supernode import POLL_INTERVAL

CONNECTION = "local-cluster"
STATE_FILE = "cluster.json"
NODE_START_TIMEOUT = 30.0
# Who runs a SuperNode's ClientApps: "fedkd", a long-lived fedkd-node beside a SuperNode in
# process isolation (fedkd.node); "flower", Flower's default of a new process per message.
EXECUTORS = ("fedkd", "flower")


@dataclass
class ClusterState:
    """What ``up`` started, so ``down`` (possibly another process) can stop it by PID."""

    workdir: str
    port: int
    tls: bool
    superlink_pid: int
    supernode_pids: dict[int, int] = field(default_factory=dict)  # node index -> pid
    supernode_ports: dict[int, int] = field(default_factory=dict)
    executor: str = "fedkd"  # one of EXECUTORS
    executor_pids: dict[int, int] = field(default_factory=dict)  # node index -> fedkd-node pid
    node_threads: int = 1  # CPU threads per node: the nodes share this machine's cores
    address: str = "127.0.0.1"  # where nodes and flwr reach the SuperLink (with ``port``)
    lab_tag: str | None = None  # with network namespaces (fedkd.netlab): the lab's tag,
    namespaces: list[str] = field(default_factory=list)  # its namespaces,
    node_netns: dict[int, str] = field(default_factory=dict)  # each node's namespace,
    proxy_pid: int | None = None  # the proxy in front of the SuperLink
    delay: float = 0.0  # and the seconds it delays each direction
    # the SuperNodes' longest wait between asks for a message (fedkd-supernode); None: Flower's
    # flower-supernode as it is (3 s when idle)
    poll_interval: float | None = POLL_INTERVAL

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
        for key in ("supernode_pids", "supernode_ports", "executor_pids", "node_netns"):
            data[key] = {int(k): v for k, v in data.get(key, {}).items()}
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
        f'[superlink.{CONNECTION}]\naddress = "{state.address}:{state.port}"\n{security}\n'
    )
    return path


def start_superlink(
    workdir: Path,
    tls: bool,
    executor: str = "fedkd",
    lab: netlab.Lab | None = None,
    delay: float = 0.0,
) -> ClusterState:
    """Start the SuperLink: on 127.0.0.1, or with ``lab`` in a namespace of its own at
    ``netlab.COORDINATOR`` behind a proxy that delays its traffic ``delay`` s each way."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    workdir.mkdir(parents=True, exist_ok=True)
    link_netns = lab.add_namespace("link", netlab.COORDINATOR) if lab else None
    address = netlab.COORDINATOR if lab else "127.0.0.1"
    port = free_port()
    link_port = free_port() if lab else port  # behind the proxy, inside its namespace
    command = [flower_bin("flower-superlink"), "--port", str(link_port),
               "--disable-runtime-dependency-installation"]  # fmt: skip
    if tls:
        certs = workdir / "certs"
        # for the address nodes reach it at, and for 127.0.0.1: Flower's SuperLink starts its
        # own flower-superexec, which connects to it there over TLS
        generate_tls(certs, [address, "127.0.0.1"] if lab else [address, "localhost"])
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
    env = flower_env(FLWR_HOME=str(link_home))
    proc = _spawn(netlab.in_namespace(link_netns, command), log_file, env)
    state = ClusterState(str(workdir), port, tls, proc.pid, executor=executor, address=address)
    if lab:
        state.lab_tag, state.namespaces, state.delay = lab.tag, lab.namespaces, delay
        proxy = [sys.executable, "-m", "fedkd.netlab", "proxy", "--listen", f"{address}:{port}",
                 "--target", f"127.0.0.1:{link_port}", "--delay", str(delay)]  # fmt: skip
        proxy_log = link_home / "proxy.log"
        state.proxy_pid = _spawn(netlab.in_namespace(link_netns, proxy), proxy_log, env).pid
    state.save()
    write_connection(state)
    _wait_ready(state, proc, log_file)
    return state


def _wait_ready(state: ClusterState, proc: subprocess.Popen[Any], log_file: Path) -> None:
    """Wait until the SuperLink answers where nodes reach it: its health endpoint, or with TLS
    a handshake that verifies its certificate for that address."""
    deadline = time.monotonic() + NODE_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LaunchError(
                f"flower-superlink exited with code {proc.returncode}; see {log_file}"
            )
        with contextlib.suppress(OSError):
            if state.tls:
                context = ssl.create_default_context(cafile=str(state.certs / "ca.crt"))
                with (
                    socket.create_connection((state.address, state.port), timeout=2) as sock,
                    context.wrap_socket(sock, server_hostname=state.address),
                ):
                    return
            else:
                url = f"http://{state.address}:{state.port}/health"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
        time.sleep(0.2)
    raise LaunchError(
        f"the SuperLink did not answer within {NODE_START_TIMEOUT:.0f}s; see {log_file}"
    )


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
    netns = None
    if state.lab_tag is not None:  # a namespace per node, kept across its restarts
        if index not in state.node_netns:
            lab = netlab.Lab(state.lab_tag, state.namespaces)
            state.node_netns[index] = lab.add_namespace(f"n{index}", netlab.node_address(index))
            state.save()
        netns = state.node_netns[index]
    if state.poll_interval is None:
        supernode = [flower_bin("flower-supernode")]
    else:
        supernode = [sys.executable, "-m", "fedkd.supernode",
                     "--poll-interval", str(state.poll_interval)]  # fmt: skip
    command = [
        *supernode,
        "--superlink", f"{state.address}:{state.port}",
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
    env = flower_env(FLWR_HOME=str(home))
    if state.executor == "fedkd":
        command += ["--isolation", "process"]
    proc = _spawn(netlab.in_namespace(netns, command), home / "supernode.log", env)
    state.supernode_pids[index] = proc.pid
    state.supernode_ports[index] = port
    state.save()
    if state.executor == "fedkd":  # it exits when its SuperNode does
        executor = [sys.executable, "-m", "fedkd.node", "--runtime-api-address",
                    f"127.0.0.1:{port}", "--parent-pid", str(proc.pid),
                    "--threads", str(state.node_threads)]  # fmt: skip
        executor = netlab.in_namespace(netns, executor)
        state.executor_pids[index] = _spawn(executor, home / "node.log", env).pid
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


def up(
    workdir: Path,
    num_nodes: int,
    tls: bool,
    data_root: Path | None = None,
    executor: str = "fedkd",
    netns: bool = False,
    delay: float = 0.0,
    poll_interval: float | None = POLL_INTERVAL,
) -> ClusterState:
    """Start a SuperLink and ``num_nodes`` SuperNodes; stop everything if any step fails.

    With ``netns`` each gets a network namespace of its own (``fedkd.netlab``: root only) and
    the SuperLink's link delays traffic ``delay`` seconds each way. The SuperNodes ask for
    messages at least every ``poll_interval`` seconds (``fedkd-supernode``; None: Flower's
    ``flower-supernode``, every 3 s)."""
    if poll_interval is not None and poll_interval <= 0:
        raise ValueError(f"poll_interval must be positive, got {poll_interval}")
    if not netns and delay:
        raise ValueError("delay needs netns: loopback traffic cannot be delayed")
    if netns and (why := netlab.namespaces_available()):
        raise LaunchError(f"cannot make network namespaces: {why}")
    workdir.mkdir(parents=True, exist_ok=True)
    lab = netlab.Lab.create() if netns else None
    try:
        state = start_superlink(workdir, tls, executor, lab, delay)
    except BaseException:
        if (workdir / STATE_FILE).is_file():
            down(workdir)
        if lab is not None:  # (removing what is gone already is a no-op)
            lab.destroy()
        raise
    state.node_threads = max(1, (os.cpu_count() or 1) // max(1, num_nodes))
    state.poll_interval = poll_interval
    state.save()  # the state file says what the nodes were started with, from the first one on
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
    for pid in [*state.supernode_pids.values(), *state.executor_pids.values()]:
        stop_pid(pid)
    for pid in filter(None, [state.proxy_pid, state.superlink_pid]):
        stop_pid(pid)
    if state.lab_tag is not None:
        netlab.Lab(state.lab_tag, state.namespaces).destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start a SuperLink and N SuperNodes on 127.0.0.1")
    p_up.add_argument("--workdir", type=Path, required=True)
    p_up.add_argument("--nodes", type=int, default=3)
    p_up.add_argument("--tls", action="store_true", help="TLS + SuperNode authentication")
    p_up.add_argument("--data-root", type=Path, help="node i serves <data-root>/client-<i>")
    p_up.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="fedkd",
        help="fedkd: a long-lived fedkd-node per SuperNode runs its ClientApps (default); "
        "flower: Flower's new flwr-clientapp process per message",
    )
    p_up.add_argument(
        "--netns",
        action="store_true",
        help="each process in a network namespace of its own, on a virtual bridge (root)",
    )
    p_up.add_argument(
        "--delay",
        type=float,
        default=0.0,
        help="with --netns: seconds the SuperLink's link delays traffic each way",
    )
    p_up.add_argument(
        "--poll-interval",
        type=float,
        default=POLL_INTERVAL,
        help="longest wait of an idle SuperNode between asks for a message, seconds "
        "(fedkd-supernode; 0: Flower's flower-supernode, 3 s); default %(default)s",
    )
    p_down = sub.add_parser("down", help="stop the processes started by `up`")
    p_down.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "up":
        state = up(args.workdir.resolve(), args.nodes, args.tls, args.data_root, args.executor,
                   args.netns, args.delay, args.poll_interval or None)  # fmt: skip
        print(
            f"SuperLink on {state.address}:{state.port} (pid {state.superlink_pid}), SuperNodes "
            f"{state.supernode_pids}.\nRun: FLWR_HOME={state.flwr_home} fedkd mode=deploy "
            f"connection={CONNECTION} clients.num_clients={args.nodes} ...\n"
            f"Stop: fedkd-cluster down --workdir {args.workdir}"
        )
    else:
        down(args.workdir.resolve())
        print("stopped")


if __name__ == "__main__":
    main()
