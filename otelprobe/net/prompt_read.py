"""Reads done the moment data arrives, by a thread, so that a busy event loop cannot merge segments.

Why (measured on Linux 6.18, bench/README.md "First byte under a late loop"): the TCP receive
queue merges an in-order segment into the queued one before it (tcp_try_coalesce) and the merged
buffer keeps only the *newest* segment's receive stamp. So once the response's first segment and
the next ones sit in the queue together, the first one's arrival is gone from the kernel: a small
first recvmsg, or MSG_PEEK of one byte, returns the newest stamp just like a large read. The only
way to keep the first segment's stamp is to read it before the next segment arrives, whatever the
loop is doing. (Segments stay separate only while something else holds a clone of the queued one,
e.g. a packet capture that has not read it yet: then a read of the first segment's length does get
its own stamp — so a capture alone can make a small first read look like a fix.)

`PromptReads` is one daemon thread per process blocked in `epoll_wait` on the sockets being
watched (edge-triggered: one registration per socket, an event per arrival). On each arrival it
reads what is queued — `recvmsg` with the receive stamp, normally that one segment — and keeps it
for the socket's coroutine, waking it through its loop (`call_soon_threadsafe`). The thread needs
the GIL for the read: a loop blocked in a C call or a sleep lets it in at once, a loop running
Python code after the interpreter's switch interval (5 ms), still before a later segment of most
paced responses — as long as the process gets a CPU: a GIL holder that the OS preempts (a box
with more runnable threads than cores) holds the thread back too, and a segment arriving
meanwhile merges (bench/README.md: the thread's lag p90 15 ms, p99 22 ms at load 6-8 on 2 cores).
A 1 ms switch interval shortened that lag in one run but coincided with `tcp.connect` errors in
`lab verify` at 300 concurrent (forced GIL hand-overs between a phase's start mark and its
syscall, probably), so the interpreter's default is left alone.

A watch replaces the loop's add_reader / remove_reader, so a response costs about the same
syscalls (epoll_ctl ADD, and DEL only if the response goes on, instead of ADD and DEL; one
wake-up write), plus a thread wake-up.

TimedConnection watches a socket while `prompt_reads` is set (until a response's first byte,
through TLS records and HTTP/2 frames that come before it); later reads are the loop's own, each
stamped by its newest byte, which is what a last byte needs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

_EVENTS: Final = select.EPOLLIN | select.EPOLLET
"""EPOLLERR / EPOLLHUP are always reported: the read then returns b"" or raises, as the loop's would."""

_log = logging.getLogger(__name__)
_AHEAD: Final = 64 * 1024
"""Bytes the thread reads ahead of the coroutine at most (a response head is far smaller)."""

Chunk = tuple[bytes, int]
"""Data and the kernel arrival of its newest byte (perf_counter_ns clock)."""


class Watch:
    """One socket's reads done by the thread, handed over in order by `next`.

    The thread reads ahead at most `_AHEAD` bytes: past that it leaves the data in the socket
    (flow control for the server, bounded memory for us) and `next` reads on from the socket.
    """

    __slots__ = ("_behind", "_buffered", "_chunks", "_ended", "_fd", "_loop", "_read", "_reads", "_waiter")

    def __init__(self, reads: PromptReads, fd: int, read: Callable[[], Chunk]) -> None:
        self._reads = reads
        self._fd = fd
        self._read = read
        self._loop = asyncio.get_running_loop()
        self._chunks: deque[Chunk | BaseException] = deque()
        self._buffered = 0
        self._behind = False  # data may wait in the socket that the thread did not read
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None

    async def next(self, max_bytes: int) -> Chunk:
        """The next data (at most `max_bytes`; the rest stays, with its stamp)."""
        lock = self._reads.lock
        while True:
            with lock:
                if not self._chunks and self._behind:
                    self._fill()
                if self._chunks:
                    return self._take(max_bytes)
                if self._ended:
                    return b"", time.perf_counter_ns()
                waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def take_left(self, max_bytes: int) -> Chunk | None:
        """What the thread read and nobody took yet (once the watch has stopped)."""
        with self._reads.lock:
            return self._take(max_bytes) if self._chunks else None

    def _take(self, max_bytes: int) -> Chunk:
        item = self._chunks.popleft()
        if isinstance(item, BaseException):
            raise item
        data, stamp = item
        if len(data) > max_bytes:
            self._chunks.appendleft((data[max_bytes:], stamp))
            data = data[:max_bytes]
        self._buffered -= len(data)
        return data, stamp

    def _fill(self) -> None:
        """With the lock held: read what is queued, up to the read-ahead bound."""
        size = self._reads.read_size
        while not self._ended:
            if self._buffered >= _AHEAD:
                self._behind = True
                return
            try:
                data, stamp = self._read()
            except (BlockingIOError, InterruptedError):
                self._behind = False
                return
            except BaseException as exc:  # raised to the coroutine, in order
                self._chunks.append(exc)
                self._ended = True
                return
            self._chunks.append((data, stamp))
            self._buffered += len(data)
            self._ended = not data
            if len(data) < size:  # a short read emptied the queue; the next arrival is an event
                self._behind = False
                return

    def _arrived(self) -> None:
        """On the thread, with the lock held: data arrived."""
        self._fill()
        waiter = self._waiter
        if waiter is not None:
            try:
                self._loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:
                pass  # that loop is closed: nobody waits for the read any more

    @property
    def ended(self) -> bool:
        return self._ended


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class PromptReads:
    """The thread that does the watched sockets' reads; `shared()` gives the process's one."""

    read_size: Final = 65536

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self.lock = threading.Lock()
        self._watches: dict[int, Watch] = {}
        thread = threading.Thread(target=self._run, name="otelprobe-prompt-reads", daemon=True)
        thread.start()

    def watch(self, sock: socket.socket, read: Callable[[int], Chunk]) -> Watch:
        """Read `sock` (non-blocking) on the thread from now on; data already queued is read at once."""
        fd = sock.fileno()
        watch = Watch(self, fd, lambda: read(self.read_size))
        with self.lock:
            self._watches[fd] = watch
            try:
                try:
                    self._epoll.register(fd, _EVENTS)
                except FileExistsError:  # an earlier socket's entry under this number (a dup lived on)
                    self._epoll.modify(fd, _EVENTS)
            except BaseException:
                del self._watches[fd]
                raise
        return watch

    def stop(self, watch: Watch, *, closing: bool) -> None:
        """No more reads for `watch`; `closing`: its socket is about to close (which leaves the
        epoll set by itself), else it is taken out of the set now."""
        with self.lock:
            if self._watches.get(watch._fd) is not watch:
                return
            del self._watches[watch._fd]
            if not closing:
                try:
                    self._epoll.unregister(watch._fd)
                except OSError:
                    pass

    def _run(self) -> None:
        while True:
            try:
                events = self._epoll.poll()
            except OSError:  # the epoll fd closed under us (a forked child's copy): this thread is done
                return
            with self.lock:
                for fd, _ in events:
                    watch = self._watches.get(fd)
                    if watch is None:
                        continue
                    try:
                        watch._arrived()
                    except Exception:  # never let one socket stop every other socket's reads
                        _log.exception("prompt read on fd %d failed", fd)

    @classmethod
    def shared(cls) -> PromptReads:
        if not _shared:
            with _shared_lock:
                if not _shared:
                    _shared.append(cls())
        return _shared[0]


_shared: list[PromptReads] = []
_shared_lock = threading.Lock()


def _forget_in_child() -> None:
    """A forked child has no copy of the thread: it starts its own on its first watch."""
    if _shared:
        _shared.pop()._epoll.close()


os.register_at_fork(after_in_child=_forget_in_child)
