"""Kernel timestamps at the socket: a read is stamped when its data arrived, not when a busy
loop got to it; tcp.connect ends at the kernel's SYN -> SYN-ACK sample."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from otelprobe.net.connection import timed_connect
from otelprobe.net.kernel_time import (
    StampedReceiver,
    clock_stepped_since,
    enable_rx_timestamps,
    handshake_end_ns,
    hold_rx_timestamping,
    realtime_offset_ns,
    rx_stamp_ns,
    tcp_info,
)
from otelprobe.timing import PhaseClock


@pytest.fixture(autouse=True, scope="module")
def _stamping_on() -> None:
    """The kernel turns stamping on in a deferred worker: data arriving in the first moments of a
    process could miss its stamp, and these tests check stamps against arrival."""
    assert hold_rx_timestamping(wait_s=1.0)


async def _server(reply: bytes, sent_at: list[int], done: asyncio.Event) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        sent_at.append(time.perf_counter_ns())
        writer.write(reply)
        await writer.drain()
        await reader.read(100)  # until the client closes
        writer.close()
        await writer.wait_closed()
        done.set()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_read_is_stamped_with_arrival_not_with_a_late_wakeup() -> None:
    sent_at: list[int] = []
    done = asyncio.Event()
    server = await _server(b"hello", sent_at, done)
    port = server.sockets[0].getsockname()[1]
    clock = PhaseClock()
    conn = await timed_connect(clock, "127.0.0.1", port)
    stamps: list[int] = []
    conn.on_read = stamps.append
    try:
        await conn.write(b"ping")
        while not sent_at:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)  # the reply is in our receive queue by now
        time.sleep(0.05)  # a busy loop: nothing reads for 50 ms
        read_at = time.perf_counter_ns()
        assert await conn.read() == b"hello"
    finally:
        conn.close()
        await asyncio.wait_for(done.wait(), 5)
        server.close()
        await server.wait_closed()
    (stamp,) = stamps
    assert read_at - stamp > 40_000_000, "the stamp should predate the late read"
    assert 0 <= stamp - sent_at[0] < 5_000_000, "the stamp should be the arrival"


async def test_connect_phase_ends_at_the_syn_ack_and_names_the_local_port() -> None:
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()
        await writer.wait_closed()
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clock = PhaseClock()
    conn = await timed_connect(clock, "127.0.0.1", port)
    try:
        (phase,) = clock.phases
        assert phase.name == "tcp.connect"
        assert phase.attributes["network.local.port"] == conn.sock.getsockname()[1]
        assert 0 < phase.duration_ns < 5_000_000
        info = tcp_info(conn.sock)
        assert info is not None and info[0] > 0 and info[1] == 0
    finally:
        conn.close()
        await asyncio.wait_for(done.wait(), 5)
        server.close()
        await server.wait_closed()


def test_handshake_end_falls_back_without_a_sample() -> None:
    with socket.socket() as unconnected:
        assert handshake_end_ns(unconnected, 100, 500) == 500  # tcpi_rtt is 0: user-space mark
    assert rx_stamp_ns([], 0) is None


async def test_receiver_waits_for_data_and_sees_eof() -> None:
    left, right = socket.socketpair()
    left.setblocking(False)
    receiver = StampedReceiver(left, asyncio.get_running_loop())
    try:
        pending = asyncio.ensure_future(receiver.receive(10))
        await asyncio.sleep(0.01)
        assert not pending.done()
        right.send(b"abc")
        data, stamp = await pending
        assert data == b"abc" and stamp <= time.perf_counter_ns()
        right.close()
        assert (await receiver.receive(10))[0] == b""
    finally:
        left.close()
        right.close()


async def test_segments_read_together_carry_the_newest_arrival() -> None:
    """The known limit: the receive queue merges in-order segments and keeps the newest stamp."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.setblocking(False)
        receiver = StampedReceiver(client, asyncio.get_running_loop())
        server.send(b"first")
        time.sleep(0.03)
        second_sent = time.perf_counter_ns()
        server.send(b"second")
        time.sleep(0.01)
        data, stamp = await receiver.receive(100)
        assert data == b"firstsecond"
        assert stamp >= second_sent - 1_000_000
    finally:
        for sock in (server, client, listener):
            sock.close()


def test_kernel_keeps_stamping_between_connections() -> None:
    """Once a socket asked for stamps, the kernel keeps stamping every packet on arrival, also
    after that socket closed (hold_rx_timestamping), so no connection toggles it.

    The witness: a datagram queued on a socket *before* it asked for stamps. Had the kernel
    stopped stamping when the connection closed, its stamp would be the time of the read.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
        assert enable_rx_timestamps(first)
    time.sleep(0.02)  # the kernel turns stamping off in a deferred work item; give it time
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        address = receiver.getsockname()
        before_ns = time.perf_counter_ns()
        sender.sendto(b"x", address)  # on loopback it arrives inside this call
        after_ns = time.perf_counter_ns()
        time.sleep(0.03)
        assert enable_rx_timestamps(receiver)
        read_ns = time.perf_counter_ns()
        _, ancillary, _, _ = receiver.recvmsg(16, socket.CMSG_SPACE(16))
        stamp = rx_stamp_ns(ancillary, realtime_offset_ns())
    finally:
        receiver.close()
        sender.close()
    assert stamp is not None
    # 200 us: slack for the realtime -> monotonic offset; a stamp taken at the read is 30 ms late.
    assert before_ns - 200_000 <= stamp <= after_ns + 200_000, "stamped on arrival"
    assert read_ns - stamp > 25_000_000


async def test_after_a_wall_clock_step_a_read_takes_its_own_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernel stamps are wall-clock time. Once the wall clock has been stepped (a time daemon, an
    operator) a stamp cannot be put on the monotonic clock, since it may come from either side of
    the step: the read's own time is used, and the next offset is read anew. The step is made by
    moving CLOCK_REALTIME as this process reads it; stepping the host's clock would disturb
    everything else running on it."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        client.setblocking(False)
        receiver = StampedReceiver(client, asyncio.get_running_loop())
        server.send(b"before")
        time.sleep(0.03)
        read_from = time.perf_counter_ns()
        data, arrival = await receiver.receive(100)
        assert data == b"before" and read_from - arrival > 20_000_000, "the kernel's stamp, no step yet"

        offset = realtime_offset_ns()
        real_clock = time.clock_gettime_ns
        step_ns = 50_000_000

        def stepped(clock: int) -> int:
            return real_clock(clock) + (step_ns if clock == time.CLOCK_REALTIME else 0)

        monkeypatch.setattr(time, "clock_gettime_ns", stepped)
        server.send(b"after")
        time.sleep(0.03)
        read_from = time.perf_counter_ns()
        data, arrival = await receiver.receive(100)
        assert data == b"after"
        assert arrival >= read_from, "a stamp across a step is not trusted: the read's time"
        assert abs(realtime_offset_ns() - (offset + step_ns)) < 1_000_000, "the offset is read anew"
        # Stepping back is a step too (and leaves no stepped offset behind for the next test).
        monkeypatch.undo()
        assert clock_stepped_since(offset + step_ns)
        assert abs(realtime_offset_ns() - offset) < 1_000_000
    finally:
        for sock in (server, client, listener):
            sock.close()
