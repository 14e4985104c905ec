"""Raw-socket clients that measure what a lab fault actually injected, independent of the prober:
connect time, TLS connect-to-ServerHello, HTTP time to first byte and transfer time.

The lab's tests use them to check each fault, and `measure_accuracy` reports achieved vs requested
delay (the base of a later `otelprobe lab verify`). They sit beside the servers, not in probes/.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import statistics
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

_READ: Final = 65536


@dataclass(frozen=True, slots=True)
class HTTPTiming:
    """One raw HTTP/1.1 GET: phase durations in seconds, and what came back."""

    connect_s: float
    ttfb_s: float
    """Last request byte written -> first response byte read."""
    transfer_s: float
    """First response byte -> last byte read."""
    status: int | None
    headers: dict[str, str]
    body: bytes
    outcome: Literal["complete", "reset", "incomplete"]
    """complete: the announced body arrived; reset: ECONNRESET before it did; incomplete: EOF early."""
    data_segments_in: int | None = None
    """TCP segments with payload the client received (Linux TCP_INFO); None over TLS or elsewhere.
    Tells headers-first (head in its own segment) from coalesced writes, LAB-NOTES pitfall 4."""


_TCPI_DATA_SEGS_IN: Final = 152
"""Offset of tcpi_data_segs_in in Linux's struct tcp_info (stable since kernel 4.6)."""


def data_segments_in(sock: socket.socket) -> int | None:
    """Payload-carrying TCP segments received on `sock` so far, or None where TCP_INFO lacks it."""
    if not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:  # already closed by the transport, e.g. after a reset
        return None
    if len(info) < _TCPI_DATA_SEGS_IN + 4:
        return None
    return int(struct.unpack_from("I", info, _TCPI_DATA_SEGS_IN)[0])


def _now() -> float:
    return time.perf_counter()


async def connect_time(host: str, port: int, timeout_s: float = 5.0) -> float:
    """Seconds for a TCP connect to complete.

    Raises:
        ConnectionRefusedError: RST in answer to the SYN.
        TimeoutError: no SYN-ACK within `timeout_s`.
    """
    start = _now()
    async with asyncio.timeout(timeout_s):
        _, writer = await asyncio.open_connection(host, port)
    elapsed = _now() - start
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return elapsed


def _parse_head(head: bytes) -> tuple[int | None, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[0].startswith("HTTP/") and parts[1].isdigit() else None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def http_get(
    host: str,
    port: int,
    target: str = "/",
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout_s: float = 10.0,
) -> HTTPTiming:
    """One GET over a fresh connection (Connection: close), timed at the socket.

    Raises:
        TimeoutError: the exchange took longer than `timeout_s`.
    """
    async with asyncio.timeout(timeout_s):
        start = _now()
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl_context, server_hostname=server_hostname if ssl_context else None
        )
        try:
            connected = _now()
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            sent = _now()
            timing = await _read_response(reader, connected - start, sent)
            if ssl_context is None:
                timing = replace(timing, data_segments_in=data_segments_in(writer.get_extra_info("socket")))
            return timing
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader, connect_s: float, sent: float) -> HTTPTiming:
    data, first, last = b"", 0.0, 0.0
    outcome: Literal["complete", "reset", "incomplete"] = "incomplete"
    status: int | None = None
    headers: dict[str, str] = {}
    try:
        while chunk := await reader.read(_READ):
            last = _now()
            first = first or last
            data += chunk
            if status is None and b"\r\n\r\n" in data:
                status, headers = _parse_head(data.split(b"\r\n\r\n", 1)[0])
            if status is not None and "content-length" in headers:
                if len(data.split(b"\r\n\r\n", 1)[1]) >= int(headers["content-length"]):
                    outcome = "complete"
                    break
        else:
            if status is not None and "content-length" not in headers:
                outcome = "complete"  # a close-delimited body ends at EOF
    except (ConnectionResetError, ssl.SSLError):
        outcome = "reset"
    body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    return HTTPTiming(
        connect_s=connect_s,
        ttfb_s=(first - sent) if first else float("nan"),
        transfer_s=(last - first) if first else float("nan"),
        status=status,
        headers=headers,
        body=body,
        outcome=outcome,
    )


def _client_hello(server_hostname: str) -> bytes:
    """The bytes of a real ClientHello, made by an in-memory handshake that is then dropped."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def server_hello_delay(
    host: str, port: int, server_hostname: str = "localhost", timeout_s: float = 10.0
) -> float:
    """Seconds from TCP connect done to the first byte of the server's ServerHello.

    The ClientHello goes out right after connect, so a `tls_delay` fault shows here in full.
    """
    hello = _client_hello(server_hostname)
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            connected = _now()
            writer.write(hello)
            first = await reader.read(1)
            answered = _now()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    if first != b"\x16":  # a TLS handshake record
        raise ssl.SSLError(f"expected a TLS handshake record, got {first!r}")
    return answered - connected


@dataclass(frozen=True, slots=True)
class Accuracy:
    """Achieved vs requested delay over several samples (seconds)."""

    requested_s: float
    samples: int
    median_s: float
    median_error_s: float
    p90_error_s: float
    max_error_s: float


def accuracy(requested_s: float, measured_s: Sequence[float]) -> Accuracy:
    """Summarise measured delays against the requested one (errors = measured - requested)."""
    errors = sorted(m - requested_s for m in measured_s)
    if not errors:
        raise ValueError("no samples")
    p90 = errors[min(len(errors) - 1, round(0.9 * (len(errors) - 1)))]
    return Accuracy(
        requested_s=requested_s,
        samples=len(errors),
        median_s=statistics.median(measured_s),
        median_error_s=statistics.median(errors),
        p90_error_s=p90,
        max_error_s=errors[-1],
    )


async def measure_accuracy(
    kind: Literal["ttfb_delay", "tls_delay"], requested_s: float, samples: int = 20
) -> Accuracy:
    """Start the lab server for `kind` on loopback, inject `requested_s`, measure `samples` times.

    Args:
        kind: ttfb_delay (HTTP server, request -> first byte) or tls_delay (TLS front,
            connect -> ServerHello).
        requested_s: the delay to inject.
        samples: sequential samples (bounded: at most 1000).
    """
    # Local imports: the servers pull in aiohttp and cryptography, the clients above do not.
    from otelprobe.lab.certs import LabCA
    from otelprobe.lab.faults import TLSDelay, TTFBDelay
    from otelprobe.lab.servers.http import HTTPFaultServer
    from otelprobe.lab.servers.tls import TLSFront

    samples = max(1, min(samples, 1000))
    measured: list[float] = []
    if kind == "ttfb_delay":
        async with HTTPFaultServer() as server:
            server.apply(TTFBDelay(delay_s=requested_s))
            for _ in range(samples):
                measured.append((await http_get(server.host, server.port)).ttfb_s)
    else:
        async with TLSFront(LabCA()) as front:
            front.apply(TLSDelay(delay_s=requested_s))
            for _ in range(samples):
                measured.append(await server_hello_delay(front.host, front.port))
    return accuracy(requested_s, measured)
