"""`traceroute_on_failure` on the HTTP and TCP probes: a failed attempt carries its path trace.

Loopback targets (a closed port answers with RST, and its path is one hop), and an unroutable
address behind a router inside two network namespaces this module creates and deletes.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from otelprobe.lab.servers.http import HTTPFaultServer
from otelprobe.lab.servers.ports import RefusedPort
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.probes.http.probe import HTTPProbe
from otelprobe.probes.tcp.probe import TCPProbe, TCPProbeConfig
from otelprobe.results import ProbeResult
from tests.support.netns_helpers import RAW_ICMP_DENIED, in_netns, namespaces, needs_root

T = TypeVar("T")
HOP = "traceroute.hop"
CAP_NET_RAW = 13
ROUTER, NOWHERE = "10.232.1.2", "10.232.9.9"


needs_raw = pytest.mark.skipif(
    RAW_ICMP_DENIED is not None, reason=f"path traces need raw ICMP: {RAW_ICMP_DENIED}"
)


async def tcp_probe(address: str, **fields: Any) -> ProbeResult:
    config = TCPProbeConfig.model_validate({"name": "t", "address": address, "timeout": "2s", **fields})
    [result] = await TCPProbe(config, ProbeContext(vantage="test")).run()
    return result


async def http_probe(url: str, **fields: Any) -> ProbeResult:
    config = HTTPProbeConfig.model_validate({"name": "h", "url": url, "timeout": "2s", **fields})
    [result] = await HTTPProbe(config, ProbeContext(vantage="test")).run()
    return result


def hops(result: ProbeResult) -> list[tuple[object, ...]]:
    return [
        (
            p.attributes["probe.traceroute.ttl"],
            p.attributes.get("network.peer.address"),
            p.attributes["probe.traceroute.reply"],
        )
        for p in result.phases
        if p.name == HOP
    ]


@needs_raw
@pytest.mark.parametrize("kind", ["http", "tcp"])
async def test_refused_connection_gets_a_path_trace(kind: str) -> None:
    with RefusedPort() as refused:
        if kind == "http":
            result = await http_probe(f"http://127.0.0.1:{refused.port}/", traceroute_on_failure=True)
        else:
            result = await tcp_probe(f"127.0.0.1:{refused.port}", traceroute_on_failure=True)
    assert result.error is not None and result.error.error_type == "connect_refused"
    assert hops(result) == [(1, "127.0.0.1", "port_unreachable")]
    assert result.attributes["probe.traceroute.destination"] == "127.0.0.1"
    assert result.attributes["probe.traceroute.hops"] == 1
    connect = result.phase("tcp.connect")
    hop = result.phase(HOP)
    assert connect is not None and hop is not None
    # After the failure, and not counted in the attempt's duration.
    assert hop.start_ns >= connect.end_ns and result.duration_s < 0.5


async def test_off_by_default_and_never_on_success() -> None:
    with RefusedPort() as closed:
        refused = await tcp_probe(f"127.0.0.1:{closed.port}")
    assert refused.error is not None and hops(refused) == []
    async with HTTPFaultServer() as server:
        http = await http_probe(server.url, traceroute_on_failure=True)
        tcp = await tcp_probe(f"127.0.0.1:{server.port}", traceroute_on_failure=True)
    assert http.success and tcp.success, (http.error, tcp.error)
    for result in (http, tcp):
        assert hops(result) == [] and "probe.traceroute.destination" not in result.attributes


def _without_net_raw(work: Callable[[], T]) -> T:
    """Run `work` on a thread whose effective capabilities lack CAP_NET_RAW (capset is per thread)."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    outcome: dict[str, Any] = {}

    def target() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        header, data = Header(0x20080522, 0), (Data * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            outcome["error"] = OSError(ctypes.get_errno(), "capget")
            return
        data[0].effective &= ~(1 << CAP_NET_RAW)
        if libc.capset(ctypes.byref(header), data) != 0:
            outcome["error"] = OSError(ctypes.get_errno(), "capset")
            return
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping CAP_NET_RAW needs to have it first")
def test_no_raw_socket_is_noted_not_raised() -> None:
    with RefusedPort() as refused:
        address = f"127.0.0.1:{refused.port}"
        result = _without_net_raw(lambda: asyncio.run(tcp_probe(address, traceroute_on_failure=True)))
    assert result.error is not None and result.error.error_type == "connect_refused"
    assert hops(result) == []
    assert "raw" in str(result.attributes["probe.traceroute.error"]).lower()


@pytest.fixture(scope="module")
def behind_router() -> Iterator[str]:
    """src -- router, where the router has no route to NOWHERE; yields the src namespace."""
    tag = f"otp-trf-{os.getpid()}"
    src, router = f"{tag}-s", f"{tag}-r"
    commands = [
        f"ip -n {src} link add eth0 type veth peer name west netns {router}",
        f"ip -n {src} addr add 10.232.1.1/24 dev eth0",
        f"ip -n {router} addr add {ROUTER}/24 dev west",
        *(f"ip -n {ns} link set lo up" for ns in (src, router)),
        f"ip -n {src} link set eth0 up",
        f"ip -n {router} link set west up",
        f"ip -n {src} route add default via {ROUTER}",
        f"ip netns exec {router} sysctl -qw net.ipv4.ip_forward=1",
        f"ip netns exec {router} sysctl -qw net.ipv4.icmp_ratelimit=0",
    ]
    with namespaces([src, router], commands):
        yield src


@needs_raw
@needs_root
def test_unroutable_target_trace_ends_at_the_router(behind_router: str) -> None:
    result = in_netns(
        behind_router, lambda: asyncio.run(tcp_probe(f"{NOWHERE}:80", traceroute_on_failure=True))
    )
    assert result.error is not None and result.error.error_type == "connect_timeout"
    [(ttl, responder, reply)] = hops(result)
    assert (ttl, responder) == (1, ROUTER) and str(reply).startswith("unreachable_code_")
    assert result.attributes["probe.traceroute.destination"] == NOWHERE
