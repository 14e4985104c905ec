"""The forwarder process of one emulated link: moves packets between two TUN devices on time.

Started by `lab/emulation/link.py` with the TUN fds, a control socket and a lifeline pipe; each direction's
timing comes from `_shaper.DirectionShaper`. A single-threaded select() loop: select takes a
microsecond timeout (epoll rounds up to whole milliseconds), which keeps releases close to their
computed times. Exits when the lifeline pipe reports EOF (its parent closed or died).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import select
import socket
import sys
import time
from dataclasses import replace
from typing import Any, Final

from otelprobe.lab.emulation._shaper import DirectionShaper
from otelprobe.lab.emulation.link import DIRECTIONS, LinkParams

log = logging.getLogger(__name__)

_READ_BATCH: Final = 64
_MAX_PACKET: Final = 65535
_PR_SET_TIMERSLACK: Final = 29


class _Forwarder:
    def __init__(self, config: dict[str, Any]) -> None:
        fds = config["fds"]
        self.vantage_fd: int = fds["vantage"]
        self.target_fd: int = fds["target"]
        self.lifeline: int = fds["lifeline"]
        self.listener = socket.socket(fileno=fds["control"])
        self.listener.setblocking(False)
        self.shapers = {
            "up": DirectionShaper(LinkParams.from_dict(config["up"])),
            "down": DirectionShaper(LinkParams.from_dict(config["down"])),
        }
        # fd -> (shaper for packets read there, fd they are written to)
        self.routes = {
            self.vantage_fd: (self.shapers["up"], self.target_fd),
            self.target_fd: (self.shapers["down"], self.vantage_fd),
        }
        for fd in self.routes:
            os.set_blocking(fd, False)
        self.clients: dict[int, tuple[socket.socket, bytearray]] = {}
        self.write_errors = 0

    def run(self) -> None:
        while True:
            readable = self._wait()
            now = time.monotonic_ns()
            for fd in readable:
                if fd in self.routes:
                    self._ingest(fd, now)
                elif fd == self.lifeline:
                    return
                elif fd == self.listener.fileno():
                    self._accept()
                else:
                    self._serve(fd)
            self._release(time.monotonic_ns())

    def _wait(self) -> list[int]:
        due = [t for s in self.shapers.values() if (t := s.next_release_ns()) is not None]
        timeout = max(0.0, (min(due) - time.monotonic_ns()) / 1e9) if due else None
        watched = [*self.routes, self.lifeline, self.listener.fileno(), *self.clients]
        readable, _, _ = select.select(watched, [], [], timeout)
        return readable

    def _ingest(self, fd: int, now: int) -> None:
        shaper, _ = self.routes[fd]
        for _ in range(_READ_BATCH):
            try:
                data = os.read(fd, _MAX_PACKET)
            except BlockingIOError:
                return
            shaper.offer(data, now)

    def _release(self, now: int) -> None:
        for shaper, out_fd in self.routes.values():
            for data in shaper.pop_due(now):
                try:
                    os.write(out_fd, data)
                except OSError as exc:
                    # EIO while the peer device is down, EINVAL for a packet it refuses: a drop.
                    self.write_errors += 1
                    log.debug("write to tun failed: %s", exc)

    # -- control ---------------------------------------------------------------------------------

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self.clients[conn.fileno()] = (conn, bytearray())

    def _serve(self, fd: int) -> None:
        conn, buf = self.clients[fd]
        try:
            chunk = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            del self.clients[fd]
            conn.close()
            return
        buf += chunk
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            reply = self._handle(line)
            # Replies are small; a blocking send keeps the protocol trivially ordered.
            conn.setblocking(True)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")
            conn.setblocking(False)

    def _handle(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "ping":
                return {"ok": True}
            if op == "get":
                return {"ok": True, **{d: self.shapers[d].params.to_dict() for d in DIRECTIONS}}
            if op == "stats":
                stats: dict[str, Any] = {d: self.shapers[d].snapshot().as_dict() for d in DIRECTIONS}
                return {"ok": True, **stats, "write_errors": self.write_errors}
            if op == "reset_stats":
                for shaper in self.shapers.values():
                    shaper.reset_stats()
                return {"ok": True}
            if op == "set":
                shaper = self.shapers[req["direction"]]
                params = replace(shaper.params, **req.get("params", {}))
                shaper.configure(params, time.monotonic_ns(), retime=bool(req.get("retime", True)))
                return {"ok": True}
            return {"ok": False, "error": f"unknown op {op!r}"}
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _tune(realtime: bool) -> None:
    # 1 µs timer slack instead of 50 µs: select() wake-ups land closer to the release time.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    if realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        except OSError as exc:
            if exc.errno != errno.EPERM:
                raise
            log.warning("SCHED_FIFO not permitted; forwarder runs with normal priority")


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    logging.basicConfig(level=logging.WARNING, format=f"forwarder {config['name']}: %(message)s")
    _tune(bool(config.get("realtime")))
    try:
        _Forwarder(config).run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
