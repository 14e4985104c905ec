"""The ICMP echo probe over raw sockets (loopback) and datagram sockets (a private namespace).

The host forbids datagram ICMP sockets (net.ipv4.ping_group_range = "1 0"), so the datagram path
runs in a network namespace this module creates, allows them there and deletes afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from otelprobe import names
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.icmp._socket import ICMPNotPermittedError, ping_group_range
from otelprobe.probes.icmp.probe import ICMPProbe, ICMPProbeConfig
from otelprobe.results import ProbeResult
from tests.support.netns_helpers import RAW_ICMP_DENIED, in_netns, namespaces, needs_root

needs_raw = pytest.mark.skipif(
    RAW_ICMP_DENIED is not None, reason=f"raw ICMP sockets not permitted: {RAW_ICMP_DENIED}"
)


def _ping(host: str, **overrides: object) -> list[ProbeResult]:
    config = ICMPProbeConfig.model_validate({"name": "ping", "host": host, **overrides})
    return asyncio.run(ICMPProbe(config, ProbeContext(vantage="test")).run())


def _sysctl(namespace: str, setting: str) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, "sysctl", "-qw", setting], check=True)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    name = f"otelprobe-icmp-{os.getpid()}"
    with namespaces([name], [f"ip -n {name} link set lo up"]):
        _sysctl(name, "net.ipv4.ping_group_range=0 2147483647")
        yield name


def _assert_echoes(result: ProbeResult, count: int) -> None:
    assert result.success, result.error
    echoes = [p for p in result.phases if p.name == names.SPAN_ICMP_ECHO]
    assert len(echoes) == count
    assert [p.attributes[names.PROBE_ICMP_SEQUENCE] for p in echoes] == sorted(
        p.attributes[names.PROBE_ICMP_SEQUENCE] for p in echoes
    )
    attrs = result.attributes
    assert attrs[names.PROBE_ICMP_LOSS_RATIO] == 0.0
    assert attrs[names.PROBE_ICMP_PACKETS_RECEIVED] == count
    rtt = [
        float(attrs[key])  # type: ignore[arg-type]
        for key in (names.PROBE_ICMP_RTT_MIN, names.PROBE_ICMP_RTT_AVG, names.PROBE_ICMP_RTT_MAX)
    ]
    assert 0 < rtt[0] <= rtt[1] <= rtt[2] < 0.5
    assert attrs[names.PROBE_ICMP_RTT_STDDEV] >= 0  # type: ignore[operator]


@needs_raw
def test_raw_echo_to_ipv4_loopback() -> None:
    [result] = _ping("127.0.0.1", socket="raw", count=3, packet_interval="20ms")
    _assert_echoes(result, 3)
    assert result.attributes[names.NETWORK_TYPE] == "ipv4"
    # Raw IPv4 sockets see the reply's IP header.
    assert all(p.attributes[names.PROBE_ICMP_REPLY_TTL] == 64 for p in result.phases)
    # Packets leave packet_interval apart.
    starts = [p.start_ns for p in result.phases]
    assert all(b - a >= 15_000_000 for a, b in itertools.pairwise(starts))


@needs_raw
def test_raw_echo_to_ipv6_loopback() -> None:
    [result] = _ping("::1", socket="raw", count=2, packet_interval="10ms")
    _assert_echoes(result, 2)
    assert result.attributes[names.NETWORK_TYPE] == "ipv6"


@needs_raw
def test_ttl_dont_fragment_and_large_payload() -> None:
    [result] = _ping("127.0.0.1", socket="raw", count=1, ttl=1, dont_fragment=True, payload_size=4000)
    _assert_echoes(result, 1)


@needs_raw
def test_name_resolution_is_a_dns_phase() -> None:
    [result] = _ping("localhost", count=1, ip="ip4")
    assert result.success, result.error
    assert [p.name for p in result.phases] == [names.SPAN_DNS_LOOKUP, names.SPAN_ICMP_ECHO]


@needs_root
def test_datagram_echo_where_ping_group_range_allows_it(netns: str) -> None:
    [v4] = in_netns(netns, lambda: _ping("127.0.0.1", socket="datagram", count=2, packet_interval="10ms"))
    [v6] = in_netns(netns, lambda: _ping("::1", socket="datagram", count=2, packet_interval="10ms"))
    _assert_echoes(v4, 2)
    _assert_echoes(v6, 2)
    # Datagram sockets do not hand over the IP header, so there is no reply TTL.
    assert all(names.PROBE_ICMP_REPLY_TTL not in p.attributes for p in v4.phases)


@needs_root
def test_unanswered_packets_fail_as_no_reply(netns: str) -> None:
    _sysctl(netns, "net.ipv4.icmp_echo_ignore_all=1")
    try:
        config = {"count": 2, "packet_interval": "10ms", "packet_timeout": "200ms"}
        [result] = in_netns(netns, lambda: _ping("127.0.0.1", socket="datagram", **config))
    finally:
        _sysctl(netns, "net.ipv4.icmp_echo_ignore_all=0")
    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("connect_timeout", "no_reply")
    assert result.attributes[names.PROBE_ICMP_LOSS_RATIO] == 1.0
    assert names.PROBE_ICMP_RTT_AVG not in result.attributes
    echoes = [p for p in result.phases if p.name == names.SPAN_ICMP_ECHO]
    assert [p.error_type for p in echoes] == ["connect_timeout", "connect_timeout"]
    assert all(0.19 <= p.duration_s < 0.5 for p in echoes)


@needs_root
def test_datagram_sockets_forbidden_names_the_sysctl(netns: str) -> None:
    _sysctl(netns, "net.ipv4.ping_group_range=1 0")
    try:
        with pytest.raises(ICMPNotPermittedError, match=r"net\.ipv4\.ping_group_range"):
            in_netns(netns, lambda: _ping("127.0.0.1", socket="datagram"))
    finally:
        _sysctl(netns, "net.ipv4.ping_group_range=0 2147483647")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop CAP_NET_RAW")
@pytest.mark.skipif(ping_group_range() != "1 0", reason="this host allows datagram ICMP sockets")
def test_neither_socket_permitted_names_both_fixes() -> None:
    script = (
        "from otelprobe.probes.icmp.probe import ICMPProbe, ICMPProbeConfig\n"
        "from otelprobe.probes.base import ProbeContext\n"
        "ICMPProbe(ICMPProbeConfig.from_url('icmp://127.0.0.1'), ProbeContext(vantage='t'))\n"
    )
    run = subprocess.run(
        ["setpriv", "--bounding-set", "-net_raw", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "ICMPNotPermittedError" in run.stderr
    assert "ping_group_range" in run.stderr and "CAP_NET_RAW" in run.stderr


def test_from_url_and_validation() -> None:
    assert ICMPProbeConfig.from_url("icmp6://[::1]").ip == "ip6"
    assert ICMPProbeConfig.from_url("icmp://127.0.0.1", count=5).count == 5
    with pytest.raises(ValueError, match="longer than timeout"):
        ICMPProbeConfig.from_url("icmp://127.0.0.1", count=20, packet_interval="1s", timeout="5s")
    with pytest.raises(ValueError, match="expected icmp://"):
        ICMPProbeConfig.from_url("http://127.0.0.1")


async def test_probe_runs_inside_a_running_loop() -> None:
    if RAW_ICMP_DENIED is not None:
        pytest.skip(f"raw ICMP sockets not permitted: {RAW_ICMP_DENIED}")
    probe = ICMPProbe(ICMPProbeConfig.from_url("icmp://127.0.0.1", count=1), ProbeContext(vantage="t"))
    [first] = await probe.run()
    [second] = await probe.run(attempt=2)
    await probe.aclose()
    assert first.success and second.success
    # Each attempt continues the sequence numbers, so a late reply cannot answer the next attempt.
    assert (
        first.phases[0].attributes[names.PROBE_ICMP_SEQUENCE]
        != second.phases[0].attributes[names.PROBE_ICMP_SEQUENCE]
    )
