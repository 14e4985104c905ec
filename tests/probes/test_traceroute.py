"""Path traces on loopback (one hop) and through a router namespace (two hops).

The two-hop path is src -- router -- dst, three network namespaces this module creates with
addresses that exist only inside them, and deletes afterwards.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from otelprobe import names
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.icmp.probe import ICMPProbe, ICMPProbeConfig
from otelprobe.probes.icmp.traceroute import TraceMethod, trace_path
from otelprobe.results import ProbeResult
from otelprobe.timing import Phase, PhaseClock
from tests.support.netns_helpers import RAW_ICMP_DENIED, in_netns, namespaces, needs_root

ROUTER_NEAR, ROUTER_FAR, DESTINATION, NOWHERE = "10.231.1.2", "10.231.2.1", "10.231.2.2", "10.231.3.3"


pytestmark = pytest.mark.skipif(
    RAW_ICMP_DENIED is not None, reason=f"traceroute needs raw ICMP: {RAW_ICMP_DENIED}"
)


def _trace(host: str, method: TraceMethod, max_hops: int = 8, timeout_s: float = 2.0) -> list[Phase]:
    return asyncio.run(
        trace_path(host, max_hops=max_hops, timeout_s=timeout_s, clock=PhaseClock(), method=method)
    )


def _hop_view(hops: list[Phase]) -> list[tuple[object, ...]]:
    return [
        (
            hop.attributes[names.PROBE_HOP_TTL],
            hop.attributes.get(names.NETWORK_PEER_ADDRESS),
            hop.attributes[names.PROBE_TRACEROUTE_REPLY],
            hop.attributes[names.PROBE_TRACEROUTE_REACHED],
        )
        for hop in hops
    ]


@pytest.mark.parametrize(
    ("host", "method", "reply"),
    [
        ("127.0.0.1", "udp", "port_unreachable"),
        ("127.0.0.1", "icmp", "echo_reply"),
        ("::1", "udp", "port_unreachable"),
        ("::1", "icmp", "echo_reply"),
    ],
)
def test_loopback_is_one_hop(host: str, method: TraceMethod, reply: str) -> None:
    hops = _trace(host, method)
    assert _hop_view(hops) == [(1, host, reply, True)]
    assert hops[0].name == names.SPAN_TRACEROUTE_HOP
    assert 0 <= hops[0].duration_s < 1.0


@pytest.fixture(scope="module")
def path() -> Iterator[str]:
    """src -- router -- dst; yields the src namespace's name."""
    tag = f"otp-tr-{os.getpid()}"
    src, router, dst = f"{tag}-s", f"{tag}-r", f"{tag}-d"
    commands = [
        f"ip -n {src} link add eth0 type veth peer name west netns {router}",
        f"ip -n {dst} link add eth0 type veth peer name east netns {router}",
        f"ip -n {src} addr add 10.231.1.1/24 dev eth0",
        f"ip -n {router} addr add {ROUTER_NEAR}/24 dev west",
        f"ip -n {router} addr add {ROUTER_FAR}/24 dev east",
        f"ip -n {dst} addr add {DESTINATION}/24 dev eth0",
        *(f"ip -n {ns} link set lo up" for ns in (src, router, dst)),
        f"ip -n {src} link set eth0 up",
        f"ip -n {dst} link set eth0 up",
        f"ip -n {router} link set west up",
        f"ip -n {router} link set east up",
        f"ip -n {src} route add default via {ROUTER_NEAR}",
        f"ip -n {dst} route add default via {ROUTER_FAR}",
        f"ip netns exec {router} sysctl -qw net.ipv4.ip_forward=1",
        # Linux rate-limits ICMP errors per peer (burst of 6, then 1/s): the tests here send more.
        *(f"ip netns exec {ns} sysctl -qw net.ipv4.icmp_ratelimit=0" for ns in (router, dst)),
    ]
    with namespaces([src, router, dst], commands):
        yield src


@needs_root
def test_unroutable_destination_ends_at_the_router(path: str) -> None:
    # First in the module on purpose: the router's "no route" errors share a per-peer token
    # bucket (route.error_cost, global, not ours to change) that later tests' ICMP drains.
    hops = in_netns(path, lambda: _trace(NOWHERE, "udp"))
    [(ttl, responder, reply, reached)] = _hop_view(hops)
    assert (ttl, responder, reached) == (1, ROUTER_NEAR, False)
    assert str(reply).startswith("unreachable_code_")


@needs_root
@pytest.mark.parametrize(("method", "last_reply"), [("udp", "port_unreachable"), ("icmp", "echo_reply")])
def test_two_hops_through_a_router(path: str, method: TraceMethod, last_reply: str) -> None:
    hops = in_netns(path, lambda: _trace(DESTINATION, method))
    assert _hop_view(hops) == [
        (1, ROUTER_NEAR, "time_exceeded", False),
        (2, DESTINATION, last_reply, True),
    ]
    assert hops[0].start_ns <= hops[1].start_ns


def _probe(**overrides: object) -> list[ProbeResult]:
    config = ICMPProbeConfig.model_validate({"name": "path", "timeout": "3s", **overrides})
    return asyncio.run(ICMPProbe(config, ProbeContext(vantage="test")).run())


@needs_root
def test_traceroute_mode_of_the_icmp_probe(path: str) -> None:
    [reached] = in_netns(path, lambda: _probe(host=DESTINATION, mode="traceroute"))
    [unreached] = in_netns(path, lambda: _probe(host=NOWHERE, mode="traceroute"))

    assert reached.success, reached.error
    assert [p.name for p in reached.phases] == [names.SPAN_TRACEROUTE_HOP] * 2
    assert reached.attributes[names.PROBE_TRACEROUTE_HOPS] == 2
    assert unreached.error is not None
    assert (unreached.error.error_type, unreached.error.detail) == (
        "connect_timeout",
        "destination_not_reached",
    )


@needs_root
def test_echo_with_too_small_ttl_is_ttl_exceeded(path: str) -> None:
    [result] = in_netns(path, lambda: _probe(host=DESTINATION, ttl=1, count=1, socket="raw"))

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("connect_timeout", "ttl_exceeded")
    [echo] = result.phases
    assert echo.error_type == "connect_timeout"
    assert echo.attributes[names.PROBE_ICMP_RESPONDER] == ROUTER_NEAR
