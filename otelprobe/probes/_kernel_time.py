"""Kernel timestamps for phase edges: receive times of TCP data and the handshake RTT.

A busy asyncio loop wakes up late, so a `perf_counter_ns()` taken when a read returns overstates
every phase that ends with a read by the loop's lag. The kernel knows better: it stamps each
received segment (SO_TIMESTAMPNS, read back with recvmsg) and measures SYN -> SYN-ACK itself
(TCP_INFO's first RTT sample). `probes/_net.py` uses both and falls back to user-space marks where
an option is missing. Everything returned here is on the `perf_counter_ns` clock (CLOCK_MONOTONIC).

Facts checked on Linux 6.x (tests/probes/test_kernel_time.py): the receive queue coalesces
in-order segments and keeps the *newest* segment's stamp, so a read's stamp is the arrival of the
newest byte it returns — exact for a read of one segment or one burst, and never later than a
user-space mark. TCP_INFO's `tcpi_rtt` after the handshake is the SYN -> SYN-ACK sample in
microseconds (the smoothed RTT starts at the first sample), unless a SYN was retransmitted.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Final

SO_TIMESTAMPNS: Final = int(getattr(socket, "SO_TIMESTAMPNS", 35))
"""Same value for the option and its control message (SCM_TIMESTAMPNS) on Linux."""

_ANCILLARY_BYTES: Final = socket.CMSG_SPACE(16)
_TIMESPEC: Final = struct.Struct("qq")

# struct tcp_info offsets (include/uapi/linux/tcp.h, unchanged since 2.6).
_TCPI_RTT: Final = 68
_TCPI_TOTAL_RETRANS: Final = 100
_TCPI_SIZE: Final = _TCPI_TOTAL_RETRANS + 4


def enable_rx_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp received data on `sock`; False where the option is unavailable."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


_OFFSET_READINGS: Final = 5
_OFFSET_MAX_AGE_NS: Final = 1_000_000_000
_offset_cache: list[int] = [0, -_OFFSET_MAX_AGE_NS - 1]  # [offset, taken at (perf_counter_ns)]


def realtime_offset_ns() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC, to put kernel receive stamps on perf_counter's clock.

    Each reading brackets a realtime read between two monotonic ones; a thread preempted inside
    the bracket would shift every stamp of a connection by the preemption (milliseconds on a busy
    machine, enough to make a short phase negative), so the tightest of several brackets wins.
    Both clocks are slewed alike by NTP: the offset moves only when the wall clock is stepped, so
    one value serves the whole process for up to a second.
    """
    now = time.perf_counter_ns()
    if now - _offset_cache[1] < _OFFSET_MAX_AGE_NS:
        return _offset_cache[0]
    best_width, best_offset = None, 0
    for _ in range(_OFFSET_READINGS):
        before = time.perf_counter_ns()
        real = time.clock_gettime_ns(time.CLOCK_REALTIME)
        after = time.perf_counter_ns()
        if best_width is None or after - before < best_width:
            best_width, best_offset = after - before, real - (before + after) // 2
    _offset_cache[0], _offset_cache[1] = best_offset, now
    return best_offset


def rx_stamp_ns(ancillary: list[tuple[int, int, bytes]], offset_ns: int) -> int | None:
    """The kernel receive time (perf_counter_ns clock) in recvmsg's ancillary data, if any."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            # Never later than now: guards against a wall-clock step since the offset was taken.
            stamp: int = seconds * 1_000_000_000 + nanoseconds - offset_ns
            return min(stamp, time.perf_counter_ns())
    return None


class StampedReceiver:
    """Non-blocking recvmsg on a connected socket, awaited through the loop's reader callbacks.

    asyncio has no `sock_recvmsg`; this is its `sock_recv` with the ancillary data kept.
    `receive()` returns (data, arrival_ns): arrival of the newest byte in `data`, from the
    kernel when it stamped the data, else the user-space time of the read.
    """

    __slots__ = ("_loop", "_offset_ns", "_sock", "stamped")

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._loop = loop
        self.stamped = enable_rx_timestamps(sock)
        self._offset_ns = realtime_offset_ns()

    def _try(self, max_bytes: int) -> tuple[bytes, int]:
        data, ancillary, _, _ = self._sock.recvmsg(max_bytes, _ANCILLARY_BYTES)
        stamp = rx_stamp_ns(ancillary, self._offset_ns) if ancillary else None
        return data, stamp if stamp is not None else time.perf_counter_ns()

    async def receive(self, max_bytes: int) -> tuple[bytes, int]:
        try:
            return self._try(max_bytes)
        except (BlockingIOError, InterruptedError):
            pass
        future: asyncio.Future[tuple[bytes, int]] = self._loop.create_future()
        fd = self._sock.fileno()

        def on_readable() -> None:
            if future.done():
                return
            try:
                future.set_result(self._try(max_bytes))
            except (BlockingIOError, InterruptedError):
                return  # spurious wake-up: stay registered
            except BaseException as exc:  # handed to the awaiting coroutine, which re-raises it
                future.set_exception(exc)

        self._loop.add_reader(fd, on_readable)
        try:
            return await future
        finally:
            self._loop.remove_reader(fd)


def tcp_info(sock: socket.socket) -> tuple[int, int] | None:
    """(tcpi_rtt in microseconds, tcpi_total_retrans) of a TCP socket, or None without TCP_INFO."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, _TCPI_SIZE)
    except OSError:
        return None
    if len(info) < _TCPI_SIZE:
        return None
    rtt_us = struct.unpack_from("I", info, _TCPI_RTT)[0]
    retransmits = struct.unpack_from("I", info, _TCPI_TOTAL_RETRANS)[0]
    return int(rtt_us), int(retransmits)


def handshake_end_ns(sock: socket.socket, syn_sent_ns: int, fallback_ns: int) -> int:
    """When the SYN-ACK arrived: `syn_sent_ns` + the handshake RTT the kernel measured.

    Read right after connect() completes, before any data moves, so `tcpi_rtt` is still the
    SYN -> SYN-ACK sample. Falls back to `fallback_ns` (the user-space mark) when there is no
    sample, when a SYN was retransmitted (the sample then starts at the last retransmission, so
    it would hide the retransmit wait), or when the result would not lie before the fallback.
    """
    info = tcp_info(sock)
    if info is None:
        return fallback_ns
    rtt_us, retransmits = info
    if rtt_us <= 0 or retransmits:
        return fallback_ns
    end_ns = syn_sent_ns + rtt_us * 1000
    return end_ns if end_ns <= fallback_ns else fallback_ns
