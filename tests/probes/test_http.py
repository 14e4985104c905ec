"""The HTTP probe against real loopback servers: phases, protocols, failures, expectations."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import trustme

from otelprobe.lab.servers._lifecycle import LabServer
from otelprobe.lab.servers.dns import DNSFault, DNSFaultServer
from otelprobe.lab.servers.http import HTTPFaultServer
from otelprobe.lab.servers.ports import RefusedPort
from otelprobe.lab.servers.raw import RawFaultServer
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.probes.http.probe import HTTPProbe
from otelprobe.results import ProbeResult
from tests.support.http_probing import CTX, duration, names_of, probe_once
from tests.support.http_servers import H2Server, Seen, make_app, serve_app


def assert_contiguous(result: ProbeResult) -> None:
    """Phases follow each other on the wire: none starts before the previous one ended."""
    for before, after in zip(result.phases, result.phases[1:], strict=False):
        assert after.start_ns >= before.end_ns, (before, after)


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
async def http_port(seen: Seen) -> AsyncIterator[int]:
    async with serve_app(make_app(seen)) as port:
        yield port


@pytest.fixture(scope="session")
def ca_file(cert_authority: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    cert_authority.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


@pytest.fixture
async def https_port(cert_authority: trustme.CA, seen: Seen) -> AsyncIterator[int]:
    context = server_context(cert_authority.issue_cert("localhost", "127.0.0.1"))
    async with serve_app(make_app(seen), context) as port:
        yield port


@pytest.fixture
async def lab_http() -> AsyncIterator[HTTPFaultServer]:
    """The lab's HTTP server: faults per request through its query parameters (`/?ttfb=200ms`)."""
    async with HTTPFaultServer() as server:
        yield server


@pytest.fixture
async def lab_https(cert_authority: trustme.CA) -> AsyncIterator[HTTPFaultServer]:
    context = server_context(cert_authority.issue_cert("localhost", "127.0.0.1"))
    async with HTTPFaultServer(ssl_context=context) as server:
        yield server


@pytest.fixture
def closed_port() -> Iterator[int]:
    with RefusedPort() as refused:
        yield refused.port


# --- phases -----------------------------------------------------------------------------------


async def test_plain_http_phases_in_wire_order(http_port: int) -> None:
    result = await probe_once(f"http://localhost:{http_port}/ok")

    assert result.success, result.error
    assert names_of(result) == ["dns.lookup", "tcp.connect", "http.request", "http.ttfb", "http.transfer"]
    assert_contiguous(result)
    assert result.attributes["http.response.status_code"] == 200
    assert result.attributes["network.protocol.version"] == "1.1"
    assert result.attributes["network.peer.address"] == "127.0.0.1"
    assert result.attributes["server.address"] == "localhost"
    assert result.attributes["server.port"] == http_port
    assert result.attributes["http.request.method"] == "GET"
    assert result.attributes["user_agent.synthetic.type"] == "test"
    assert result.attributes["probe.http.body_bytes"] == len("hello otelprobe")
    connect = result.phase("tcp.connect")
    assert connect is not None and connect.attributes["network.peer.address"] == "127.0.0.1"


async def test_https_phases_in_wire_order_with_tls_attributes(https_port: int, ca_file: str) -> None:
    result = await probe_once(f"https://localhost:{https_port}/ok", tls={"ca_file": ca_file})

    assert result.success, result.error
    assert names_of(result) == [
        "dns.lookup",
        "tcp.connect",
        "tls.handshake",
        "http.request",
        "http.ttfb",
        "http.transfer",
    ]
    assert_contiguous(result)
    assert result.attributes["tls.protocol.version"] == "1.3"
    assert "tls.server.not_after" in result.attributes
    assert "tls.server.hash.sha256" in result.attributes
    assert result.attributes["network.protocol.version"] == "1.1"


async def test_repeated_attempts_report_the_same_certificate_with_fresh_remaining_time(
    https_port: int, ca_file: str
) -> None:
    config = {"name": "t", "url": f"https://localhost:{https_port}/ok", "tls": {"ca_file": ca_file}}
    probe = HTTPProbe(HTTPProbeConfig.model_validate(config), CTX)
    [first] = await probe.run()
    [second] = await probe.run(attempt=2)
    await probe.aclose()

    assert first.success and second.success
    tls_keys = {k for k in first.attributes if k.startswith(("tls.", "probe.tls."))}
    assert {k for k in second.attributes if k.startswith(("tls.", "probe.tls."))} == tls_keys
    for key in tls_keys - {"probe.tls.cert.remaining"}:
        assert first.attributes[key] == second.attributes[key], key
    remaining = (first.attributes["probe.tls.cert.remaining"], second.attributes["probe.tls.cert.remaining"])
    assert isinstance(remaining[0], float) and isinstance(remaining[1], float)
    assert 0 <= remaining[0] - remaining[1] < 5


async def test_ttfb_delay_shows_in_ttfb_only_even_with_tls13_session_tickets(
    lab_https: HTTPFaultServer, ca_file: str
) -> None:
    # The server's TLS 1.3 NewSessionTicket records arrive right after the handshake, long
    # before the response: http.ttfb must still end at the first byte of the response.
    result = await probe_once(f"https://localhost:{lab_https.port}/?ttfb=200ms", tls={"ca_file": ca_file})

    assert result.success, result.error
    assert result.attributes["tls.protocol.version"] == "1.3"
    assert duration(result, "http.ttfb") >= 0.2
    assert duration(result, "tcp.connect") < 0.05
    assert duration(result, "tls.handshake") < 0.05
    assert duration(result, "http.transfer") < 0.05


async def test_dns_delay_shows_in_dns_lookup_only(http_port: int) -> None:
    async with DNSFaultServer(zone={"www": {"A": ["127.0.0.1"]}}) as dns_server:
        dns_server.set_fault("www", DNSFault.delayed(0.2))
        result = await probe_once(
            f"http://www.lab.test:{http_port}/ok",
            resolver={"server": f"127.0.0.1:{dns_server.port}"},
        )

    assert result.success, result.error
    lookup = result.phase("dns.lookup")
    assert lookup is not None and lookup.attributes["dns.answers"] == ("127.0.0.1",)
    assert duration(result, "dns.lookup") >= 0.2
    assert duration(result, "tcp.connect") < 0.05
    assert duration(result, "http.ttfb") < 0.05


async def test_trickled_body_shows_in_transfer(lab_http: HTTPFaultServer) -> None:
    # 500 bytes at 2000 B/s in 100-byte chunks: one every 50 ms after the headers.
    result = await probe_once(f"http://127.0.0.1:{lab_http.port}/?size=500&trickle=2000&chunk=100")

    assert result.success, result.error
    assert names_of(result)[0] == "tcp.connect"  # an IP literal needs no lookup
    assert result.attributes["probe.http.body_bytes"] == 500
    assert duration(result, "http.transfer") >= 0.19
    assert duration(result, "http.ttfb") < 0.05


# --- HTTP/2 -----------------------------------------------------------------------------------


async def test_http2_negotiated_by_alpn_and_ttfb_not_ended_by_settings(
    cert_authority: trustme.CA, ca_file: str
) -> None:
    # An h2 server sends SETTINGS as soon as the connection opens; ttfb ends at the response's HEADERS.
    context = server_context(cert_authority.issue_cert("localhost"))
    async with H2Server(context, delay_s=0.2) as server:
        result = await probe_once(f"https://localhost:{server.port}/h2", tls={"ca_file": ca_file})

    assert result.success, result.error
    assert result.attributes["network.protocol.version"] == "2"
    assert result.attributes["tls.next_protocol"] == "h2"
    assert names_of(result)[-3:] == ["http.request", "http.ttfb", "http.transfer"]
    assert_contiguous(result)
    assert duration(result, "http.ttfb") >= 0.2
    assert duration(result, "http.request") < 0.05
    assert duration(result, "http.transfer") < 0.05
    assert result.attributes["probe.http.body_bytes"] == len(b"hello over h2")
    assert server.requests[0][":path"] == "/h2"


async def test_http_version_1_1_offers_only_http11(
    cert_authority: trustme.CA, ca_file: str, seen: Seen
) -> None:
    # This server prefers h2 when the client offers it; "1.1" must not offer it.
    context = server_context(cert_authority.issue_cert("localhost"))
    context.set_alpn_protocols(["h2", "http/1.1"])
    async with serve_app(make_app(seen), context) as port:
        result = await probe_once(
            f"https://localhost:{port}/ok", tls={"ca_file": ca_file}, http_version="1.1"
        )

    assert result.success, result.error
    assert result.attributes["tls.next_protocol"] == "http/1.1"
    assert result.attributes["network.protocol.version"] == "1.1"


# --- failures, each with its class ------------------------------------------------------------


async def test_refused(closed_port: int) -> None:
    result = await probe_once(f"http://127.0.0.1:{closed_port}/")

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("connect_refused", "connection_refused")
    assert result.attributes["error.type"] == "connect_refused"


async def test_accepts_but_never_answers_times_out_in_ttfb() -> None:
    async with RawFaultServer("hang") as server:
        result = await probe_once(server.url, timeout="300ms")

    assert result.error is not None
    assert result.error.error_type == "timeout"
    assert result.error.detail == "deadline_exceeded_in_http_ttfb"
    assert 0.29 <= result.duration_s < 1.0
    ttfb = result.phase("http.ttfb")
    assert ttfb is not None and ttfb.error_type == "timeout"


async def test_tls_attributes_reported_when_the_response_never_comes(
    lab_https: HTTPFaultServer, ca_file: str
) -> None:
    result = await probe_once(
        f"https://localhost:{lab_https.port}/?ttfb=2s", tls={"ca_file": ca_file}, timeout="300ms"
    )

    assert result.error is not None
    assert result.error.detail == "deadline_exceeded_in_http_ttfb"
    assert result.attributes["tls.protocol.version"] == "1.3"
    assert "probe.tls.cert.remaining" in result.attributes


@pytest.mark.parametrize(
    ("server", "query", "detail"),
    [
        (lambda: RawFaultServer("garbage"), "", "malformed_response"),
        (HTTPFaultServer, "?size=100000&reset_after=1000", "reset_mid_body"),
        (HTTPFaultServer, "?size=100000&close_after=1000", "incomplete_body"),
        (lambda: RawFaultServer("close"), "", "server_disconnected"),
    ],
    ids=["garbage", "reset_mid_body", "close_mid_body", "close_without_answer"],
)
async def test_misbehaving_servers_are_protocol_errors(
    server: Callable[[], LabServer], query: str, detail: str
) -> None:
    async with server() as running:
        result = await probe_once(running.url + query, timeout="2s")

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("protocol_error", detail)
    assert result.duration_s < 1.5


async def test_endless_body_fails_fast_at_the_cap() -> None:
    async with RawFaultServer("endless_body") as server:
        result = await probe_once(server.url, body_max="256KiB", timeout="5s")

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("protocol_error", "body_too_large")
    assert result.duration_s < 2.0
    transfer = result.phase("http.transfer")
    assert transfer is not None and transfer.error_type == "protocol_error"


async def test_redirect_loop(lab_http: HTTPFaultServer) -> None:
    result = await probe_once(f"{lab_http.url}?redirect_loop=1")

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("protocol_error", "redirect_loop")


async def test_too_many_redirects(lab_http: HTTPFaultServer) -> None:
    result = await probe_once(f"{lab_http.url}?redirects=5", redirects={"max": 2})

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("protocol_error", "too_many_redirects")


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    untrusted = trustme.CA()  # its root, served as the leaf: a self-signed certificate
    pem = tmp_path / "self-signed.pem"
    untrusted.cert_pem.write_to_path(str(pem))
    untrusted.private_key_pem.write_to_path(str(pem), append=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pem))
    return context


@pytest.mark.parametrize("case", ["expired", "wrong_host", "self_signed"])
async def test_bad_certificates_are_tls_errors(
    case: str, cert_authority: trustme.CA, ca_file: str, seen: Seen, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    if case == "expired":
        context = server_context(
            cert_authority.issue_cert(
                "localhost", not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)
            )
        )
    elif case == "wrong_host":
        context = server_context(cert_authority.issue_cert("other.example"))
    else:
        context = _self_signed(tmp_path)
    expected = {
        "expired": "certificate_expired",
        "wrong_host": "hostname_mismatch",
        "self_signed": "self_signed_certificate",
    }[case]
    async with serve_app(make_app(seen), context) as port:
        result = await probe_once(f"https://localhost:{port}/ok", tls={"ca_file": ca_file})

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("tls_error", expected)
    handshake = result.phase("tls.handshake")
    assert handshake is not None and handshake.error_type == "tls_error"


# --- expectations -----------------------------------------------------------------------------


async def test_status_outside_expected_set(lab_http: HTTPFaultServer) -> None:
    result = await probe_once(f"{lab_http.url}?status=503")

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("http_status", "unexpected_status")
    assert result.attributes["http.response.status_code"] == 503
    ok = await probe_once(f"{lab_http.url}?status=503", expect={"status": [200, "500-599"]})
    assert ok.success, ok.error


async def test_every_content_expectation_is_reported(http_port: int) -> None:
    result = await probe_once(
        f"http://127.0.0.1:{http_port}/json",
        expect={
            "body_regex": ["down"],
            "json_path": [{"path": "$.status", "equals": "up"}, {"path": "$.items[1].id", "equals": 9}],
            "headers": {"content-type": "^application/json"},
        },
    )

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("assertion_failed", "body_regex_not_matched")
    assert "$.items[1].id is 8, expected 9" in str(result.error)
    assert "$.status" not in str(result.error)


async def test_content_expectations_pass(http_port: int) -> None:
    result = await probe_once(
        f"http://127.0.0.1:{http_port}/json",
        expect={
            "body_regex": ['"status"'],
            "body_not_regex": ["error"],
            "json_path": [{"path": "$.items[-1].id", "equals": 8}, {"path": "$.ok", "equals": True}],
            "headers": {"Content-Type": "json"},
            "max_duration": "2s",
        },
    )
    assert result.success, result.error


async def test_latency_bound(lab_http: HTTPFaultServer) -> None:
    result = await probe_once(f"{lab_http.url}?ttfb=100ms", expect={"max_duration": "50ms"})

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("assertion_failed", "latency_exceeded")


async def test_certificate_expiry_bound(cert_authority: trustme.CA, ca_file: str, seen: Seen) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=5)
    context = server_context(cert_authority.issue_cert("localhost", not_after=soon))
    async with serve_app(make_app(seen), context) as port:
        url = f"https://localhost:{port}/ok"
        result = await probe_once(url, tls={"ca_file": ca_file}, expect={"cert_min_remaining": "30d"})
        ok = await probe_once(url, tls={"ca_file": ca_file}, expect={"cert_min_remaining": "1d"})

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("assertion_failed", "certificate_expires_soon")
    assert ok.success, ok.error
    remaining = ok.attributes["probe.tls.cert.remaining"]
    assert isinstance(remaining, float) and 4 * 86400 < remaining <= 5 * 86400


# --- redirects, request, identity --------------------------------------------------------------


async def test_relative_redirects_are_followed_each_hop_timed(http_port: int) -> None:
    result = await probe_once(f"http://127.0.0.1:{http_port}/redirect/2")

    assert result.success, result.error
    assert result.attributes["probe.http.redirect_count"] == 3
    assert result.attributes["probe.http.final_url"] == f"http://127.0.0.1:{http_port}/ok"
    hops = [p.attributes["probe.http.hop"] for p in result.phases if p.name == "http.ttfb"]
    assert hops == [0, 1, 2, 3]
    assert all("probe.http.hop" in p.attributes for p in result.phases)
    assert_contiguous(result)


async def test_redirect_not_followed(lab_http: HTTPFaultServer) -> None:
    result = await probe_once(
        f"{lab_http.url}?redirects=1", redirects={"follow": False}, expect={"status": [302]}
    )
    assert result.success, result.error
    assert result.attributes["http.response.status_code"] == 302


async def test_credentials_redacted_from_url_full_and_sent_as_basic_auth(http_port: int, seen: Seen) -> None:
    result = await probe_once(f"http://alice:s3cr3t-pw@127.0.0.1:{http_port}/ok?token=abcdef&x=1")

    assert result.success, result.error
    url_full = str(result.attributes["url.full"])
    assert "s3cr3t" not in url_full and "alice" not in url_full and "abcdef" not in url_full
    assert url_full.startswith("http://REDACTED:REDACTED@127.0.0.1:")
    assert seen.headers[-1]["Authorization"] == "Basic YWxpY2U6czNjcjN0LXB3"
    assert "s3cr3t" not in repr(result.to_json())


async def test_traceparent_matches_trace_ref(http_port: int, seen: Seen) -> None:
    result = await probe_once(f"http://127.0.0.1:{http_port}/ok")

    assert result.trace_ref is not None
    version, trace_id, span_id, flags = seen.headers[-1]["traceparent"].split("-")
    assert (version, flags) == ("00", "01")
    assert int(trace_id, 16) == result.trace_ref.trace_id
    assert int(span_id, 16) == result.trace_ref.span_id

    quiet = await probe_once(f"http://127.0.0.1:{http_port}/ok", propagate_trace_context=False)
    assert quiet.trace_ref is None
    assert "traceparent" not in seen.headers[-1]


async def test_headers_and_body_sent_but_never_exported(http_port: int, seen: Seen) -> None:
    result = await probe_once(
        f"http://127.0.0.1:{http_port}/echo",
        method="POST",
        body='{"q": 1}',
        headers={"X-Api-Key": "key-0123456789", "Content-Type": "application/json"},
        expect={"json_path": [{"path": "$.body", "regex": '"q"'}, {"path": "$.method", "equals": "POST"}]},
    )

    assert result.success, result.error
    assert seen.headers[-1]["X-Api-Key"] == "key-0123456789"
    assert seen.headers[-1]["User-Agent"].startswith("otelprobe/")
    assert "key-0123456789" not in repr(result.to_json())


async def test_ip_all_probes_every_address_with_the_shared_lookup(seen: Seen) -> None:
    zone = {"www": {"A": ["127.0.0.1", "127.0.0.2"]}}
    async with (
        DNSFaultServer(zone=zone) as dns_server,
        serve_app(make_app(seen), hosts=("127.0.0.1", "127.0.0.2")) as port,
    ):
        probe = HTTPProbe(
            HTTPProbeConfig.model_validate(
                {
                    "name": "t",
                    "url": f"http://www.lab.test:{port}/ok",
                    "ip": "all",
                    "resolver": {"server": f"127.0.0.1:{dns_server.port}"},
                }
            ),
            CTX,
        )
        results = await probe.run()
        await probe.aclose()

    assert [r.success for r in results] == [True, True]
    assert sorted(str(r.attributes["network.peer.address"]) for r in results) == ["127.0.0.1", "127.0.0.2"]
    lookups = [r.phase("dns.lookup") for r in results]
    assert lookups[0] is not None and lookups[0] == lookups[1]
    for result in results:
        assert names_of(result)[0] == "dns.lookup"
        assert result.start_ns <= result.phases[0].start_ns
        assert result.trace_ref is not None
    assert results[0].trace_ref != results[1].trace_ref


async def test_dns_failure_is_a_dns_error(http_port: int) -> None:
    async with DNSFaultServer(zone={"www": {"A": ["127.0.0.1"]}}) as dns_server:
        dns_server.set_fault("www", DNSFault.servfail())
        result = await probe_once(
            f"http://www.lab.test:{http_port}/ok", resolver={"server": f"127.0.0.1:{dns_server.port}"}
        )

    assert result.error is not None
    assert result.error.error_type == "dns_error"
    assert names_of(result) == ["dns.lookup"]


async def test_concurrent_probes_do_not_interfere(http_port: int) -> None:
    results = await asyncio.gather(*(probe_once(f"http://127.0.0.1:{http_port}/ok") for _ in range(20)))
    assert all(r.success for r in results)
