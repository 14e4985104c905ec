"""Connection racing (net/happy_eyeballs.py) against refused, black-holed and listening loopback ports.

A port is made refused on one address (a bound socket that never listens, lab RefusedPort) or
black-holed (a listener with a full accept queue, lab BlackholePort) while the same port number
listens on another, so one name's addresses behave differently, as IPv6 and IPv4 often do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from otelprobe.errors import ConnectRefused, ConnectTimeout
from otelprobe.lab.certs import LabCA
from otelprobe.lab.servers.dns import DNSFaultServer
from otelprobe.lab.servers.ports import BlackholePort, RefusedPort
from otelprobe.lab.servers.tls import TLSFront
from otelprobe.net.connection import TimedConnection
from otelprobe.net.happy_eyeballs import (
    CONNECTION_ATTEMPT_DELAY_S,
    PROBE_CONNECT_ABANDONED,
    connect_first,
    connect_order,
    most_telling,
)
from otelprobe.probes.base import Attributes, ProbeContext, run_attempt
from otelprobe.probes.grpc import GRPCProbe, GRPCProbeConfig
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.probes.http.probe import HTTPProbe
from otelprobe.probes.tcp.probe import TCPProbe, TCPProbeConfig
from otelprobe.probes.tls import TLSProbe, TLSProbeConfig
from otelprobe.probes.websocket import WebSocketProbe, WebSocketProbeConfig
from otelprobe.results import ProbeResult
from otelprobe.settings.common import IPFamily
from otelprobe.timing import Phase, PhaseClock
from tests.support.tls_servers import close_after_read, serve

# Loop and scheduler jitter on a loaded 2-core machine stays far below this.
SLACK_S = 0.15


class PinnedResolver:
    """Resolves every name to the same addresses, in the given order."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)

    async def resolve(self, host: str, family: IPFamily) -> list[str]:
        return list(self.addresses)


@contextlib.contextmanager
def refused(*hosts: str, port: int) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for host in hosts:
            stack.enter_context(RefusedPort(host, port))
        yield


async def race(clock: PhaseClock, addresses: list[str], port: int, **options: Any) -> TimedConnection:
    """connect_first under a 2 s bound: a broken race fails here instead of hanging the test."""
    async with asyncio.timeout(2):
        return await connect_first(clock, addresses, port, **options)


def connects(clock: PhaseClock) -> list[Phase]:
    return sorted((p for p in clock.phases if p.name == "tcp.connect"), key=lambda p: p.start_ns)


def peer(phase: Phase) -> object:
    return phase.attributes["network.peer.address"]


# --- order and error choice ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        (["::1", "::2", "127.0.0.1", "127.0.0.2"], ["::1", "127.0.0.1", "::2", "127.0.0.2"]),
        (["127.0.0.1", "127.0.0.2", "::1"], ["127.0.0.1", "::1", "127.0.0.2"]),
        (["127.0.0.1", "127.0.0.2"], ["127.0.0.1", "127.0.0.2"]),
        (["::1", "::1", "127.0.0.1"], ["::1", "127.0.0.1"]),
    ],
)
def test_families_alternate_from_the_preferred_one(addresses: list[str], expected: list[str]) -> None:
    assert connect_order(addresses) == expected


def test_a_source_address_keeps_its_family() -> None:
    assert connect_order(["::1", "127.0.0.1", "127.0.0.2"], "127.0.0.1") == ["127.0.0.1", "127.0.0.2"]
    assert connect_order(["::1"], "127.0.0.1") == ["::1"]  # nothing of its family: bind will say why


def test_a_refusal_tells_more_than_silence_and_silence_more_than_no_route() -> None:
    unreachable = ("::1", ConnectTimeout("unreachable"))
    silent = ("127.0.0.1", ConnectTimeout("connect_timeout"))
    refusal = ("127.0.0.2", ConnectRefused("connection_refused"))
    assert most_telling([unreachable, silent, refusal]) == refusal
    assert most_telling([unreachable, silent]) == silent
    second_refusal = ("127.0.0.3", ConnectRefused("connection_reset"))
    assert most_telling([refusal, second_refusal]) == refusal  # equals: the preferred address


# --- the race on real sockets -------------------------------------------------------------------


async def test_a_refused_first_address_falls_back_at_once() -> None:
    clock = PhaseClock()
    attrs: Attributes = {}
    async with serve(close_after_read) as port:
        with refused("::1", port=port):
            conn = await race(clock, ["::1", "127.0.0.1"], port, attrs=attrs)
            conn.close()
    first, second = connects(clock)
    assert (peer(first), first.error_type, first.error_detail) == (
        "::1",
        "connect_refused",
        "connection_refused",
    )
    assert (peer(second), second.error_type) == ("127.0.0.1", None)
    # The failure started the next attempt; it did not wait for the attempt delay.
    assert (second.start_ns - first.end_ns) / 1e9 < CONNECTION_ATTEMPT_DELAY_S / 2
    assert attrs["network.peer.address"] == "127.0.0.1"
    assert clock.open_phase is None


@pytest.mark.parametrize("delay_s", [CONNECTION_ATTEMPT_DELAY_S, 0.05])
async def test_a_silent_first_address_gets_company_after_the_delay(delay_s: float) -> None:
    clock = PhaseClock()
    attrs: Attributes = {}
    async with serve(close_after_read) as port:
        with BlackholePort("::1", port):
            conn = await race(clock, ["::1", "127.0.0.1"], port, attempt_delay_s=delay_s, attrs=attrs)
            assert conn.peer == ("127.0.0.1", port)
            conn.close()
    loser, winner = connects(clock)
    assert peer(loser) == "::1" and peer(winner) == "127.0.0.1"
    assert delay_s <= (winner.start_ns - loser.start_ns) / 1e9 < delay_s + SLACK_S
    # The loser is not a failure: it was cut short when the winner connected.
    assert loser.error_type is None and loser.attributes[PROBE_CONNECT_ABANDONED] is True
    assert winner.error_type is None and PROBE_CONNECT_ABANDONED not in winner.attributes
    assert 0 <= (loser.end_ns - winner.end_ns) / 1e9 < SLACK_S
    assert attrs["network.peer.address"] == "127.0.0.1"


async def test_addresses_of_one_family_fall_back_too() -> None:
    clock = PhaseClock()
    async with serve(close_after_read) as port:
        with BlackholePort("127.0.0.2", port), refused("127.0.0.3", port=port):
            conn = await race(clock, ["127.0.0.2", "127.0.0.3", "127.0.0.1"], port)
            conn.close()
    assert [(peer(p), p.error_detail) for p in connects(clock)] == [
        ("127.0.0.2", None),
        ("127.0.0.3", "connection_refused"),
        ("127.0.0.1", None),
    ]
    silent, refusal, winner = connects(clock)
    # The second attempt joined the silent one after the delay; its refusal started the third at once.
    assert CONNECTION_ATTEMPT_DELAY_S <= (refusal.start_ns - silent.start_ns) / 1e9
    assert (winner.start_ns - refusal.end_ns) / 1e9 < CONNECTION_ATTEMPT_DELAY_S / 2
    assert silent.attributes[PROBE_CONNECT_ABANDONED] is True


async def test_all_refused_is_connect_refused_naming_every_address() -> None:
    clock = PhaseClock()
    attrs: Attributes = {}
    with RefusedPort("127.0.0.1") as port_holder, refused("::1", port=port_holder.port):
        with pytest.raises(ConnectRefused) as raised:
            await race(clock, ["::1", "127.0.0.1"], port_holder.port, attrs=attrs)
    assert raised.value.detail == "connection_refused"
    message = str(raised.value)
    assert "::1 connection_refused" in message and "127.0.0.1 connection_refused" in message
    assert [p.error_type for p in connects(clock)] == ["connect_refused", "connect_refused"]
    assert attrs["network.peer.address"] == "::1"


async def test_the_probe_deadline_ends_the_race_as_connect_timeout() -> None:
    deadline_s = 0.6
    with BlackholePort("::1") as hole, refused("127.0.0.1", port=hole.port):

        async def body(clock: PhaseClock, attrs: Attributes) -> None:
            (await connect_first(clock, ["::1", "127.0.0.1"], hole.port, attrs=attrs)).close()

        result = await run_attempt("tcp", "t", 1, deadline_s, body)
    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("connect_timeout", "connect_timeout")
    assert deadline_s <= result.duration_s < deadline_s + SLACK_S
    silent, refusal = sorted((p for p in result.phases), key=lambda p: p.start_ns)
    assert (peer(silent), silent.error_detail) == ("::1", "connect_timeout")
    assert PROBE_CONNECT_ABANDONED not in silent.attributes
    assert (peer(refusal), refusal.error_detail) == ("127.0.0.1", "connection_refused")


async def test_a_single_address_is_one_plain_connect() -> None:
    clock = PhaseClock()
    async with serve(close_after_read) as port:
        (await race(clock, ["127.0.0.1"], port)).close()
    [phase] = clock.phases
    assert phase.error_type is None and PROBE_CONNECT_ABANDONED not in phase.attributes


# --- the probes ---------------------------------------------------------------------------------


async def tcp_probe(address: str, **fields: Any) -> list[ProbeResult]:
    config = TCPProbeConfig.model_validate({"name": "t", "address": address, "timeout": "2s", **fields})
    return await TCPProbe(config, ProbeContext(vantage="test")).run()


@pytest.fixture
async def dns() -> AsyncIterator[DNSFaultServer]:
    zone = {
        "dual": {"AAAA": ["::1"], "A": ["127.0.0.1"]},
    }
    async with DNSFaultServer(zone=zone) as server:
        yield server


async def test_tcp_prefer_ip6_falls_back_to_ipv4(dns: DNSFaultServer) -> None:
    resolver = {"server": f"127.0.0.1:{dns.port}"}
    async with serve(close_after_read) as port:
        with refused("::1", port=port):
            [result] = await tcp_probe(f"dual.lab.test:{port}", ip="prefer_ip6", resolver=resolver)
    assert result.success, result.error
    assert [(p.name, p.attributes.get("network.peer.address"), p.error_type) for p in result.phases] == [
        ("dns.lookup", None, None),
        ("tcp.connect", "::1", "connect_refused"),
        ("tcp.connect", "127.0.0.1", None),
    ]
    assert result.attributes["network.peer.address"] == "127.0.0.1"


async def test_tcp_ip4_passes_a_black_holed_address() -> None:
    # Pinned: a DNS server may shuffle the records of one RRset, and the black hole must be first.
    async with serve(close_after_read) as port:
        fields = {"address": f"v4s.test:{port}", "ip": "ip4", "timeout": "2s"}
        config = TCPProbeConfig.model_validate({"name": "t", **fields})
        context = ProbeContext(vantage="test", resolver=PinnedResolver("127.0.0.2", "127.0.0.1"))
        with BlackholePort("127.0.0.2", port):
            [result] = await TCPProbe(config, context).run()
    assert result.success, result.error
    connect_phases = [p for p in result.phases if p.name == "tcp.connect"]
    assert [(peer(p), p.attributes.get(PROBE_CONNECT_ABANDONED)) for p in connect_phases] == [
        ("127.0.0.2", True),
        ("127.0.0.1", None),
    ]
    assert result.attributes["network.peer.address"] == "127.0.0.1"
    assert CONNECTION_ATTEMPT_DELAY_S <= result.duration_s < CONNECTION_ATTEMPT_DELAY_S + SLACK_S


async def test_tcp_ip_all_still_probes_each_address_alone(dns: DNSFaultServer) -> None:
    resolver = {"server": f"127.0.0.1:{dns.port}"}
    async with serve(close_after_read) as port:
        with refused("::1", port=port):
            results = await tcp_probe(f"dual.lab.test:{port}", ip="all", resolver=resolver)
    outcomes = sorted((r.attributes["network.peer.address"], r.error is None) for r in results)
    assert outcomes == [("127.0.0.1", True), ("::1", False)]
    assert all(len([p for p in r.phases if p.name == "tcp.connect"]) == 1 for r in results)


def pinned() -> ProbeContext:
    return ProbeContext(vantage="test", resolver=PinnedResolver("::1", "127.0.0.1"))


def assert_fell_back(result: ProbeResult) -> None:
    assert result.success, result.error
    connect_phases = [p for p in result.phases if p.name == "tcp.connect"]
    assert [(peer(p), p.error_type) for p in connect_phases] == [
        ("::1", "connect_refused"),
        ("127.0.0.1", None),
    ]
    assert result.attributes["network.peer.address"] == "127.0.0.1"


async def test_tls_falls_back(lab_ca: LabCA, lab_ca_file: str) -> None:
    async with TLSFront(lab_ca) as front:
        port = front.port
        with refused("::1", port=port):
            fields = {"address": f"localhost:{port}", "ip": "prefer_ip6", "tls": {"ca_file": lab_ca_file}}
            config = TLSProbeConfig.model_validate({"name": "t", **fields})
            [result] = await TLSProbe(config, pinned()).run()
    assert_fell_back(result)
    assert [p.name for p in result.phases][-1] == "tls.handshake"


async def test_grpc_falls_back() -> None:
    server = grpc.aio.server()
    servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.start()
    try:
        with refused("::1", port=port):
            config = GRPCProbeConfig.from_url(f"grpc://health.test:{port}/", name="g", ip="prefer_ip6")
            [result] = await GRPCProbe(config, pinned()).run()
    finally:
        await server.stop(None)
    assert_fell_back(result)


async def _echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for _ in ws:
        pass
    return ws


async def test_websocket_falls_back() -> None:
    app = web.Application()
    app.router.add_get("/ws", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        with refused("::1", port=port):
            config = WebSocketProbeConfig.from_url(f"ws://ws.test:{port}/ws", name="w", ip="prefer_ip6")
            [result] = await WebSocketProbe(config, pinned()).run()
    finally:
        await runner.cleanup()
    assert_fell_back(result)


async def test_http_falls_back() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        with refused("::1", port=port):
            config = HTTPProbeConfig.from_url(f"http://web.test:{port}/", name="h", ip="prefer_ip6")
            [result] = await HTTPProbe(config, pinned()).run()
    finally:
        await runner.cleanup()
    assert_fell_back(result)
