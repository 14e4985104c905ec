"""The lab's TLS front lets go of its upstream connection when a client resets.

A prober that aborts its connection (RST) used to leave the front's upstream connection open
until the backend's keep-alive ran out (75 s for aiohttp): ~1,450 idle connections and 680 MB
in `otelprobe lab serve` during a 200 probes/s soak.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time

from otelprobe.lab.certs import LabCA
from otelprobe.lab.servers.http import HTTPFaultServer
from otelprobe.lab.servers.tls import TLSFront

_ESTABLISHED = "01"


def connections_to(port: int) -> int:
    """Established IPv4 TCP connections whose remote port is `port` (from /proc/net/tcp)."""
    count = 0
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and fields[3] == _ESTABLISHED:
                count += 1
    return count


def request_then(front_port: int, context: ssl.SSLContext, ending: str) -> bytes:
    raw = socket.create_connection(("127.0.0.1", front_port), timeout=5)
    conn = context.wrap_socket(raw, server_hostname="localhost")
    conn.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    answer = conn.recv(65536)
    if ending == "reset":
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    return answer


async def wait_until_no_connections(port: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while (left := connections_to(port)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return left


async def test_a_client_reset_closes_the_upstream_connection() -> None:
    ca = LabCA()
    async with HTTPFaultServer() as upstream:
        front = TLSFront(ca, upstream=("127.0.0.1", upstream.port))
        await front.start()
        try:
            for ending in ("close", "reset"):
                for _ in range(10):
                    answer = await asyncio.to_thread(request_then, front.port, ca.client_context(), ending)
                    assert answer.startswith(b"HTTP/1.1 200")
                assert await wait_until_no_connections(upstream.port, 5.0) == 0, ending
        finally:
            await front.aclose()
