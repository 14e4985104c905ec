"""Kernel timestamps for phase edges: receive times of TCP data and the handshake RTT.

A busy asyncio loop wakes up late, so a `perf_counter_ns()` taken when a read returns overstates
every phase that ends with a read by the loop's lag. The kernel knows better: it stamps each
received segment (SO_TIMESTAMPNS, read back with recvmsg) and measures SYN -> SYN-ACK itself
(TCP_INFO's first RTT sample). `net/connection.py` uses both and falls back to user-space marks where
an option is missing. Everything returned here is on the `perf_counter_ns` clock (CLOCK_MONOTONIC).

Facts checked on Linux 6.x (tests/probes/test_kernel_time.py, tests/net/test_first_byte_stamp_
kernel_facts.py): the receive queue coalesces in-order segments and keeps the *newest* segment's
stamp, so a read's stamp is the arrival of the newest byte it returns — exact for a read of one
segment or one burst, and never later than a user-space mark. Once merged, the older stamps are
gone: a one-byte recvmsg or MSG_PEEK of a late reader gets the newest stamp too (measured on
6.18: three 1 KiB segments 20 ms apart, read after the third, all stamped +40 ms). Only while
something holds a clone of the queued segment (a packet capture on the interface that has not
read it yet) does the kernel leave segments apart, and then a read of the first segment's length
does return its own stamp. So the first byte of a response is read the moment it arrives, by a
thread (net/prompt_read.py), rather than sized or peeked by a late loop.
TCP_INFO's `tcpi_rtt` after the handshake is the SYN -> SYN-ACK sample in
microseconds (the smoothed RTT starts at the first sample), unless a SYN was retransmitted.

The kernel stamps packets only while some socket on the host asks for stamps (the global
`netstamp_needed_key`); the first such socket turns it on and the last one's close turns it off,
each a kernel code patch run by a kworker. One idle socket held for the life of the process keeps
it on, so a connection's setsockopt is just a flag. Stamps stay the arrival times either way: with
the key on, every packet is stamped on arrival; with it off, a packet that arrived first would
only be stamped when read (UDP) or not at all (TCP), so holding it on never makes a stamp later.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Final

from otelprobe.net.prompt_read import PromptReads, Watch

SO_TIMESTAMPNS: Final = int(getattr(socket, "SO_TIMESTAMPNS", 35))
"""Same value for the option and its control message (SCM_TIMESTAMPNS) on Linux."""

_ANCILLARY_BYTES: Final = socket.CMSG_SPACE(16)
_TIMESPEC: Final = struct.Struct("qq")

# struct tcp_info offsets (include/uapi/linux/tcp.h, unchanged since 2.6).
_TCPI_RTT: Final = 68
_TCPI_TOTAL_RETRANS: Final = 100
_TCPI_SIZE: Final = _TCPI_TOTAL_RETRANS + 4


_holder_fd: list[int] = []
"""The socket that keeps the kernel's receive stamping on (a bare fd: no ResourceWarning at exit)."""


def hold_rx_timestamping(wait_s: float = 0.0) -> bool:
    """Keep the kernel stamping received packets for the life of the process; False if it cannot.

    Without it, a setsockopt(SO_TIMESTAMPNS) when no other socket has stamps on, and every close
    of the last such socket, toggle the kernel's key: with connections 2 ms apart, setsockopt took
    ~65 us instead of ~2 us and open+connect+close ~175 us instead of ~100 us on loopback. The
    holder is unbound UDP and never receives anything. Turning the key on is
    deferred to a kernel worker (usually done within microseconds), so data arriving just after the
    process's first request for stamps may miss its stamp; `wait_s` > 0 blocks, at most that
    long, until packets are stamped on arrival (for start-up, before the first probe).
    """
    if not _holder_fd:
        try:
            holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError:
            return False
        try:
            holder.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            holder.close()
            return False
        _holder_fd.append(holder.detach())
    if wait_s <= 0:
        return True
    deadline = time.perf_counter() + wait_s
    while not _stamped_on_arrival():
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.001)
    return True


def _stamped_on_arrival() -> bool:
    """Whether the kernel stamps a packet when it arrives (else only when it is read, or never)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        tx.sendto(b"", rx.getsockname())  # on loopback it arrives inside this call
        after_ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
        try:
            _, ancillary, _, _ = rx.recvmsg(1, _ANCILLARY_BYTES)
        except OSError:
            return False
    stamp = _realtime_stamp_ns(ancillary)
    return stamp is not None and stamp <= after_ns


def enable_rx_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp received data on `sock`; False where the option is unavailable."""
    if not _holder_fd:
        hold_rx_timestamping()
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


_OFFSET_READINGS: Final = 5
_OFFSET_MAX_AGE_NS: Final = 1_000_000_000
_offset_cache: list[int] = [0, -_OFFSET_MAX_AGE_NS - 1]  # [offset, taken at (perf_counter_ns)]
_STEP_TOLERANCE_NS: Final = 100_000
"""An offset that moved more than this (plus the reading's own uncertainty) was moved by a step of
the wall clock; a phase edge off by less is well inside the 1 ms the timing is held to."""
_STEP_CHECK_TRIES: Final = 3
_STEP_CHECK_MAX_WIDTH_NS: Final = 20_000
"""A reading whose bracket is wider (the thread was preempted inside it) cannot tell."""


def _offset_reading() -> tuple[int, int]:
    """(CLOCK_REALTIME - CLOCK_MONOTONIC, the bracket's width): one realtime read between two
    monotonic ones."""
    before = time.perf_counter_ns()
    real = time.clock_gettime_ns(time.CLOCK_REALTIME)
    after = time.perf_counter_ns()
    return real - (before + after) // 2, after - before


def realtime_offset_ns() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC, to put kernel receive stamps on perf_counter's clock.

    Each reading brackets a realtime read between two monotonic ones; a thread preempted inside
    the bracket would shift every stamp of a connection by the preemption (milliseconds on a busy
    machine, enough to make a short phase negative), so the tightest of several brackets wins.
    Both clocks are slewed alike by NTP: the offset moves only when the wall clock is stepped, so
    one value serves the whole process for up to a second (a step seen by `rx_stamp_ns` ends it).
    """
    now = time.perf_counter_ns()
    if now - _offset_cache[1] < _OFFSET_MAX_AGE_NS:
        return _offset_cache[0]
    best_width, best_offset = None, 0
    for _ in range(_OFFSET_READINGS):
        offset, width = _offset_reading()
        if best_width is None or width < best_width:
            best_width, best_offset = width, offset
    _offset_cache[0], _offset_cache[1] = best_offset, now
    return best_offset


def clock_stepped_since(offset_ns: int) -> bool:
    """Whether the wall clock was stepped (settimeofday, a time daemon's step) since `offset_ns`
    was read: the offset now differs by more than `_STEP_TOLERANCE_NS`. A step ends the cached
    offset, so the next connection reads a fresh one. False when every reading was preempted
    (it cannot tell). Usually one bracket: ~0.5 us a check."""
    for _ in range(_STEP_CHECK_TRIES):
        offset, width = _offset_reading()
        if width <= _STEP_CHECK_MAX_WIDTH_NS:
            if abs(offset - offset_ns) <= _STEP_TOLERANCE_NS + width:
                return False
            _offset_cache[1] = -_OFFSET_MAX_AGE_NS - 1
            return True
    return False


def rx_stamp_ns(ancillary: list[tuple[int, int, bytes]], offset_ns: int) -> int | None:
    """The kernel receive time (perf_counter_ns clock) in recvmsg's ancillary data, if any.

    None also when the wall clock was stepped since `offset_ns` was read: the stamp is wall-clock
    time from one side of the step or the other, and which one cannot be told, so the caller
    takes the time of the read, as for a socket without stamps (later, never wrong by the step).
    """
    stamp = _realtime_stamp_ns(ancillary)
    if stamp is None or clock_stepped_since(offset_ns):
        return None
    # Never later than now (a step smaller than the tolerance).
    return min(stamp - offset_ns, time.perf_counter_ns())


def _realtime_stamp_ns(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return int(seconds) * 1_000_000_000 + int(nanoseconds)
    return None


class StampedReceiver:
    """Non-blocking recvmsg on a connected socket, awaited through the loop's reader callbacks.

    asyncio has no `sock_recvmsg`; this is its `sock_recv` with the ancillary data kept.
    `receive()` returns (data, arrival_ns): arrival of the newest byte in `data`, from the
    kernel when it stamped the data, else the user-space time of the read. With `prompt=True`
    the socket is read by net/prompt_read.py's thread the moment data arrives, so that the first
    segment comes back alone, with its own stamp, however late the loop is (see that module:
    segments queued together keep only the newest one's stamp); the first read without it
    stops that, after handing over what the thread had read.
    """

    __slots__ = ("_loop", "_offset_ns", "_sock", "_watch", "stamped")

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._loop = loop
        self.stamped = enable_rx_timestamps(sock)
        self._offset_ns = realtime_offset_ns()
        self._watch: Watch | None = None

    def _try(self, max_bytes: int) -> tuple[bytes, int]:
        data, ancillary, _, _ = self._sock.recvmsg(max_bytes, _ANCILLARY_BYTES)
        stamp = rx_stamp_ns(ancillary, self._offset_ns) if ancillary else None
        return data, stamp if stamp is not None else time.perf_counter_ns()

    async def receive(self, max_bytes: int, *, prompt: bool = False) -> tuple[bytes, int]:
        watch = self._watch
        if prompt and (watch is None or not watch.ended):
            if watch is None:
                watch = self._watch = PromptReads.shared().watch(self._sock, self._try)
            return await watch.next(max_bytes)
        if watch is not None:
            PromptReads.shared().stop(watch, closing=False)
            left = watch.take_left(max_bytes)
            if left is not None:
                return left
            self._watch = None
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

    def withdraw(self) -> None:
        """Before the socket closes: the prompt-read thread must not read its number any more."""
        if self._watch is not None:
            PromptReads.shared().stop(self._watch, closing=True)


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
