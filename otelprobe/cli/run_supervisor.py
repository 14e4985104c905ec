"""`otelprobe run FILE --workers N` with N > 1: check the config, then supervise N workers.

The parent validates the file once (exit 1 if invalid, like a single process, before any worker
starts) and takes the Prometheus exporter's address from it: the parent serves that address,
each worker an ephemeral loopback port. Each worker is this same command with the hidden
`--worker I/N` options (see `run.py`), so it loads the file, the shard and the vantage itself.
"""

from __future__ import annotations

import argparse
import logging
import sys

from otelprobe.config import load
from otelprobe.config.telemetry import PrometheusExporterConfig
from otelprobe.errors import ConfigError
from otelprobe.scheduling.workers import Supervisor, instance_id
from otelprobe.targets import parse_shard

log = logging.getLogger(__name__)


def supervise(args: argparse.Namespace, workers: int) -> int:
    if args.shard:
        try:
            parse_shard(args.shard)
        except ValueError as exc:
            # A usage error, like the single process's: one line on stderr (logging may not be
            # set up yet, and then the line would be lost).
            print(f"otelprobe run: {exc}", file=sys.stderr)
            return 2
    try:
        config = load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("invalid config: %s", problem)
        return 1
    prometheus = next(
        (e for e in config.telemetry.exporters if isinstance(e, PrometheusExporterConfig)), None
    )
    verbosity = ["-v"] * min(int(getattr(args, "verbose", 0)), 2)

    def worker_argv(index: int, control_fd: int) -> list[str]:
        argv = [sys.executable, "-m", "otelprobe.cli", *verbosity, "run"]
        argv += [f"--worker={index}/{workers}", f"--control-fd={control_fd}"]
        argv += [f"--instance-id={instance_id(index)}"]
        if args.shard:
            argv.append(f"--shard={args.shard}")
        if args.vantage:
            argv.append(f"--vantage={args.vantage}")
        return [*argv, "--", str(args.config)]

    log.info("starting %d workers for %s", workers, args.config)
    address = (prometheus.host, prometheus.port) if prometheus is not None else None
    return Supervisor(workers, worker_argv, address).run()
