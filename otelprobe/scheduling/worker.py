"""One probing process under `otelprobe run --workers N` (the supervisor is `workers.py`).

A worker is the ordinary `Runtime` on its part of the targets (`targets.worker_of`), with three
differences: its `service.instance.id` names it (`<host>-<supervisor pid>/w<i>`); its Prometheus
endpoint, if the config has one, listens on an ephemeral 127.0.0.1 port that it reports to the
supervisor, which serves the one endpoint users scrape; and it stops (draining, flushing) when the
supervisor's end of the control socket closes, so a supervisor killed with SIGKILL leaves no
orphans probing.

The control socket carries lines from the worker: `metrics HOST:PORT` and `ready` (signal handlers
installed, config loaded, probing started).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path

from otelprobe.config.models import Config
from otelprobe.config.telemetry import PrometheusExporterConfig
from otelprobe.scheduling.runtime import Runtime, TelemetrySink, run
from otelprobe.targets import Shard
from otelprobe.telemetry.pipeline import Telemetry

__all__ = ["serve_worker", "worker_telemetry"]

log = logging.getLogger(__name__)


def worker_telemetry(config: Config, instance_id: str) -> Telemetry:
    """The config's telemetry with this worker's instance id; Prometheus on an ephemeral loopback port."""
    exporters = [
        e.model_copy(update={"host": "127.0.0.1", "port": 0})
        if isinstance(e, PrometheusExporterConfig)
        else e
        for e in config.telemetry.exporters
    ]
    telemetry = config.telemetry.model_copy(update={"exporters": exporters})
    return Telemetry(telemetry, vantage=config.vantage, instance_id=instance_id)


def _watch_supervisor(control: socket.socket) -> None:
    """Stop this worker (as SIGTERM would) once the supervisor's end of the socket closes."""
    try:
        while control.recv(256):
            pass
    except OSError:
        pass
    log.warning("the supervisor is gone; stopping")
    os.kill(os.getpid(), signal.SIGTERM)


def serve_worker(
    path: str | os.PathLike[str],
    *,
    worker: Shard,
    instance_id: str,
    control_fd: int,
    shard: str | None = None,
    vantage: str | None = None,
) -> int:
    """Run worker `worker` until SIGTERM/SIGINT (or its supervisor is gone); the process exit code."""
    control = socket.socket(fileno=control_fd)
    threading.Thread(
        target=_watch_supervisor, args=(control,), name="otelprobe-supervisor", daemon=True
    ).start()

    def send(line: str) -> None:
        try:
            control.sendall(line.encode() + b"\n")
        except OSError:
            pass  # the supervisor is gone; the watcher stops us

    def sink_factory(config: Config) -> TelemetrySink:
        telemetry = worker_telemetry(config, instance_id)
        if telemetry.prometheus_address is not None:
            send("metrics {}:{}".format(*telemetry.prometheus_address))
        # The supervisor starts workers with SIGHUP blocked, so that a reload asked for while this
        # process was starting is held, not fatal; `run` has installed the handlers by now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        send("ready")
        return telemetry

    try:
        runtime = Runtime(path, shard=shard, vantage=vantage, worker=worker, sink_factory=sink_factory)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    try:
        return run(Path(path), runtime_factory=lambda _path: runtime)
    finally:
        control.close()
