"""Several machines on one Linux host: network namespaces on a bridge, and a link with latency.

For trying a deployment the way a multi-machine federation runs it (``fedkd-cluster up
--netns``): the SuperLink in a namespace of its own (the coordinator, at ``COORDINATOR``), each
SuperNode in its own namespace with its own address, all on a virtual bridge that this host's
namespace joins too (at ``HOST``: the user's machine, where ``flwr`` and the launcher run).
Needs root and the ``ip`` tool (iproute2).

The coordinator's link gets latency from :class:`DelayProxy`, a TCP proxy that holds every
chunk of data ``delay`` seconds in each direction (this kernel has no ``tc netem``): it listens
on the coordinator's address and forwards to the SuperLink, which only listens inside the
coordinator's namespace, so everything that reaches the SuperLink crosses the slow link. TLS
passes through it untouched: certificates are issued for the coordinator's address.

    python -m fedkd.netlab proxy --listen 10.77.0.1:9092 --target 127.0.0.1:9093 --delay 0.05
"""

import argparse
import asyncio
import contextlib
import ipaddress
import os
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

SUBNET = ipaddress.ip_network("10.77.0.0/24")
COORDINATOR = "10.77.0.1"  # the SuperLink's namespace
HOST = "10.77.0.254"  # this host's namespace, on the bridge
FIRST_NODE_HOST = 10  # SuperNode i at 10.77.0.(10 + i)
CHUNK = 65536


def node_address(index: int) -> str:
    return str(SUBNET.network_address + FIRST_NODE_HOST + index)


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


@dataclass
class Lab:
    """A bridge and the namespaces on it; :meth:`destroy` removes them all."""

    tag: str  # short, unique: names the bridge and namespaces
    namespaces: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"fk{self.tag}br"

    @classmethod
    def create(cls, tag: str | None = None) -> "Lab":
        """A bridge with this host's namespace on it at ``HOST``."""
        lab = cls(tag or uuid.uuid4().hex[:6])
        _ip("link", "add", lab.bridge, "type", "bridge")
        try:
            _ip("addr", "add", f"{HOST}/{SUBNET.prefixlen}", "dev", lab.bridge)
            _ip("link", "set", lab.bridge, "up")
        except BaseException:
            lab.destroy()
            raise
        return lab

    def add_namespace(self, name: str, address: str) -> str:
        """A namespace on the bridge at ``address``; returns its full name."""
        ns = f"fk{self.tag}-{name}"
        outer, inner = (
            f"fk{self.tag}{len(self.namespaces)}o",
            f"fk{self.tag}{len(self.namespaces)}i",
        )
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        _ip("-n", ns, "addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def destroy(self) -> None:
        """Remove the namespaces (their veth pairs go with them) and the bridge."""
        for ns in self.namespaces:
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", ns)
        self.namespaces.clear()
        with contextlib.suppress(RuntimeError):
            _ip("link", "del", self.bridge)


def in_namespace(netns: str | None, command: Sequence[str]) -> list[str]:
    """``command`` run inside ``netns`` (as is without one)."""
    return list(command) if netns is None else ["ip", "netns", "exec", netns, *command]


def namespaces_available() -> str | None:
    """Why namespaces cannot be made here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        subprocess.run(["ip", "-V"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "the 'ip' tool (iproute2) is not installed"
    return None


class DelayProxy:
    """Forwards TCP connections from ``listen`` to ``target``, each chunk ``delay`` seconds
    late in each direction (order kept, throughput not limited)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], delay: float) -> None:
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        self.listen, self.target, self.delay = listen, target, delay

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, chunk = await queue.get()
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    break
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while chunk := await reader.read(CHUNK):
                queue.put_nowait((time.monotonic() + self.delay, chunk))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait((time.monotonic() + self.delay, b""))
            with contextlib.suppress(ConnectionError, OSError):
                await sender
                writer.write_eof()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        for w in (writer, up_writer):
            w.close()

    async def run(self) -> None:
        server = await asyncio.start_server(self._serve, *self.listen)
        async with server:
            await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fedkd.netlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    proxy = sub.add_parser("proxy", help="a TCP proxy that delays both directions")
    proxy.add_argument("--listen", type=_address, required=True, help="HOST:PORT")
    proxy.add_argument("--target", type=_address, required=True, help="HOST:PORT")
    proxy.add_argument("--delay", type=float, default=0.05, help="seconds each way")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(DelayProxy(args.listen, args.target, args.delay).run())


if __name__ == "__main__":
    main()
