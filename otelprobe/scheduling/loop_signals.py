"""SIGTERM / SIGINT / SIGHUP handled on the event loop without being lost when the loop is behind.

asyncio's `loop.add_signal_handler` has Python's signal handler do nothing but write the signal
number into the loop's self-pipe, and acts only on the numbers it reads back. That socket is also
written, one byte each time, by every `call_soon_threadsafe` (the prompt-reads thread wakes a
waiting read that way, net/prompt_read.py), and it takes only about 280 one-byte writes: in a
loaded process whose loop has fallen behind it is full, the signal's byte is dropped (stderr:
"Exception ignored when trying to write to the signal wakeup fd: BlockingIOError") and the signal
is lost. `otelprobe run` overloaded on a loaded box ignored SIGTERM that way until it was killed.

Here Python's own handler (which the interpreter runs in the main thread whether or not the byte
was written) schedules the callback, and the wake-up fd is a socket pair of ours that only signals
write to: it only wakes the loop, so that the handler runs promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator, Mapping
from types import FrameType

__all__ = ["signals_on_loop"]


@contextlib.contextmanager
def signals_on_loop(
    loop: asyncio.AbstractEventLoop, callbacks: Mapping[signal.Signals, Callable[[], None]]
) -> Iterator[None]:
    """Run `callbacks[sig]` on `loop` for each signal received while inside; the main thread only."""
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    loop.add_reader(wake_r.fileno(), _drain, wake_r)
    previous_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    previous: dict[signal.Signals, object] = {}
    try:
        for sig, callback in callbacks.items():
            previous[sig] = signal.signal(sig, _handler(loop, callback))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(previous_fd)
        loop.remove_reader(wake_r.fileno())
        wake_r.close()
        wake_w.close()


def _handler(
    loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
) -> Callable[[int, FrameType | None], None]:
    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        # The handler may interrupt any loop callback: run the callback as a callback of its own.
        loop.call_soon_threadsafe(callback)

    return on_signal


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while sock.recv(4096):
            pass
