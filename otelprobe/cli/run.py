"""`otelprobe run FILE`: probe every target on its schedule until SIGTERM/SIGINT; SIGHUP reloads.

With `--workers N` (default: the CPUs this process may use) N processes probe, each its share of
the targets, under one supervisor (`scheduling/workers.py`); `--workers 1` is one process, no
supervisor. The `--worker`, `--control-fd` and `--instance-id` options are how the supervisor
starts a worker; they are not for users.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def cpus() -> int:
    """The CPUs this process may run on (its affinity, as a container's cpuset limits it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _workers(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"invalid worker count {text!r}: expected a whole number 1..1024")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config file (YAML or JSON); reloaded when it changes")
    parser.add_argument(
        "--shard", metavar="I/N", help="probe only this replica's share of the targets (0-based I)"
    )
    parser.add_argument("--vantage", help="override the config's vantage name")
    parser.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="probing processes, each with its share of this replica's targets "
        f"(default: the CPUs this process may use, here {cpus()}); 1 = a single process",
    )
    parser.add_argument("--worker", metavar="I/N", help=argparse.SUPPRESS)
    parser.add_argument("--control-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--instance-id", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.worker is not None:
        return _run_worker(args)
    workers = args.workers or cpus()
    if workers == 1:
        from otelprobe.scheduling import runtime

        return runtime.main(args.config, shard=args.shard, vantage=args.vantage)
    from otelprobe.cli.run_supervisor import supervise

    return supervise(args, workers)


def _run_worker(args: argparse.Namespace) -> int:
    from otelprobe.scheduling.worker import serve_worker
    from otelprobe.targets import parse_shard

    if args.control_fd is None or args.instance_id is None:
        print("otelprobe run: --worker needs --control-fd and --instance-id", file=sys.stderr)
        return 2
    try:
        worker = parse_shard(args.worker)
    except ValueError as exc:
        print(f"otelprobe run: {exc}", file=sys.stderr)
        return 2
    # Each line says which worker wrote it: they share the supervisor's stderr.
    for handler in logging.getLogger().handlers:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s [w{worker.index}] %(name)s: %(message)s")
        )
    return serve_worker(
        args.config,
        worker=worker,
        instance_id=args.instance_id,
        control_fd=args.control_fd,
        shard=args.shard,
        vantage=args.vantage,
    )
