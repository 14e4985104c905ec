"""DNSServerResolver and timed_resolve against the lab DNS fault server on loopback."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rrset
import pytest
import trustme

from otelprobe.config.common import IPFamily, ResolverConfig
from otelprobe.errors import DNSError
from otelprobe.lab.servers.dns import DNSFault, DNSFaultServer
from otelprobe.lab.servers.dns_zone import ZoneSpec
from otelprobe.probes.base import ProbeContext, timed_resolve
from otelprobe.probes.dns import DNSProbe, DNSProbeConfig
from otelprobe.probes.resolver import DNSServerResolver, SystemResolver, is_stamped
from otelprobe.timing import AttributeValue, Phase, PhaseClock

ZONE: ZoneSpec = {
    "www": {"A": ["127.0.0.1", "127.0.0.2"], "AAAA": ["::1"]},
    "v4only": {"A": ["127.0.0.3"]},
    "alias": {"CNAME": "www"},
}


@pytest.fixture
async def server() -> AsyncIterator[DNSFaultServer]:
    async with DNSFaultServer(zone=ZONE) as s:
        yield s


class SlowResponder:
    """A UDP DNS server on threads that answers each query after `delay_s` and notes when it sent.

    `sent()` gives, per answer, the times just before and just after its sendto(): on loopback the
    receiver's stack runs inside that call, so the answer's kernel arrival stamp lies between them.
    The lab server answers from the test's own event loop, so a pause of this process (a full GC
    pass lands at a fixed point of the suite and takes ~60 ms) delays the answer itself; checking
    against the injected delay then fails although every stamp is right. This checks the wire.
    """

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.received_ns: list[int] = []
        self._sent: list[tuple[int, int]] = []
        self._timers: list[threading.Timer] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._server = threading.Thread(target=self._serve, daemon=True)
        self._server.start()

    def sent(self) -> list[tuple[int, int]]:
        """(before, after) each answer's sendto, once the answers due so far are out."""
        for timer in list(self._timers):
            timer.join(5)
        return sorted(self._sent)

    def _serve(self) -> None:
        while not self._stop.is_set():  # bounded by close(): the timeout re-checks the flag
            try:
                wire, peer = self._sock.recvfrom(512)
            except TimeoutError:
                continue
            self.received_ns.append(time.perf_counter_ns())
            timer = threading.Timer(self.delay_s, self._answer, (wire, peer))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()

    def _answer(self, wire: bytes, peer: tuple[str, int]) -> None:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        question = query.question[0]
        address = "::1" if question.rdtype == dns.rdatatype.AAAA else "127.0.0.1"
        response.answer.append(dns.rrset.from_text(question.name, 60, "IN", question.rdtype, address))
        data = response.to_wire()
        before = time.perf_counter_ns()
        self._sock.sendto(data, peer)
        self._sent.append((before, time.perf_counter_ns()))

    def close(self) -> None:
        self._stop.set()
        self._server.join(5)
        self.sent()
        self._sock.close()


@pytest.fixture
def slow_responder() -> Iterator[SlowResponder]:
    responder = SlowResponder(0.05)
    try:
        yield responder
    finally:
        responder.close()


def resolver_for(server: DNSFaultServer, transport: str = "udp", timeout: str = "2s") -> DNSServerResolver:
    port = {"udp": server.port, "tcp": server.port, "tls": server.tls_port, "https": server.https_port}
    return DNSServerResolver(
        ResolverConfig.model_validate(
            {"server": f"127.0.0.1:{port[transport]}", "transport": transport, "timeout": timeout}
        )
    )


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("any", ["127.0.0.1", "127.0.0.2", "::1"]),
        ("ip4", ["127.0.0.1", "127.0.0.2"]),
        ("ip6", ["::1"]),
        ("prefer_ip6", ["::1", "127.0.0.1", "127.0.0.2"]),
    ],
)
async def test_addresses_in_family_order(
    server: DNSFaultServer, family: IPFamily, expected: list[str]
) -> None:
    addresses = await resolver_for(server).resolve("www.lab.test", family)
    # Record order within an RRset is the server's choice; the family order is ours.
    assert [":" in a for a in addresses] == [":" in a for a in expected]
    assert sorted(addresses) == sorted(expected)


async def test_cname_is_followed_in_the_answer(server: DNSFaultServer) -> None:
    assert sorted(await resolver_for(server).resolve("alias.lab.test", "ip4")) == ["127.0.0.1", "127.0.0.2"]


@pytest.mark.parametrize(
    ("name", "fault", "family", "detail"),
    [
        ("missing.lab.test", None, "any", "nxdomain"),
        ("www.lab.test", DNSFault.servfail(), "any", "servfail"),
        ("www.lab.test", DNSFault.refused(), "ip4", "refused"),
        ("v4only.lab.test", None, "ip6", "no_address_for_family"),
    ],
)
async def test_failures_are_dns_errors_with_their_detail(
    server: DNSFaultServer, name: str, fault: DNSFault | None, family: IPFamily, detail: str
) -> None:
    if fault is not None:
        server.set_fault("www", fault)
    with pytest.raises(DNSError) as caught:
        await resolver_for(server).resolve(name, family)
    assert caught.value.detail == detail
    # An answer arrived, so the lookup's end is still the wire's.
    resolution = await resolver_for(server).resolve_stamped(name, family)
    assert resolution.error is not None and resolution.error.detail == detail
    assert resolution.sent_ns is not None and resolution.answered_ns is not None


async def test_no_answer_is_resolver_timeout(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.no_answer())
    started = time.perf_counter()
    resolution = await resolver_for(server, timeout="200ms").resolve_stamped("www.lab.test", "any")
    assert 0.19 < time.perf_counter() - started < 1.5
    assert resolution.error is not None and resolution.error.detail == "resolver_timeout"
    assert resolution.answered_ns is None


async def test_closed_port_is_resolver_unreachable(server: DNSFaultServer) -> None:
    await server.stop()
    resolution = await resolver_for(server).resolve_stamped("www.lab.test", "ip4")
    assert resolution.error is not None and resolution.error.detail == "resolver_unreachable"


async def test_a_and_aaaa_are_asked_in_parallel(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.delayed(0.1))
    started = time.perf_counter()
    addresses = await resolver_for(server).resolve("www.lab.test", "any")
    elapsed = time.perf_counter() - started
    assert sorted(addresses) == ["127.0.0.1", "127.0.0.2", "::1"]
    assert 0.1 <= elapsed < 0.18, "two 100 ms answers in parallel cost one delay, not two"
    assert sorted(q.rdtype for q in server.queries) == ["A", "AAAA"]


async def test_truncated_answer_falls_back_to_tcp(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.truncated())
    resolution = await resolver_for(server).resolve_stamped("www.lab.test", "ip4")
    assert sorted(resolution.addresses) == ["127.0.0.1", "127.0.0.2"]
    assert [q.transport for q in server.queries] == ["udp", "tcp"]
    assert resolution.answered_ns is not None


# Slack for the realtime -> monotonic offset that converts a kernel stamp (a bracket of clock reads).
_OFFSET_SLACK_NS = 200_000


def assert_ends_at_the_last_answer(phase: Phase, responder: SlowResponder) -> None:
    """The phase starts before the first query reached the server and ends at the last answer's arrival."""
    assert phase.start_ns <= min(responder.received_ns)
    last_before, last_after = responder.sent()[-1]
    assert last_before - _OFFSET_SLACK_NS <= phase.end_ns <= last_after + _OFFSET_SLACK_NS
    assert phase.duration_s >= responder.delay_s


async def test_phase_ends_at_the_kernel_arrival_of_the_last_answer(slow_responder: SlowResponder) -> None:
    resolver = DNSServerResolver(ResolverConfig(server=f"127.0.0.1:{slow_responder.port}"))
    clock = PhaseClock()
    # A busy loop from 30 to 80 ms: the answers arrive at 50 ms and are read at 80 ms.
    asyncio.get_running_loop().call_later(0.03, time.sleep, 0.05)
    entered_ns = time.perf_counter_ns()
    addresses = await timed_resolve(clock, resolver, "www.lab.test", "any", {})
    returned_ns = time.perf_counter_ns()
    [phase] = clock.phases
    assert returned_ns - entered_ns > 75_000_000, "the loop read the answers late"
    assert phase.name == "dns.lookup" and not phase.failed
    assert phase.attributes["dns.answers"] == tuple(addresses) and len(addresses) == 2
    assert entered_ns < phase.start_ns < phase.end_ns <= returned_ns
    assert len(slow_responder.sent()) == 2, "A and AAAA"
    assert_ends_at_the_last_answer(phase, slow_responder)


async def test_failed_phase_keeps_its_detail_and_wire_edges(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.nxdomain())
    clock = PhaseClock()
    with pytest.raises(DNSError):
        await timed_resolve(clock, resolver_for(server), "www.lab.test", "any", {})
    [phase] = clock.phases
    assert (phase.error_type, phase.error_detail) == ("dns_error", "nxdomain")
    assert phase.end_ns > phase.start_ns


async def test_system_resolver_phase_is_user_space() -> None:
    clock = PhaseClock()
    assert "127.0.0.1" in await timed_resolve(clock, SystemResolver(), "localhost", "ip4", {})
    assert [p.name for p in clock.phases] == ["dns.lookup"]
    assert not is_stamped(SystemResolver())
    assert is_stamped(DNSServerResolver(ResolverConfig(server="127.0.0.1:53")))


class ListResolver:
    """A resolver with only the plain seam (as a test fake or a third-party resolver has)."""

    async def resolve(self, host: str, family: IPFamily) -> list[str]:
        return ["192.0.2.1"]


async def test_plain_resolvers_still_work_through_timed_resolve() -> None:
    clock, attrs = PhaseClock(), dict[str, AttributeValue]()
    assert await timed_resolve(clock, ListResolver(), "x.lab.test", "any", attrs) == ["192.0.2.1"]
    [phase] = clock.phases
    assert phase.attributes["dns.answers"] == ("192.0.2.1",)
    assert attrs == {"dns.question.name": "x.lab.test"}


@pytest.fixture
async def tls_server(
    cert_authority: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[DNSFaultServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert_authority.issue_cert("127.0.0.1").configure_cert(context)
    ca = tmp_path / "ca.pem"
    cert_authority.cert_pem.write_to_path(str(ca))
    # The resolver trusts the system store; OpenSSL reads SSL_CERT_FILE for it.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    async with DNSFaultServer(zone=ZONE, tls_context=context) as s:
        yield s


@pytest.mark.parametrize("transport", ["tcp", "tls", "https"])
async def test_stream_transports(tls_server: DNSFaultServer, transport: str) -> None:
    tls_server.set_fault("www", DNSFault.delayed(0.05))
    clock = PhaseClock()
    started = time.perf_counter()
    addresses = await timed_resolve(clock, resolver_for(tls_server, transport), "www.lab.test", "any", {})
    assert sorted(addresses) == ["127.0.0.1", "127.0.0.2", "::1"] and addresses[-1] == "::1"
    assert time.perf_counter() - started < 0.5, "A and AAAA on parallel connections"
    assert {q.transport for q in tls_server.queries} == {transport}
    # Connecting is part of the lookup; only dns.lookup lands on the attempt's clock.
    [phase] = clock.phases
    assert phase.name == "dns.lookup" and phase.duration_s >= 0.05


async def test_dns_probe_lookup_uses_the_same_wire_edges(slow_responder: SlowResponder) -> None:
    config = DNSProbeConfig.model_validate(
        {
            "name": "t",
            "server": f"127.0.0.1:{slow_responder.port}",
            "query_name": "www.lab.test",
            "timeout": "2s",
        }
    )
    asyncio.get_running_loop().call_later(0.03, time.sleep, 0.05)  # the answer is read late
    [result] = await DNSProbe(config, ProbeContext(vantage="test")).run()
    [phase] = result.phases
    assert result.start_ns < phase.start_ns < phase.end_ns < result.end_ns
    assert_ends_at_the_last_answer(phase, slow_responder)
