"""Refused and black-holed ports, checked with plain sockets."""

from __future__ import annotations

import asyncio
import socket
import subprocess

import pytest

from otelprobe.lab.servers.measure import connect_time
from otelprobe.lab.servers.ports import BlackholePort, RefusedPort


async def test_refused_port_gives_econnrefused() -> None:
    with RefusedPort() as refused:
        with pytest.raises(ConnectionRefusedError):
            await connect_time(refused.host, refused.port, timeout_s=2.0)
        # Still refused on a second try: the port stays reserved and unlistened.
        with pytest.raises(ConnectionRefusedError):
            await connect_time(refused.host, refused.port, timeout_s=2.0)


def test_refused_port_ipv6() -> None:
    try:
        refused = RefusedPort("::1")
    except OSError as exc:  # no IPv6 loopback on this machine
        pytest.skip(f"::1 unavailable: {exc}")
    with refused, socket.socket(socket.AF_INET6) as client:
        assert client.connect_ex(("::1", refused.port)) == 111  # ECONNREFUSED


async def test_blackhole_connect_never_completes() -> None:
    with BlackholePort() as hole:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await connect_time(hole.host, hole.port, timeout_s=1.5)
        # It waited out the whole timeout, across at least one SYN retransmit (at ~1 s).
        assert loop.time() - start >= 1.5


def test_blackhole_client_stays_in_syn_sent() -> None:
    with BlackholePort() as hole, socket.socket() as client:
        client.setblocking(False)
        assert client.connect_ex((hole.host, hole.port)) == 115  # EINPROGRESS
        out = subprocess.run(
            ["ss", "-tnH", "state", "syn-sent", "dst", f"{hole.host}:{hole.port}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            pytest.skip("ss not available")
        assert f"{hole.host}:{hole.port}" in out.stdout


async def test_closing_the_blackhole_frees_the_port() -> None:
    hole = BlackholePort()
    port = hole.port
    hole.close()
    with pytest.raises(ConnectionRefusedError):
        await connect_time("127.0.0.1", port, timeout_s=2.0)
