"""DNSServerResolver and timed_resolve against the lab DNS fault server on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trustme
from pydantic import ValidationError

from otelprobe.errors import DNSError
from otelprobe.lab.servers.dns import DNSFault, DNSFaultServer
from otelprobe.lab.servers.dns_zone import ZoneSpec
from otelprobe.net.dns._race import RESOLUTION_DELAY_S
from otelprobe.net.dns.resolver import DNSServerResolver, SystemResolver, is_stamped
from otelprobe.probes.base import ProbeContext, timed_resolve
from otelprobe.probes.dns.probe import DNSProbe, DNSProbeConfig
from otelprobe.probes.tcp.probe import TCPProbe, TCPProbeConfig
from otelprobe.results import ProbeResult
from otelprobe.settings.common import IPFamily, ResolverConfig
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

    def __init__(self, delay_s: float, lose_first: int = 0, aaaa_extra_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.lose_first = lose_first
        self.aaaa_extra_s = aaaa_extra_s
        self._seen: dict[tuple[int, int], int] = {}
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
            query = dns.message.from_wire(wire)
            key = (query.id, query.question[0].rdtype)
            self._seen[key] = self._seen.get(key, 0) + 1
            if self._seen[key] <= self.lose_first:
                continue  # lost on the way: the resolver must send it again
            extra_s = self.aaaa_extra_s if query.question[0].rdtype == dns.rdatatype.AAAA else 0.0
            timer = threading.Timer(self.delay_s + extra_s, self._answer, (wire, peer))
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


# --- retransmits and the A/AAAA race (a lost datagram must not fail the probe) ------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def retransmits(phase: Phase) -> list[tuple[str, AttributeValue, int]]:
    """(query type, try number, ms after the phase's start) of each retransmit event."""
    return sorted(
        (
            str(e.attributes["probe.dns.query_type"]),
            e.attributes["probe.dns.attempt"],
            round((e.time_ns - phase.start_ns) / 1e6),
        )
        for e in phase.events
        if e.name == "probe.dns.retransmit"
    )


async def test_a_lost_first_query_is_sent_again_with_the_same_id_and_question(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.first_lost())
    clock = PhaseClock()
    # 400 ms over the default 2 attempts: each try waits 200 ms.
    addresses = await timed_resolve(clock, resolver_for(server, timeout="400ms"), "www.lab.test", "any", {})
    assert sorted(addresses) == ["127.0.0.1", "127.0.0.2", "::1"]
    [phase] = clock.phases
    assert not phase.failed
    assert (phase.attributes["probe.dns.attempts"], phase.attributes["probe.dns.answered_attempt"]) == (2, 2)
    events = retransmits(phase)
    assert [(kind, number) for kind, number, _ in events] == [("A", 2), ("AAAA", 2)]
    assert all(200 <= at_ms < 260 for _, _, at_ms in events), events
    assert 0.2 <= phase.duration_s < 0.3, "one retransmit step, then the answer"
    for rdtype in ("A", "AAAA"):
        sent = [q.message for q in server.queries if q.rdtype == rdtype]
        assert len(sent) == 2 and sent[0].id == sent[1].id and sent[0].question == sent[1].question


async def test_the_lookup_ends_at_the_kernel_arrival_of_the_answering_try() -> None:
    responder = SlowResponder(0.02, lose_first=1)
    try:
        resolver = DNSServerResolver(
            ResolverConfig.model_validate({"server": f"127.0.0.1:{responder.port}", "try_timeout": "100ms"})
        )
        clock = PhaseClock()
        asyncio.get_running_loop().call_later(0.11, time.sleep, 0.03)  # the answers are read late
        await timed_resolve(clock, resolver, "www.lab.test", "any", {})
        [phase] = clock.phases
        assert len(responder.received_ns) == 4 and len(responder.sent()) == 2, "two tries of A and AAAA"
        assert phase.attributes["probe.dns.answered_attempt"] == 2
        assert_ends_at_the_last_answer(phase, responder)
    finally:
        responder.close()


async def test_an_answer_to_an_earlier_try_is_accepted_and_named(server: DNSFaultServer) -> None:
    # Answers take 300 ms: the retransmit at 200 ms goes out, and the first try's answer wins.
    server.set_fault("www", DNSFault.delayed(0.3))
    clock = PhaseClock()
    resolver = DNSServerResolver(
        ResolverConfig.model_validate({"server": f"127.0.0.1:{server.port}", "try_timeout": "200ms"})
    )
    await timed_resolve(clock, resolver, "www.lab.test", "ip4", {})
    [phase] = clock.phases
    assert (phase.attributes["probe.dns.attempts"], phase.attributes["probe.dns.answered_attempt"]) == (2, 1)
    assert 0.3 <= phase.duration_s < 0.45, "not the second try's 200 + 300 ms"


async def test_attempts_one_sees_the_loss(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.first_lost())
    resolver = DNSServerResolver(
        ResolverConfig.model_validate(
            {"server": f"127.0.0.1:{server.port}", "timeout": "200ms", "attempts": 1}
        )
    )
    resolution = await resolver.resolve_stamped("www.lab.test", "ip4")
    assert resolution.error is not None and resolution.error.detail == "resolver_timeout"
    assert [len(t.sent_ns) for t in resolution.tries] == [1]


async def test_truncation_after_a_loss_still_falls_back_to_tcp(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault(drop_first=1, truncate=True))
    resolution = await resolver_for(server, timeout="400ms").resolve_stamped("www.lab.test", "ip4")
    assert sorted(resolution.addresses) == ["127.0.0.1", "127.0.0.2"]
    assert [q.transport for q in server.queries] == ["udp", "udp", "tcp"]
    assert resolution.answered_attempt == 2


async def test_every_try_lost_is_resolver_timeout_within_the_timeout(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.no_answer())
    fds = open_fds()
    clock = PhaseClock()
    started = time.perf_counter()
    with pytest.raises(DNSError) as caught:
        await timed_resolve(clock, resolver_for(server, timeout="300ms"), "www.lab.test", "any", {})
    assert 0.29 <= time.perf_counter() - started < 0.45
    assert caught.value.detail == "resolver_timeout"
    [phase] = clock.phases
    assert phase.error_detail == "resolver_timeout" and phase.attributes["probe.dns.attempts"] == 2
    assert "probe.dns.answered_attempt" not in phase.attributes
    assert [(kind, number) for kind, number, _ in retransmits(phase)] == [("A", 2), ("AAAA", 2)]
    assert open_fds() == fds, "every try's socket is closed"


async def test_lost_aaaa_goes_on_over_ipv4_after_the_resolution_delay(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault(drop=True, rdtypes=("AAAA",)))
    fds = open_fds()
    clock = PhaseClock()
    started = time.perf_counter()
    addresses = await timed_resolve(clock, resolver_for(server, timeout="1s"), "www.lab.test", "any", {})
    elapsed = time.perf_counter() - started
    assert sorted(addresses) == ["127.0.0.1", "127.0.0.2"]
    [phase] = clock.phases
    assert not phase.failed
    assert phase.attributes["probe.dns.missing_family"] == "ip6"
    assert phase.attributes["probe.dns.missing_reason"] == "late"
    # 50 ms after the A answer, not the AAAA retransmit at 500 ms nor the 1 s timeout.
    assert RESOLUTION_DELAY_S <= phase.duration_s < RESOLUTION_DELAY_S + 0.03
    assert elapsed < 0.2 and not retransmits(phase)
    assert open_fds() == fds and asyncio.all_tasks() == {asyncio.current_task()}, "the AAAA query is gone"


async def test_an_aaaa_within_the_resolution_delay_is_waited_for(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault(delay=0.02, rdtypes=("AAAA",)))
    resolution = await resolver_for(server).resolve_stamped("www.lab.test", "any")
    assert sorted(resolution.addresses) == ["127.0.0.1", "127.0.0.2", "::1"]
    assert resolution.missing_family is None


async def test_the_wire_not_the_loop_decides_whether_a_family_was_late() -> None:
    # A at 10 ms, AAAA at 40 ms: within the resolution delay. The loop is blocked from 25 to
    # 125 ms, so it reads the AAAA answer after the delay ran out by its own clock.
    responder = SlowResponder(0.01, aaaa_extra_s=0.03)
    try:
        resolver = DNSServerResolver(ResolverConfig(server=f"127.0.0.1:{responder.port}"))
        asyncio.get_running_loop().call_later(0.025, time.sleep, 0.1)
        resolution = await resolver.resolve_stamped("www.lab.test", "any")
    finally:
        responder.close()
    assert resolution.missing_family is None
    assert sorted(resolution.addresses) == ["127.0.0.1", "::1"]


async def test_prefer_ip6_goes_on_with_ipv4_when_aaaa_fails(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault(rcode=dns.rcode.SERVFAIL, rdtypes=("AAAA",)))
    resolution = await resolver_for(server).resolve_stamped("www.lab.test", "prefer_ip6")
    assert sorted(resolution.addresses) == ["127.0.0.1", "127.0.0.2"]
    assert (resolution.missing_family, resolution.missing_reason) == ("ip6", "servfail")
    # ip: all wants every address: the same failure fails it, as before.
    all_of_them = await resolver_for(server).resolve_stamped("www.lab.test", "all")
    assert all_of_them.error is not None and all_of_them.error.detail == "servfail"


async def test_a_probe_deadline_mid_retransmit_leaves_nothing_behind(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.no_answer())
    fds = open_fds()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.15):
            await resolver_for(server, timeout="1s").resolve_stamped("www.lab.test", "any")
    assert open_fds() == fds and asyncio.all_tasks() == {asyncio.current_task()}


@pytest.fixture
async def ipv4_listener() -> AsyncIterator[int]:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    listener = await asyncio.start_server(close, "127.0.0.1", 0)
    async with listener:
        yield int(listener.sockets[0].getsockname()[1])


async def tcp_probe(server: DNSFaultServer, port: int, ip: str, timeout: str = "1s") -> ProbeResult:
    config = TCPProbeConfig.model_validate(
        {
            "name": "t",
            "address": f"www.lab.test:{port}",
            "ip": ip,
            "timeout": "2s",
            "resolver": {"server": f"127.0.0.1:{server.port}", "timeout": timeout},
        }
    )
    [result] = await TCPProbe(config, ProbeContext(vantage="test")).run()
    return result


async def test_an_ip_any_probe_with_every_aaaa_lost_succeeds_over_ipv4(
    server: DNSFaultServer, ipv4_listener: int
) -> None:
    server.set_records("www", "A", ["127.0.0.1"])
    server.set_fault("www", DNSFault(drop=True, rdtypes=("AAAA",)))
    result = await tcp_probe(server, ipv4_listener, "any")
    assert result.success, result.error
    lookup = result.phase("dns.lookup")
    assert lookup is not None and lookup.attributes["probe.dns.missing_family"] == "ip6"
    assert result.attributes["network.peer.address"] == "127.0.0.1"


async def test_a_probe_survives_the_loss_of_every_first_query(
    server: DNSFaultServer, ipv4_listener: int
) -> None:
    server.set_records("www", "A", ["127.0.0.1"])
    server.set_fault("www", DNSFault.first_lost())
    result = await tcp_probe(server, ipv4_listener, "ip4", timeout="400ms")
    assert result.success, result.error
    lookup = result.phase("dns.lookup")
    assert lookup is not None and lookup.attributes["probe.dns.attempts"] == 2


async def test_a_probe_with_everything_lost_fails_as_dns_error_within_the_resolver_timeout(
    server: DNSFaultServer, ipv4_listener: int
) -> None:
    server.set_fault("www", DNSFault.no_answer())
    result = await tcp_probe(server, ipv4_listener, "any", timeout="300ms")
    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("dns_error", "resolver_timeout")
    assert 0.29 <= result.duration_s < 0.45


def test_try_timeout_is_checked_against_the_timeout() -> None:
    with pytest.raises(ValidationError, match=r"try_timeout \(2s\) must be shorter than timeout \(1s\)"):
        ResolverConfig.model_validate({"server": "127.0.0.1", "timeout": "1s", "try_timeout": "2s"})
    one_try = ResolverConfig.model_validate({"server": "127.0.0.1", "attempts": 1, "try_timeout": "5s"})
    assert one_try.try_timeout_s == 5.0
    with pytest.raises(ValidationError):
        ResolverConfig.model_validate({"server": "127.0.0.1", "attempts": 0})


async def test_a_probe_deadline_during_the_tries_still_shows_them(
    server: DNSFaultServer, ipv4_listener: int
) -> None:
    server.set_fault("www", DNSFault.no_answer())
    config = TCPProbeConfig.model_validate(
        {
            "name": "t",
            "address": f"www.lab.test:{ipv4_listener}",
            "ip": "ip4",
            "timeout": "350ms",  # before the resolver's own 1 s
            "resolver": {"server": f"127.0.0.1:{server.port}", "attempts": 5, "try_timeout": "100ms"},
        }
    )
    [result] = await TCPProbe(config, ProbeContext(vantage="test")).run()
    assert result.error is not None and result.error.detail == "resolver_timeout"
    lookup = result.phase("dns.lookup")
    assert lookup is not None and lookup.error_detail == "resolver_timeout"
    # Tries at 0, 100, 200 and 300 ms (give or take a late timer); the deadline at 350 ms ends it.
    tries = lookup.attributes["probe.dns.attempts"]
    assert isinstance(tries, int) and 3 <= tries == len(server.queries)
    assert [number for _, number, _ in retransmits(lookup)] == list(range(2, tries + 1))
    assert result.start_ns < lookup.start_ns and 0.3 <= lookup.duration_s < 0.45
