"""`otelprobe run FILE`: probe every target on its schedule until SIGTERM/SIGINT; SIGHUP reloads."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config file (YAML or JSON); reloaded when it changes")
    parser.add_argument(
        "--shard", metavar="I/N", help="probe only this replica's share of the targets (0-based I)"
    )
    parser.add_argument("--vantage", help="override the config's vantage name")


def run(args: argparse.Namespace) -> int:
    from otelprobe.scheduling import runtime

    return runtime.main(args.config, shard=args.shard, vantage=args.vantage)
