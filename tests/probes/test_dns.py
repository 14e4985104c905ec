"""The dns probe against the lab DNS fault server on loopback: transports, faults, assertions, DNSSEC."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import ValidationError

from otelprobe.lab.servers.dns import DNSFault, DNSFaultServer
from otelprobe.lab.servers.dns_zone import ZoneSpec
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.dns.probe import DNSProbe, DNSProbeConfig, system_nameserver
from otelprobe.results import ProbeResult
from otelprobe.telemetry.otlp_json import json_to_message, message_to_json
from otelprobe.telemetry.pipeline import Telemetry

ZONE: ZoneSpec = {
    "www": {"A": ["127.0.0.1", "127.0.0.2"], "AAAA": ["::1"], "TXT": '"v=spf1 -all"'},
    "alias": {"CNAME": "www"},
    "mail": {"MX": ["10 www"]},
}


@pytest.fixture
async def server() -> AsyncIterator[DNSFaultServer]:
    async with DNSFaultServer(zone=ZONE, sign=True, authenticated_data=True) as s:
        yield s


@pytest.fixture
def tls_server_context(cert_authority: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert_authority.issue_cert("127.0.0.1", "dns.lab.test").configure_cert(ctx)
    return ctx


@pytest.fixture
def ca_file(cert_authority: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    cert_authority.cert_pem.write_to_path(str(path))
    return str(path)


async def probe(
    server: DNSFaultServer, name: str = "www.lab.test", port: int | None = None, **fields: Any
) -> ProbeResult:
    config = DNSProbeConfig.model_validate(
        {
            "name": "t",
            "server": f"127.0.0.1:{port or server.port}",
            "query_name": name,
            "timeout": "2s",
            **fields,
        }
    )
    [result] = await DNSProbe(config, ProbeContext(vantage="test")).run()
    return result


async def test_udp_answer_is_one_lookup_phase_with_answers(server: DNSFaultServer) -> None:
    result = await probe(server)
    assert result.success, result.error
    assert [p.name for p in result.phases] == ["dns.lookup"]
    assert set(result.attributes["dns.answers"]) == {"127.0.0.1", "127.0.0.2"}  # type: ignore[arg-type]
    assert result.attributes["probe.dns.rcode"] == "NOERROR"
    assert result.attributes["probe.dns.authoritative"] is True
    assert result.attributes["probe.dns.transport"] == "udp"


@pytest.mark.parametrize(
    ("query_type", "expected"), [("MX", "10 www.lab.test."), ("TXT", '"v=spf1 -all"'), ("AAAA", "::1")]
)
async def test_other_record_types(server: DNSFaultServer, query_type: str, expected: str) -> None:
    name = "mail.lab.test" if query_type == "MX" else "www.lab.test"
    result = await probe(server, name, query_type=query_type)
    assert result.attributes["dns.answers"] == (expected,)


async def test_soa_serial_is_reported(server: DNSFaultServer) -> None:
    result = await probe(server, "lab.test", query_type="SOA")
    assert result.attributes["probe.dns.soa_serial"] == 2024010101


@pytest.mark.parametrize(
    ("fault", "detail"),
    [(DNSFault.nxdomain(), "nxdomain"), (DNSFault.servfail(), "servfail"), (DNSFault.refused(), "refused")],
)
async def test_rcode_faults_are_dns_errors(server: DNSFaultServer, fault: DNSFault, detail: str) -> None:
    server.set_fault("www", fault)
    result = await probe(server)
    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("dns_error", detail)
    assert result.phases[-1].error_type == "dns_error"


async def test_accepted_rcodes_make_nxdomain_a_success(server: DNSFaultServer) -> None:
    result = await probe(server, "missing.lab.test", expect={"rcodes": ["NXDOMAIN"]})
    assert result.success and result.attributes["probe.dns.soa_serial"] == 2024010101


async def test_no_answer_is_resolver_timeout_within_the_deadline(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.no_answer())
    result = await probe(server, timeout="300ms")
    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("dns_error", "resolver_timeout")
    assert 0.29 <= result.duration_s < 1.0
    assert result.phases[-1].attributes["probe.dns.attempts"] == 2 and len(server.queries) == 2


async def test_a_lost_query_is_retransmitted_and_the_probe_succeeds(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.first_lost())
    result = await probe(server, timeout="400ms")  # two tries of 200 ms
    assert result.success, result.error
    [lookup] = result.phases
    assert (lookup.attributes["probe.dns.attempts"], lookup.attributes["probe.dns.answered_attempt"]) == (
        2,
        2,
    )
    assert result.attributes["probe.dns.attempts"] == 2
    [event] = lookup.events
    assert event.name == "probe.dns.retransmit" and event.attributes["probe.dns.attempt"] == 2
    assert 0.2 <= (event.time_ns - lookup.start_ns) / 1e9 < 0.26
    assert 0.2 <= lookup.duration_s < 0.3
    first, again = (q.message for q in server.queries)
    assert (first.id, first.question) == (again.id, again.question)


async def test_attempts_one_sees_a_single_lost_packet(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.first_lost())
    result = await probe(server, timeout="300ms", attempts=1)
    assert result.error is not None and result.error.detail == "resolver_timeout"
    assert result.phases[0].attributes["probe.dns.attempts"] == 1 and not result.phases[0].events
    assert len(server.queries) == 1


async def test_stream_transports_do_not_retransmit(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.no_answer())
    result = await probe(server, transport="tcp", timeout="300ms")
    assert result.error is not None and result.error.detail == "resolver_timeout"
    assert len(server.queries) == 1 and "probe.dns.attempts" not in result.phases[-1].attributes


def test_try_timeout_must_leave_room_for_a_retransmit() -> None:
    fields = {"name": "t", "query_name": "x.test", "timeout": "1s", "try_timeout": "1s"}
    with pytest.raises(ValidationError, match="no retransmit is ever sent"):
        DNSProbeConfig.model_validate(fields)
    assert DNSProbeConfig.model_validate({**fields, "attempts": 1}).try_timeout_s == 1.0


async def test_delay_shows_in_the_lookup_phase(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.delayed(0.15))
    result = await probe(server)
    lookup = result.phase("dns.lookup")
    assert lookup is not None and 0.14 <= lookup.duration_s < 1.0


async def test_truncated_udp_answer_falls_back_to_tcp(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.truncated())
    result = await probe(server)
    assert result.success
    assert result.attributes["probe.dns.tcp_fallback"] is True
    assert len(result.attributes["dns.answers"]) == 2  # type: ignore[arg-type]
    no_fallback = await probe(server, tcp_fallback=False, expect={"min_answers": 1})
    assert no_fallback.error is not None and no_fallback.error.detail == "too_few_answers"


async def test_tcp_transport_has_connect_phase(server: DNSFaultServer) -> None:
    result = await probe(server, transport="tcp")
    assert result.success
    assert [p.name for p in result.phases] == ["tcp.connect", "dns.lookup"]


async def test_closed_ports(server: DNSFaultServer) -> None:
    async with DNSFaultServer() as closed:
        port = closed.port
    udp = await probe(server, port=port)
    assert udp.error is not None and udp.error.detail == "resolver_unreachable"
    tcp = await probe(server, port=port, transport="tcp")
    assert tcp.error is not None and tcp.error.error_type == "connect_refused"


@pytest.mark.parametrize("transport", ["tls", "https"])
async def test_dot_and_doh(tls_server_context: ssl.SSLContext, ca_file: str, transport: str) -> None:
    async with DNSFaultServer(zone=ZONE, tls_context=tls_server_context) as server:
        port = server.tls_port if transport == "tls" else server.https_port
        result = await probe(server, port=port, transport=transport, tls={"ca_file": ca_file})
        assert result.success, result.error
        assert [p.name for p in result.phases] == ["tcp.connect", "tls.handshake", "dns.lookup"]
        assert server.queries[-1].transport == transport
        untrusted = await probe(server, port=port, transport=transport)
        assert untrusted.error is not None and untrusted.error.error_type == "tls_error"


async def test_assertions(server: DNSFaultServer) -> None:
    ok = await probe(
        server, "alias.lab.test", expect={"answer_regex": [r"IN A 127\.0\.0\.2$"], "min_answers": 3}
    )
    assert ok.success, ok.error
    bad = await probe(server, expect={"answer_regex": [r"192\.0\.2\."]})
    assert bad.error is not None and bad.error.detail == "answer_regex_mismatch"
    server.set_fault("www", DNSFault.wrong_answer("192.0.2.66"))
    wrong = await probe(server, expect={"answer_not_regex": [r"192\.0\.2\."]})
    assert wrong.error is not None and wrong.error.detail == "answer_regex_forbidden"
    not_aa = await probe(server, expect={"authoritative": False})
    assert not_aa.error is not None and not_aa.error.detail == "authoritative_mismatch"


async def test_edns_options_reach_the_server(server: DNSFaultServer) -> None:
    await probe(server, recursion_desired=False, edns={"payload": 4096, "client_subnet": "192.0.2.0/24"})
    query = server.queries[-1].message
    assert query.payload == 4096
    assert [o.to_text() for o in query.options] == ["ECS 192.0.2.0/24 scope/0"]
    assert not query.flags & 0x0100  # RD off


async def test_ad_bit_from_a_validating_resolver(server: DNSFaultServer) -> None:
    result = await probe(server, expect={"authenticated_data": True})
    assert result.success and result.attributes["probe.dns.authenticated_data"] is True
    server.set_fault("www", DNSFault(bogus_signature=True))
    failed = await probe(server, expect={"authenticated_data": True})
    assert failed.error is not None and failed.error.detail == "dnssec_not_authenticated"


async def test_local_dnssec_validation(server: DNSFaultServer) -> None:
    assert server.ds is not None
    good = await probe(server, dnssec={"validate": True, "trust_anchors": [f"DS {server.ds}"]})
    assert good.success, good.error
    assert good.attributes["probe.dns.dnssec.validated"] is True
    assert good.attributes["probe.dns.dnssec.anchored"] is True
    async with DNSFaultServer(zone=ZONE, sign=True) as other:
        assert other.ds is not None
        untrusted = await probe(server, dnssec={"validate": True, "trust_anchors": [f"DS {other.ds}"]})
        assert untrusted.error is not None and untrusted.error.detail == "dnssec_untrusted_key"
    server.set_fault("www", DNSFault(bogus_signature=True))
    bogus = await probe(server, dnssec={"validate": True})
    assert bogus.error is not None and (bogus.error.error_type, bogus.error.detail) == (
        "dns_error",
        "dnssec_bogus",
    )
    assert bogus.attributes["probe.dns.dnssec.validated"] is False


async def test_unsigned_answer_fails_validation() -> None:
    async with DNSFaultServer(zone=ZONE) as unsigned:
        result = await probe(unsigned, dnssec={"validate": True})
    assert result.error is not None and result.error.detail == "dnssec_unsigned"


def test_from_url() -> None:
    config = DNSProbeConfig.from_url("dns://127.0.0.1:5353/www.lab.test?type=aaaa&transport=tcp")
    assert (config.server, config.query_name, config.query_type, config.transport) == (
        "127.0.0.1:5353",
        "www.lab.test",
        "AAAA",
        "tcp",
    )
    assert DNSProbeConfig.from_url("dns:///example.test", name="x", timeout="1s").server is None
    with pytest.raises(ValidationError):
        DNSProbeConfig.from_url("dns:///example.test?type=NOPE")


def test_system_nameserver_reads_resolv_conf(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("options timeout:1\nnameserver 127.0.0.53\nnameserver 127.0.0.54\n")
    assert system_nameserver(str(resolv)) == "127.0.0.53"


async def test_a_retransmit_reaches_spans_otlp_json_and_the_lookup_metric(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.first_lost())
    result = await probe(server, timeout="400ms")
    telemetry = Telemetry(vantage="test", in_memory=True)
    try:
        telemetry.record(result)
        assert telemetry.span_exporter is not None
        spans = {s.name: s for s in telemetry.span_exporter.get_finished_spans()}
        request = ExportTraceServiceRequest()
        request.resource_spans.add().scope_spans.add().spans.extend(telemetry.span_exporter.spans)
        histogram = [
            point
            for rm in telemetry.collect_metrics().resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == "dns.lookup.duration"
            for point in metric.histogram.data_points
        ]
    finally:
        await telemetry.shutdown(1.0)
    lookup = spans["dns.lookup"]
    assert lookup.attributes is not None and lookup.attributes["probe.dns.attempts"] == 2
    [event] = lookup.events
    assert event.name == "probe.dns.retransmit" and event.attributes == {
        "probe.dns.query_type": "A",
        "probe.dns.attempt": 2,
    }
    assert lookup.start_time is not None and event.timestamp - lookup.start_time >= 200_000_000
    # The Collector file exporter's format carries the event, and reads back the same.
    line = message_to_json(request)
    assert '"name":"probe.dns.retransmit"' in line
    assert json_to_message(line, ExportTraceServiceRequest()) == request
    # dns.lookup.duration is the span's duration: the retransmit wait is part of the lookup.
    [point] = histogram
    assert point.count == 1 and 0.2 <= point.sum < 0.3
