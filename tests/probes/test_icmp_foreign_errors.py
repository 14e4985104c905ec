"""ICMP messages about other flows reach a raw ICMP socket too; they must not decide our probe.

A raw socket sees every ICMP message on the host: other pings' replies, errors quoting someone
else's echo, a traceroute's time-exceeded, truncated junk. In a namespace of our own where
nothing answers echoes, an injector answers each of the probe's echo requests with such foreign
messages: the probe still reports `no_reply`, within its timeout. The same injector quoting the
probe's own echo makes it `host_unreachable`, so the test shows the filter, not a deaf socket.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from otelprobe import names
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.icmp._packet import checksum
from otelprobe.probes.icmp.probe import ICMPProbe, ICMPProbeConfig
from otelprobe.results import ProbeResult
from tests.support.netns_helpers import RAW_ICMP_DENIED, in_netns, namespaces, needs_root

pytestmark = [
    needs_root,
    pytest.mark.skipif(RAW_ICMP_DENIED is not None, reason=f"raw ICMP sockets: {RAW_ICMP_DENIED}"),
]

ECHO_REQUEST, ECHO_REPLY, UNREACHABLE, TIME_EXCEEDED = 8, 0, 3, 11
HOST_UNREACHABLE = 1
TARGET = "127.0.0.1"

# (ident, sequence) of one echo request seen on the wire -> the ICMP messages to send back.
Answer = Callable[[int, int], list[bytes]]


@pytest.fixture(scope="module")
def silent_netns() -> Iterator[str]:
    """A namespace whose loopback never answers an echo (so only the injector speaks)."""
    name = f"otelprobe-icmpx-{os.getpid()}"
    with namespaces([name], [f"ip -n {name} link set lo up"]):
        subprocess.run(
            ["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1"], check=True
        )
        yield name


def _icmp(kind: int, code: int, rest: bytes, body: bytes) -> bytes:
    header = struct.pack("!BBH4s", kind, code, 0, rest)
    return struct.pack("!BBH4s", kind, code, checksum(header + body), rest) + body


def _ipv4_header(destination: str, protocol: int) -> bytes:
    source = socket.inet_aton(TARGET)
    return struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, protocol, 0, source, socket.inet_aton(destination)
    )


def _error_quoting_echo(kind: int, code: int, destination: str, ident: int, sequence: int) -> bytes:
    quoted_echo = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, sequence)
    return _icmp(kind, code, b"\0\0\0\0", _ipv4_header(destination, socket.IPPROTO_ICMP) + quoted_echo)


def foreign(ident: int, sequence: int) -> list[bytes]:
    quoted_udp = struct.pack("!HHHH", 40000, 33434, 8, 0)
    return [
        # someone else's ping to the same host, refused
        _error_quoting_echo(UNREACHABLE, HOST_UNREACHABLE, TARGET, ident ^ 0x5A5A, sequence),
        # our identifier, but an echo to another host
        _error_quoting_echo(UNREACHABLE, HOST_UNREACHABLE, "127.0.0.9", ident, sequence),
        # a traceroute's UDP probe expiring
        _icmp(TIME_EXCEEDED, 0, b"\0\0\0\0", _ipv4_header(TARGET, socket.IPPROTO_UDP) + quoted_udp),
        # another ping's reply
        _icmp(ECHO_REPLY, 0, struct.pack("!HH", ident ^ 0x5A5A, sequence), b"not ours"),
        # an error cut short before the quoted header ends
        _icmp(UNREACHABLE, HOST_UNREACHABLE, b"\0\0\0\0", b"\x45\x00\x00"),
    ]


def ours(ident: int, sequence: int) -> list[bytes]:
    return [_error_quoting_echo(UNREACHABLE, HOST_UNREACHABLE, TARGET, ident, sequence)]


def _inject(answer: Answer, stop: threading.Event) -> None:
    """Answer every echo request on the namespace's loopback with `answer`'s messages."""
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        deadline = time.monotonic() + 10
        while not stop.is_set() and time.monotonic() < deadline:
            if not select.select([sock], [], [], 0.05)[0]:
                continue
            data = sock.recv(65535)
            icmp = data[(data[0] & 0x0F) * 4 :]
            if len(icmp) < 8 or icmp[0] != ECHO_REQUEST:
                continue
            ident, sequence = struct.unpack("!HH", icmp[4:8])
            for message in answer(ident, sequence):
                sock.sendto(message, (TARGET, 0))


def _ping_with(answer: Answer) -> tuple[ProbeResult, float]:
    stop = threading.Event()
    injector = threading.Thread(target=_inject, args=(answer, stop))  # inherits the namespace
    injector.start()
    try:
        time.sleep(0.05)  # the injector's socket is open before the first echo leaves
        config = ICMPProbeConfig.model_validate(
            {
                "name": "ping",
                "host": TARGET,
                "socket": "raw",
                "count": 2,
                "packet_interval": "20ms",
                "packet_timeout": "300ms",
            }
        )
        started = time.monotonic()
        [result] = asyncio.run(ICMPProbe(config, ProbeContext(vantage="test")).run())
        return result, time.monotonic() - started
    finally:
        stop.set()
        injector.join(timeout=5)


def test_errors_and_replies_about_other_flows_are_ignored(silent_netns: str) -> None:
    result, elapsed = in_netns(silent_netns, lambda: _ping_with(foreign))
    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("connect_timeout", "no_reply")
    assert result.attributes[names.PROBE_ICMP_LOSS_RATIO] == 1.0
    assert elapsed < 1.5, f"took {elapsed:.2f} s"


def test_an_error_quoting_our_echo_is_classified(silent_netns: str) -> None:
    result, elapsed = in_netns(silent_netns, lambda: _ping_with(lambda i, s: foreign(i, s) + ours(i, s)))
    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("connect_timeout", "host_unreachable")
    assert elapsed < 1.5, f"took {elapsed:.2f} s"
