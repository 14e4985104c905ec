"""The first response byte keeps its own arrival time when the event loop reads late.

A real loopback server (a thread with blocking sockets) answers with a first segment, pauses
200 ms, then sends the rest, while the client's event loop is kept busy for 300 ms by a callback
that spins in Python (holding the GIL, as other probes' work would) from just before the first
segment until after the second one. Both segments are then in the receive queue before the loop
reads, and the kernel merges in-order segments in that queue, keeping only the newest segment's
stamp (otelprobe/net/prompt_read.py). `http.ttfb` must nevertheless end when the first segment
was sent (the server thread notes each send; on loopback the segment arrives inside the send
call) and `http.transfer` when the last one was, for HTTP/1.1 plain, HTTP/1.1 over TLS, HTTP/2
with prior knowledge and HTTP/2 over TLS. Before the fix `http.ttfb` ended at the second segment,
~200 ms late.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from otelprobe.lab.certs import LabCA
from otelprobe.results import ProbeResult
from tests.support.http_probing import names_of, probe_once

_SETTLE_S = 0.03  # the client loop is spinning by then
_PAUSE_S = 0.2  # between the first segment and the rest
_BUSY_S = 0.3  # the client loop is blocked this long: both segments are queued before it reads
_BODY = b"x" * 1000
_TOLERANCE_NS = 2_000_000  # kernel stamp vs the send call around it, on a loaded 2-core box


def _spin(seconds: float) -> None:
    """Keep the loop busy in Python code (the GIL held but for interpreter switches)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Sends:
    """perf_counter_ns before and after each send of the response (the server thread's notes)."""

    def __init__(self) -> None:
        self.spans: list[tuple[int, int]] = []

    def send(self, sock: socket.socket, data: bytes) -> None:
        before = time.perf_counter_ns()
        sock.sendall(data)
        self.spans.append((before, time.perf_counter_ns()))


Answer = Callable[[socket.socket, Callable[[], None], Sends], None]


def _read_http1_request(sock: socket.socket) -> None:
    data = b""
    deadline = time.monotonic() + 5
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk


def _answer_http1(sock: socket.socket, block_client: Callable[[], None], sends: Sends) -> None:
    _read_http1_request(sock)
    block_client()
    sends.send(sock, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(_BODY))
    time.sleep(_PAUSE_S)
    sends.send(sock, _BODY)


def _answer_http2(sock: socket.socket, block_client: Callable[[], None], sends: Sends) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    ended = False
    deadline = time.monotonic() + 5
    while not ended and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            return
        for event in conn.receive_data(data):
            ended = ended or isinstance(event, h2.events.StreamEnded)
        sock.sendall(conn.data_to_send())  # SETTINGS ACK, before the response
    block_client()
    conn.send_headers(1, [(b":status", b"200"), (b"content-length", b"%d" % len(_BODY))])
    sends.send(sock, conn.data_to_send())
    time.sleep(_PAUSE_S)
    conn.send_data(1, _BODY, end_stream=True)
    sends.send(sock, conn.data_to_send())


@contextmanager
def _server(answer: Answer, tls: ssl.SSLContext | None, sends: Sends) -> Iterator[int]:
    """One connection served by `answer` in a thread; the client loop is blocked on its cue."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    errors: list[BaseException] = []

    def block_client() -> None:
        loop.call_soon_threadsafe(_spin, _BUSY_S)
        time.sleep(_SETTLE_S)

    def serve() -> None:
        try:
            raw, _ = listener.accept()
            raw.settimeout(5)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = tls.wrap_socket(raw, server_side=True) if tls is not None else raw
            with sock:
                answer(sock, block_client, sends)
                sock.settimeout(2)
                try:
                    while sock.recv(65536):  # until the client closes
                        pass
                except OSError:
                    pass
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        thread.join(5)
        listener.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def lab_ca() -> LabCA:
    return LabCA()


@pytest.fixture(scope="module")
def ca_file(lab_ca: LabCA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("first-byte-ca") / "ca.pem"
    path.write_bytes(lab_ca.root_pem)
    return str(path)


def _assert_first_byte_kept(result: ProbeResult, sends: Sends) -> None:
    assert result.error is None, result.error
    ttfb, transfer = result.phase("http.ttfb"), result.phase("http.transfer")
    assert ttfb is not None and transfer is not None, names_of(result)
    (first_before, first_after), (second_before, second_after) = sends.spans
    late_ms = (ttfb.end_ns - first_after) / 1e6
    assert first_before - _TOLERANCE_NS <= ttfb.end_ns <= first_after + _TOLERANCE_NS, (
        f"http.ttfb ends {late_ms:.1f} ms after the first segment was sent "
        f"({(second_before - first_after) / 1e6:.0f} ms before the second)"
    )
    assert second_before - _TOLERANCE_NS <= transfer.end_ns <= second_after + _TOLERANCE_NS, (
        f"http.transfer ends {(transfer.end_ns - second_after) / 1e6:.1f} ms after the last segment was sent"
    )


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_http1_first_byte_keeps_its_stamp_under_a_late_read(
    tls: bool, lab_ca: LabCA, ca_file: str
) -> None:
    context = lab_ca.server_context(alpn=("http/1.1",)) if tls else None
    sends = Sends()
    with _server(_answer_http1, context, sends) as port:
        scheme = "https" if tls else "http"
        options = {"tls": {"ca_file": ca_file}} if tls else {}
        result = await probe_once(f"{scheme}://127.0.0.1:{port}/", **options)
    _assert_first_byte_kept(result, sends)


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2"])
async def test_http2_first_byte_keeps_its_stamp_under_a_late_read(
    tls: bool, lab_ca: LabCA, ca_file: str
) -> None:
    context = lab_ca.server_context(alpn=("h2",)) if tls else None
    sends = Sends()
    with _server(_answer_http2, context, sends) as port:
        scheme = "https" if tls else "http"
        options = {"tls": {"ca_file": ca_file}} if tls else {}
        result = await probe_once(f"{scheme}://127.0.0.1:{port}/", http_version="2", **options)
    _assert_first_byte_kept(result, sends)
