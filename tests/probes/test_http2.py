"""HTTP/2 in the HTTP probe (probes/http/http2_exchange.py) against real loopback servers.

Prior knowledge on plain http (h2c) and ALPN h2 on https, their phases (the request leaves in one
write, TTFB ends at the response's HEADERS, transfer spans the DATA frames), the servers that do
not speak HTTP/2, and the ways an HTTP/2 server gives up on a request (RST_STREAM, GOAWAY, close).
`http_version: "1.1"` against an h2-capable server is in test_http.py
(test_http_version_1_1_offers_only_http11), as is ALPN h2 with `auto`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme

from otelprobe.lab.servers.raw import GARBAGE, RawFaultServer, RawMode
from otelprobe.probes.http import http2_exchange
from otelprobe.results import ProbeResult
from tests.support.http_probing import duration, names_of, probe_once
from tests.support.http_servers import H2Server, Seen, make_app, serve_app

H2C_PHASES = ["tcp.connect", "http.request", "http.ttfb", "http.transfer"]


async def h2c(server: H2Server, path: str = "/h2", **options: Any) -> ProbeResult:
    return await probe_once(f"http://127.0.0.1:{server.port}{path}", http_version="2", **options)


def assert_wire_order(result: ProbeResult) -> None:
    """Phases follow each other on the wire and none is negative, failed or not."""
    for phase in result.phases:
        assert phase.end_ns >= phase.start_ns, phase
    for before, after in zip(result.phases, result.phases[1:], strict=False):
        assert after.start_ns >= before.end_ns, (before, after)


def assert_failed(result: ProbeResult, detail: str, phase: str | None) -> str:
    """The class and detail of the failure, the phase it is on (None: between phases); its message."""
    assert result.error is not None, "expected a failure"
    assert (result.error.error_type, result.error.detail) == ("protocol_error", detail), result.error
    failed = [p.name for p in result.phases if p.error_type is not None]
    assert failed == ([phase] if phase else []), result.phases
    assert result.duration_s < 1.0  # a clear answer, not the deadline
    assert_wire_order(result)
    return result.error.message


@pytest.fixture(scope="module")
def ca_file(cert_authority: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    cert_authority.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def tls_context(cert_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert_authority.issue_cert("localhost").configure_cert(context)
    return context


@pytest.fixture
async def h2c_server() -> AsyncIterator[H2Server]:
    async with H2Server() as server:
        yield server


# --- prior knowledge (h2c) ---------------------------------------------------------------------


async def test_prior_knowledge_phases_and_ttfb_not_ended_by_settings() -> None:
    # The server's SETTINGS arrive at once; TTFB ends at the response's HEADERS, 0.2 s later.
    async with H2Server(delay_s=0.2) as server:
        result = await h2c(server)

    assert result.success, result.error
    assert result.attributes["network.protocol.version"] == "2"
    assert names_of(result) == H2C_PHASES
    assert_wire_order(result)
    assert 0.2 <= duration(result, "http.ttfb") < 0.3
    assert duration(result, "http.request") < 0.05
    assert result.attributes["probe.http.body_bytes"] == len(server.body)
    [request] = server.requests
    assert request[":scheme"] == "http"
    assert request[":authority"] == f"127.0.0.1:{server.port}"
    assert request[":path"] == "/h2"
    assert "host" not in request
    # Preface, SETTINGS and HEADERS left in one write: the server had the request in its first read.
    assert server.whole_request_in_first_read == [True]


async def test_request_phase_is_one_write_whatever_the_loop_load(h2c_server: H2Server) -> None:
    # A general-purpose HTTP/2 client yielded to the loop ~100 times between the preface and HEADERS:
    # beside busy tasks (here ~10 ms per loop turn) that put a second into `http.request`.
    stop = asyncio.Event()

    async def busy() -> None:
        while not stop.is_set():
            spin_until = time.perf_counter() + 0.002
            while time.perf_counter() < spin_until:
                pass
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(busy()) for _ in range(5)]
    try:
        result = await h2c(h2c_server, timeout="5s")
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    assert result.success, result.error
    assert duration(result, "http.request") < 0.02


async def test_server_bytes_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SETTINGS check and the timer's frame scan work whatever the reads' boundaries.
    monkeypatch.setattr(http2_exchange, "_READ_SIZE", 1)
    async with H2Server(delay_s=0.05, chunks=3) as server:
        result = await h2c(server)

    assert result.success, result.error
    assert result.attributes["probe.http.body_bytes"] == len(server.body)
    assert duration(result, "http.ttfb") >= 0.05
    assert_wire_order(result)


async def test_request_body_larger_than_the_initial_window(h2c_server: H2Server) -> None:
    # 200 kB > the 64 KiB initial window: the rest waits for the server's WINDOW_UPDATEs.
    result = await h2c(
        h2c_server, "/echo", method="POST", body="b" * 200_000, expect={"body_regex": ["^200000$"]}
    )

    assert result.success, result.error
    assert h2c_server.bodies == [b"b" * 200_000]
    assert names_of(result) == H2C_PHASES
    assert_wire_order(result)


async def test_server_answering_before_the_body_is_sent() -> None:
    # 413 + RST_STREAM(NO_ERROR) on the HEADERS: the request ends where it stopped.
    async with H2Server(fault="early_413") as server:
        result = await h2c(server, "/echo", method="POST", body="b" * 200_000)

    assert result.error is not None
    assert result.error.error_type == "http_status"
    assert result.attributes["http.response.status_code"] == 413
    assert names_of(result) == H2C_PHASES
    assert_wire_order(result)


async def test_connection_specific_headers_are_not_sent(h2c_server: H2Server) -> None:
    # RFC 9113 §8.2.2: they are malformed in HTTP/2, so a config written for HTTP/1.1 still works.
    headers = {"Connection": "close", "Keep-Alive": "5", "TE": "gzip", "X-Kept": "1"}
    result = await h2c(h2c_server, headers=headers)

    assert result.success, result.error
    [request] = h2c_server.requests
    assert request["x-kept"] == "1"
    assert not {"connection", "keep-alive", "te"} & request.keys()


async def test_invalid_request_header_is_refused_before_sending(h2c_server: H2Server) -> None:
    result = await h2c(h2c_server, headers={"X-Injected": "s3cr3t\r\nX-Evil: 1"})

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("protocol_error", "local_protocol_error")
    assert "s3cr3t" not in result.error.message  # header values may be secrets
    assert h2c_server.requests == []


# --- servers that do not speak HTTP/2 ----------------------------------------------------------


async def test_prior_knowledge_to_an_http11_server() -> None:
    # aiohttp answers the preface with an HTTP/1.1 400 before the HEADERS are even written.
    async with serve_app(make_app(Seen())) as port:
        result = await probe_once(f"http://127.0.0.1:{port}/ok", http_version="2")

    message = assert_failed(result, "http2_not_supported", "http.ttfb")
    assert "HTTP/1.x" in message and "prior knowledge" in message


@pytest.mark.parametrize(
    ("mode", "detail", "words"),
    [
        ("garbage", "http2_not_supported", str(GARBAGE[:9])),  # quotes what came instead of a frame
        ("close", "server_disconnected", "prior knowledge"),
    ],
    ids=["garbage", "close"],
)
async def test_prior_knowledge_to_other_servers(mode: RawMode, detail: str, words: str) -> None:
    async with RawFaultServer(mode) as server:
        result = await probe_once(server.url, http_version="2")

    assert words in assert_failed(result, detail, "http.ttfb")


async def test_prior_knowledge_to_a_silent_server_times_out_in_ttfb() -> None:
    async with RawFaultServer("hang") as server:
        result = await probe_once(server.url, http_version="2", timeout="300ms")

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("timeout", "deadline_exceeded_in_http_ttfb")
    assert result.duration_s < 1.0


@pytest.mark.parametrize("alpn", [["http/1.1"], None], ids=["alpn-http1.1", "no-alpn"])
async def test_http_version_2_over_tls_needs_alpn_h2(
    tls_context: ssl.SSLContext, ca_file: str, alpn: list[str] | None
) -> None:
    # RFC 9113 §3.3: over TLS, HTTP/2 is negotiated by ALPN; prior knowledge is for cleartext.
    if alpn is not None:
        tls_context.set_alpn_protocols(alpn)
    seen = Seen()
    async with serve_app(make_app(seen), tls_context) as port:
        result = await probe_once(f"https://localhost:{port}/ok", http_version="2", tls={"ca_file": ca_file})

    message = assert_failed(result, "alpn_h2_not_negotiated", None)
    assert ("http/1.1" if alpn else "no protocol") in message
    assert result.phase("tls.handshake") is not None and result.phase("http.request") is None
    assert result.attributes["tls.protocol.version"] == "1.3"  # the handshake is reported
    assert result.attributes.get("tls.next_protocol") == (alpn[0] if alpn else None)
    assert seen.headers == []  # nothing was sent


# --- an HTTP/2 server giving up on the request -------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "detail", "phase", "words"),
    [
        ("reset", "stream_reset", "http.ttfb", "RST_STREAM CANCEL"),
        ("reset_mid_body", "stream_reset", "http.transfer", "RST_STREAM INTERNAL_ERROR"),
        ("goaway", "connection_terminated", "http.ttfb", "GOAWAY INTERNAL_ERROR"),
        ("goaway_refused", "connection_terminated", "http.ttfb", "GOAWAY NO_ERROR, last stream 0"),
    ],
)
async def test_server_gives_up(fault: str, detail: str, phase: str, words: str) -> None:
    async with H2Server(fault=fault, chunks=3, chunk_pause_s=0.05) as server:
        result = await h2c(server)

    assert words in assert_failed(result, detail, phase)
    if fault == "reset_mid_body":
        assert result.attributes["probe.http.body_bytes"] == 5  # the first of three chunks


async def test_graceful_goaway_covering_the_request_still_gets_the_response() -> None:
    # A draining server: GOAWAY(NO_ERROR, last stream 1), then the response to stream 1.
    async with H2Server(fault="goaway_graceful") as server:
        result = await h2c(server)

    assert result.success, result.error
    assert result.attributes["probe.http.body_bytes"] == len(server.body)


# --- bodies and redirects ----------------------------------------------------------------------


async def test_body_in_delayed_data_frames_spans_transfer(tls_context: ssl.SSLContext, ca_file: str) -> None:
    async with H2Server(tls_context, body=b"a" * 4000, chunks=4, chunk_pause_s=0.1) as server:
        result = await probe_once(f"https://localhost:{server.port}/", tls={"ca_file": ca_file})

    assert result.success, result.error
    assert result.attributes["network.protocol.version"] == "2"
    assert result.attributes["probe.http.body_bytes"] == 4000
    assert_wire_order(result)
    # From the first DATA (with the HEADERS) to the fourth, three pauses later.
    assert 0.3 <= duration(result, "http.transfer") < 0.4
    assert duration(result, "http.ttfb") < 0.1


@pytest.mark.parametrize("scheme", ["https", "http"])
async def test_redirect_over_http2_each_hop_timed(
    tls_context: ssl.SSLContext, ca_file: str, scheme: str
) -> None:
    context = tls_context if scheme == "https" else None
    options: dict[str, Any] = {"tls": {"ca_file": ca_file}} if context else {"http_version": "2"}
    async with H2Server(context) as server:
        result = await probe_once(f"{scheme}://localhost:{server.port}/redirect", **options)

    assert result.success, result.error
    assert result.attributes["probe.http.redirect_count"] == 1
    assert result.attributes["probe.http.final_url"] == f"{scheme}://localhost:{server.port}/final"
    assert [r[":path"] for r in server.requests] == ["/redirect", "/final"]
    per_hop = ["dns.lookup", "tcp.connect", *(["tls.handshake"] if context else []), *H2C_PHASES[1:]]
    assert names_of(result) == per_hop * 2
    assert [p.attributes["probe.http.hop"] for p in result.phases] == [0] * len(per_hop) + [1] * len(per_hop)
    assert_wire_order(result)
