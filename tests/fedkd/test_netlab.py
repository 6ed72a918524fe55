"""The delaying TCP proxy (fedkd.netlab) on 127.0.0.1, and the network lab's guards."""

import asyncio
import os
import socket
import threading
import time

import pytest

from fedkd import netlab
from fedkd.cluster import up
from fedkd.launch import free_port

DELAY = 0.05


def _echo_server() -> tuple[socket.socket, int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


@pytest.fixture
def proxy_port():
    server, target = _echo_server()
    port = free_port()
    proxy = netlab.DelayProxy(("127.0.0.1", port), ("127.0.0.1", target), DELAY)
    loop = asyncio.new_event_loop()
    task = loop.create_task(proxy.run())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until it listens
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.02)
    yield port
    loop.call_soon_threadsafe(task.cancel)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    server.close()


def _round_trip(port: int, payload: bytes) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port)) as conn:
        start = time.monotonic()
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        return received, time.monotonic() - start


def test_proxy_passes_bytes_through_in_order_and_never_early(proxy_port):
    payload = os.urandom(3_000_000)  # many chunks each way
    received, seconds = _round_trip(proxy_port, payload)
    assert received == payload
    # each direction holds data back at least DELAY: a lower bound, which cannot flake
    assert seconds >= 2 * DELAY


def test_proxy_serves_several_connections_at_once(proxy_port):
    results: list[bytes] = []

    def one(i: int) -> None:
        results.append(_round_trip(proxy_port, bytes([i]) * 10_000)[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == sorted(bytes([i]) * 10_000 for i in range(5))


def test_delay_rejects_negative():
    with pytest.raises(ValueError, match="delay"):
        netlab.DelayProxy(("127.0.0.1", 1), ("127.0.0.1", 2), -0.1)


def test_delay_without_namespaces_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match="netns"):
        up(tmp_path / "cluster", 2, tls=False, delay=0.05)
    assert not (tmp_path / "cluster").exists()


def test_node_addresses_are_distinct_and_not_the_coordinator():
    addresses = {netlab.node_address(i) for i in range(100)}
    assert len(addresses) == 100
    assert netlab.COORDINATOR not in addresses and netlab.HOST not in addresses
