"""The link emulator with real packets: a TCP server in the target namespace, raw clients in vantages.

The shaping model is also checked on its own (no root needed) for loss rates, bursts, rate and order.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from otelprobe.lab.emulation._shaper import DirectionShaper
from otelprobe.lab.emulation.link import TARGET_IPV4, TARGET_IPV6, Link, LinkEmulator, LinkParams
from otelprobe.lab.emulation.netns import Lab, Namespace, cleanup_all

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and TUN devices need root")
PORT = 8080


@dataclass
class Env:
    lab: Lab
    emulator: LinkEmulator
    link: Link


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """`<n>\\n` -> n bytes then close; EOF -> close (a bare connect)."""
    try:
        line = await reader.readline()
        if line.strip().isdigit():
            writer.write(b"x" * int(line))
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    lab = Lab()
    forwarders: list[subprocess.Popen[bytes]] = []
    try:
        emulator = LinkEmulator(lab)
        link = emulator.add_vantage("a")
        server = await emulator.target.start_server(_serve, TARGET_IPV4, PORT)
        server6 = await emulator.target.start_server(_serve, TARGET_IPV6, PORT)
        try:
            yield Env(lab, emulator, link)
        finally:
            forwarders = [link.process for link in emulator.links.values()]
            for srv in (server, server6):
                srv.close()
                await srv.wait_closed()
    finally:
        lab.close()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert lab.prefix not in left, "lab namespaces must be removed"
        assert all(proc.poll() is not None for proc in forwarders), "forwarders must exit"


async def connect_s(ns: Namespace, host: str = TARGET_IPV4, timeout_s: float = 3.0) -> float:
    """Seconds from connect() issued to established, measured at the socket in the vantage."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = await ns.acall(socket.socket, family, socket.SOCK_STREAM)
    with sock:
        sock.setblocking(False)
        start = time.perf_counter()
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, PORT)), timeout_s)
        return time.perf_counter() - start


async def median_connect_s(ns: Namespace, n: int = 15, host: str = TARGET_IPV4) -> float:
    return statistics.median([await connect_s(ns, host) for _ in range(n)])


@pytest.mark.netns
@root_only
@pytest.mark.parametrize("host", [TARGET_IPV4, TARGET_IPV6])
async def test_delay_each_direction_adds_to_connect(env: Env, host: str) -> None:
    for direction in ("up", "down"):
        env.link.set(direction, delay_s=0.020)
    rtt = await median_connect_s(env.link.vantage, host=host)
    assert 0.040 <= rtt <= 0.048, rtt  # never early; slack for a loaded client
    stats = env.link.stats()
    assert stats["up"].delay_p50_s is not None and 0.020 <= stats["up"].delay_p50_s < 0.022


@pytest.mark.netns
@root_only
async def test_vantages_have_their_own_links(env: Env) -> None:
    slow = env.emulator.add_vantage("b", LinkParams(delay_s=0.015), LinkParams(delay_s=0.015))
    assert await median_connect_s(env.link.vantage, n=7) < 0.010
    assert 0.030 <= await median_connect_s(slow.vantage, n=7) <= 0.038


@pytest.mark.netns
@root_only
async def test_full_loss_makes_connect_time_out(env: Env) -> None:
    env.link.set("up", loss=1.0)
    with pytest.raises(TimeoutError):
        await connect_s(env.link.vantage, timeout_s=1.5)
    stats = env.link.stats()["up"]
    assert stats.dropped_loss >= 1 and stats.packets_out == 0


@pytest.mark.netns
@root_only
async def test_partial_loss_gives_whole_retransmit_steps(env: Env) -> None:
    # Lost SYNs are retried after ~1 s (linear SYN timeouts here, LAB-NOTES pitfall 1/2), so
    # connect times cluster at 0 s and 1 s, never in between.
    env.link.set("up", loss=0.5)
    results = await asyncio.gather(
        *(connect_s(env.link.vantage, timeout_s=1.6) for _ in range(24)), return_exceptions=True
    )
    times = [r for r in results if isinstance(r, float)]
    assert all(isinstance(r, (float, TimeoutError)) for r in results), results
    fast = [t for t in times if t < 0.05]
    one_step = [t for t in times if 0.98 <= t <= 1.15]
    assert fast and one_step, times
    assert len(fast) + len(one_step) == len(times), times


@pytest.mark.netns
@root_only
async def test_rate_limit_paces_a_transfer(env: Env) -> None:
    env.link.set("down", rate_bps=1_000_000)
    size = 256 * 1024
    reader, writer = await env.link.vantage.open_connection(TARGET_IPV4, PORT)
    try:
        start = time.perf_counter()
        writer.write(f"{size}\n".encode())
        received = len(await reader.read(-1))
        elapsed = time.perf_counter() - start
    finally:
        writer.close()
        await writer.wait_closed()
    assert received == size
    ideal = size * 8 / 1_000_000  # 2.10 s of payload; IP/TCP headers add ~3.5 %
    assert ideal * 0.95 <= elapsed <= ideal * 1.15, elapsed


@pytest.mark.netns
@root_only
async def test_settings_change_at_run_time_and_take_effect_at_once(env: Env) -> None:
    env.link.set("up", delay_s=0.030)
    assert 0.030 <= await median_connect_s(env.link.vantage, n=5) <= 0.038
    assert env.link.control.wait_drained(1.0)  # the FINs and ACKs of those connections
    # A SYN waiting out a 0.5 s delay is re-timed when the delay drops (LAB-NOTES pitfall 6).
    env.link.set("up", delay_s=0.5)
    pending = asyncio.ensure_future(connect_s(env.link.vantage))
    await asyncio.sleep(0.05)
    assert env.link.stats()["up"].queued >= 1  # the SYN (and maybe a late ACK of a closed one)
    env.link.set("up", delay_s=0.0)
    assert await pending < 0.1
    assert await median_connect_s(env.link.vantage, n=5) < 0.010
    assert env.link.params()["up"].delay_s == 0.0


@pytest.mark.netns
@root_only
async def test_bad_settings_are_refused(env: Env) -> None:
    with pytest.raises(ValueError, match="loss"):
        env.link.set("up", loss=2.0)
    with pytest.raises(ValueError, match="nonsense"):
        env.link.set("down", nonsense=1)


# -- the shaping model alone ---------------------------------------------------------------------


def _run(shaper: DirectionShaper, n: int, size: int = 100, gap_ns: int = 1_000_000) -> list[bool]:
    return [shaper.offer(b"x" * size, i * gap_ns) for i in range(n)]


def test_model_loss_rate_and_bursts() -> None:
    independent = _run(DirectionShaper(LinkParams(loss=0.1), random.Random(1)), 20000)
    assert 0.09 <= independent.count(False) / len(independent) <= 0.11
    bursty = _run(DirectionShaper(LinkParams(loss=0.1, loss_burst=4), random.Random(2)), 20000)
    assert 0.085 <= bursty.count(False) / len(bursty) <= 0.115
    runs = [len(r) for r in "".join("x" if ok else "d" for ok in bursty).split("x") if r]
    assert 3.0 <= statistics.mean(runs) <= 5.0


def test_model_rate_limit_and_drop_tail() -> None:
    shaper = DirectionShaper(LinkParams(rate_bps=8_000_000, burst_bytes=0, queue_bytes=10_000))
    # 100 packets of 1000 B offered at once to a 1 MB/s bottleneck with a 10 kB queue.
    accepted = [shaper.offer(b"x" * 1000, 0) for _ in range(100)]
    assert 10 <= accepted.count(True) <= 11
    assert shaper.stats.dropped_queue == accepted.count(False)
    released = [len(shaper.pop_due(t * 1_000_000)) for t in range(12)]
    assert released[0] <= 1 and sum(released) == accepted.count(True)  # one packet per ms


def test_model_keeps_order_unless_reordering_is_asked() -> None:
    for reorder in (False, True):
        shaper = DirectionShaper(LinkParams(delay_s=0.01, jitter_s=0.005, reorder=reorder), random.Random(3))
        for i in range(200):
            shaper.offer(i.to_bytes(2, "big"), i * 100_000)
        order = [int.from_bytes(d, "big") for d in shaper.pop_due(10**9)]
        assert sorted(order) == list(range(200))
        assert (order == sorted(order)) is not reorder


@pytest.mark.netns
@root_only
def test_forwarder_exits_and_lab_down_cleans_after_owner_is_killed() -> None:
    script = (
        "import os, signal\n"
        "from otelprobe.lab.emulation.netns import Lab\n"
        "from otelprobe.lab.emulation.link import LinkEmulator\n"
        "lab = Lab()\n"
        "link = LinkEmulator(lab).add_vantage('a')\n"
        "print(lab.lab_id, link.process.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    lab_id, forwarder = child.stdout.split()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{forwarder}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the lifeline pipe hit EOF when its owner died
    assert not Path(f"/proc/{forwarder}").exists()
    assert f"otp-{lab_id}-target" in cleanup_all()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"otp-{lab_id}-" not in left
