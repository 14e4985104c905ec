"""The supervisor behind `otelprobe run --workers N`: N probing processes, one parent.

Worker i of N probes the targets `targets.worker_of(name, N) == i` of this replica's shard
(`worker.py`). The parent does no probing and runs no event loop: it starts the workers, forwards
signals, restarts a worker that exits, and serves the one /metrics endpoint (`worker_metrics.py`).

- A worker that exits while the parent is not stopping (killed, non-zero status, or even status
  0) is restarted after a back-off: 0.5 s, doubled for each further exit within `STABLE_S` of its
  start, at most 30 s. Every restart is logged and counted (`otelprobe_worker_restarts_total`).
- Crash loop: when one worker exits non-zero `CRASH_LOOP_LIMIT` times in a row, each time within
  `STABLE_S` of its start (e.g. a config made invalid since, which every restart fails to load),
  the parent stops the other workers as on SIGTERM and exits `EXIT_CRASH_LOOP`.
- SIGHUP is forwarded to every worker (each reloads the file; each also notices a changed file
  on its own, as a single process does). Workers start with SIGHUP blocked, so one sent while a
  worker is still starting is held until it can reload.
- SIGTERM/SIGINT: SIGTERM to every worker, which lets in-flight probes finish and flushes its
  telemetry; the parent waits up to `STOP_TIMEOUT_S`, kills what is left, and exits 0.
- Each worker holds one end of a socket pair whose other end only the parent holds: if the parent
  dies (even by SIGKILL), the workers see it close and stop themselves.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Final

from otelprobe.scheduling.runtime import GRACE_S
from otelprobe.scheduling.worker_metrics import WorkerMetricsServer, WorkerView

__all__ = ["CRASH_LOOP_LIMIT", "EXIT_CRASH_LOOP", "Supervisor", "instance_id"]

log = logging.getLogger(__name__)

MIN_BACKOFF_S: Final = 0.5
MAX_BACKOFF_S: Final = 30.0
STABLE_S: Final = 30.0
"""A worker that ran this long before exiting starts its back-off (and crash count) afresh."""
CRASH_LOOP_LIMIT: Final = 5
EXIT_CRASH_LOOP: Final = 3
STOP_TIMEOUT_S: Final = GRACE_S + 10.0
"""In-flight probes get GRACE_S, then telemetry is flushed (about 5 s): then the parent kills."""
_TICK_S: Final = 0.5

WorkerArgv = Callable[[int, int], list[str]]
"""(worker index, control fd) -> the worker's command line."""


def instance_id(index: int, *, host: str | None = None, pid: int | None = None) -> str:
    """`service.instance.id` of worker `index` of this supervisor: `<host>-<supervisor pid>/w<i>`.

    The same across a worker's restarts; distinct per worker and per supervisor run.
    """
    return f"{host or socket.gethostname()}-{pid or os.getpid()}/w{index}"


@dataclass
class _Slot:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    control: socket.socket | None = None
    pending: bytes = b""
    metrics: tuple[str, int] | None = None
    ready: bool = False
    started_at: float = 0.0
    starts: int = 0
    quick_crashes: int = 0
    restart_at: float | None = None

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    def view(self) -> WorkerView:
        running = self.proc is not None and self.proc.returncode is None
        return WorkerView(self.index, self.metrics if running else None, running, self.restarts)


class Supervisor:
    """Runs `workers` worker processes until SIGTERM/SIGINT or a crash loop.

    Args:
        workers: how many worker processes.
        worker_argv: builds worker i's command line, given the fd of its end of the control socket.
        metrics_address: (host, port) of the merged /metrics endpoint; None when the config has
            no Prometheus exporter.
    """

    def __init__(
        self, workers: int, worker_argv: WorkerArgv, metrics_address: tuple[str, int] | None = None
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._argv = worker_argv
        self._metrics_address = metrics_address
        self._slots = [_Slot(i) for i in range(workers)]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = False
        self._hup = False

    def views(self) -> list[WorkerView]:
        return [slot.view() for slot in self._slots]

    def run(self) -> int:
        """Supervise until stopped: 0 after a clean stop, EXIT_CRASH_LOOP, or 1 if /metrics cannot bind."""
        metrics: WorkerMetricsServer | None = None
        if self._metrics_address is not None:
            host, port = self._metrics_address
            try:
                metrics = WorkerMetricsServer(host, port, self.views, len(self._slots))
            except OSError as exc:
                log.error("cannot serve Prometheus metrics on %s:%s: %s", host, port, exc)
                return 1
            log.info("serving the workers' Prometheus metrics on http://%s:%s/metrics", *metrics.address)
        previous = self._install_signals()
        try:
            for slot in self._slots:
                self._start(slot)
            code = self._supervise()
            self._stop_all()
            return code
        finally:
            self._restore_signals(previous)
            if metrics is not None:
                metrics.shutdown()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    # --- signals ---------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._hup = True
        elif signum in (signal.SIGTERM, signal.SIGINT):
            self._stop = True
        # SIGCHLD: nothing to do here; the wake-up byte makes the loop reap at once.

    def _install_signals(self) -> dict[int, object]:
        self._wake_w.setblocking(False)
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        previous: dict[int, object] = {-1: signal.set_wakeup_fd(self._wake_w.fileno())}
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    def _restore_signals(self, previous: dict[int, object]) -> None:
        for sig, handler in previous.items():
            if sig == -1:
                assert isinstance(handler, int)
                signal.set_wakeup_fd(handler)
            else:
                signal.signal(sig, handler)  # type: ignore[arg-type]

    # --- the loop --------------------------------------------------------------------------------
    def _supervise(self) -> int:
        while not self._stop:
            for key, _events in self._selector.select(timeout=_TICK_S):
                if key.data is None:
                    _drain(self._wake_r)
                else:
                    self._read_control(key.data)
            if self._stop:
                break
            if self._hup:
                self._hup = False
                self._forward(signal.SIGHUP, "reload")
            now = time.monotonic()
            for slot in self._slots:
                if slot.proc is not None and slot.proc.poll() is not None:
                    if self._exited(slot, now):
                        log.error(
                            "worker %d crashed %d times in a row within %.0f s of its start; "
                            "stopping every worker (exit %d)",
                            slot.index,
                            slot.quick_crashes,
                            STABLE_S,
                            EXIT_CRASH_LOOP,
                        )
                        return EXIT_CRASH_LOOP
                if slot.proc is None and slot.restart_at is not None and now >= slot.restart_at:
                    self._start(slot)
        return 0

    def _start(self, slot: _Slot) -> None:
        parent_end, child_end = socket.socketpair()
        argv = self._argv(slot.index, child_end.fileno())
        # Blocked SIGHUP is inherited across exec: a reload sent while the worker starts is held.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            slot.proc = subprocess.Popen(argv, pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL)
        except OSError as exc:
            parent_end.close()
            log.error("cannot start worker %d: %s", slot.index, exc)
            slot.proc, slot.restart_at = None, time.monotonic() + MAX_BACKOFF_S
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            child_end.close()
        parent_end.setblocking(False)
        slot.control, slot.pending, slot.metrics, slot.ready = parent_end, b"", None, False
        self._selector.register(parent_end, selectors.EVENT_READ, slot)
        slot.started_at, slot.restart_at = time.monotonic(), None
        slot.starts += 1
        if slot.starts > 1:
            log.warning("worker %d restarted (pid %d, restart %d)", slot.index, slot.proc.pid, slot.restarts)
        else:
            log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)

    def _read_control(self, slot: _Slot) -> None:
        assert slot.control is not None
        try:
            data = slot.control.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker is gone; poll() reaps it
            self._close_control(slot)
            return
        slot.pending += data
        *lines, slot.pending = slot.pending.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace")
            if line == "ready":
                slot.ready = True
            elif line.startswith("metrics "):
                host, _, port = line[len("metrics ") :].rpartition(":")
                if port.isdigit():
                    slot.metrics = (host, int(port))

    def _close_control(self, slot: _Slot) -> None:
        if slot.control is not None:
            self._selector.unregister(slot.control)
            slot.control.close()
            slot.control = None

    def _exited(self, slot: _Slot, now: float) -> bool:
        """Handle a worker's exit; True when it is a crash loop."""
        assert slot.proc is not None
        code, pid = slot.proc.returncode, slot.proc.pid
        uptime = now - slot.started_at
        self._close_control(slot)
        slot.proc, slot.metrics, slot.ready = None, None, False
        how = f"killed by {_signal_name(-code)}" if code < 0 else f"exit status {code}"
        if code == 0:
            slot.quick_crashes = 0
            delay = MIN_BACKOFF_S
            log.warning("worker %d (pid %d) exited on its own (%s); restarting", slot.index, pid, how)
        else:
            slot.quick_crashes = slot.quick_crashes + 1 if uptime < STABLE_S else 1
            if slot.quick_crashes >= CRASH_LOOP_LIMIT:
                return True
            delay = min(MAX_BACKOFF_S, MIN_BACKOFF_S * 2 ** (slot.quick_crashes - 1))
            log.error(
                "worker %d (pid %d) crashed (%s) after %.1f s; restarting in %.1f s",
                slot.index,
                pid,
                how,
                uptime,
                delay,
            )
        slot.restart_at = now + delay
        return False

    def _forward(self, sig: signal.Signals, what: str) -> None:
        for slot in self._slots:
            if slot.proc is not None and slot.proc.returncode is None:
                log.info("%s: signalling worker %d (pid %d)", what, slot.index, slot.proc.pid)
                try:
                    slot.proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def _stop_all(self) -> None:
        """SIGTERM every worker, wait up to STOP_TIMEOUT_S for them to drain, then SIGKILL the rest."""
        self._forward(signal.SIGTERM, "stop")
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for slot in self._slots:
            if slot.proc is None:
                continue
            try:
                slot.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop within %.0f s; killing it", slot.index, STOP_TIMEOUT_S)
                slot.proc.kill()
                slot.proc.wait()
            self._close_control(slot)
        log.info("all workers stopped")


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
