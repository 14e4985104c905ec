"""`otelprobe lab verify`: fault accuracy and the prober's phase timing error against the wire.

The `lab` command family (cli/lab.py) mounts this as its `verify` subcommand; the work is in
otelprobe/lab/verification/verify.py. Needs root (the packet capture opens an AF_PACKET socket).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from otelprobe.settings.durations import parse_duration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 300],
        help="concurrent probes per run (default: 1 300)",
    )
    parser.add_argument("--probes", type=int, default=300, help="probes per concurrency (default 300)")
    parser.add_argument("--tls-delay", default="0ms", help="TLS handshake delay to inject, e.g. 20ms")
    parser.add_argument("--ttfb", default="20ms", help="TTFB delay to inject (default 20ms)")
    parser.add_argument("--burst", action="store_true", help="start each round of probes at once")
    parser.add_argument("--skip-faults", action="store_true", help="skip the fault accuracy table")


def run(args: argparse.Namespace) -> int:
    from otelprobe.lab.verification.target import TargetSpec
    from otelprobe.lab.verification.verify import fault_accuracy, format_accuracy, format_runs, verify

    if os.geteuid() != 0:
        print("otelprobe lab verify: needs root (AF_PACKET capture)", file=sys.stderr)
        return 2
    probes = max(1, min(args.probes, 5000))
    concurrency = [max(1, min(c, 2000)) for c in args.concurrency]
    spec = TargetSpec(tls_delay_s=parse_duration(args.tls_delay), ttfb_s=parse_duration(args.ttfb))
    if not args.skip_faults:
        print("## Fault accuracy (raw socket clients)\n")
        print(format_accuracy(asyncio.run(fault_accuracy())))
        print()
    print("## Phase timing error: |span - wire| (packet capture on lo, kernel timestamps)\n")
    print(format_runs(asyncio.run(verify(concurrency, probes, spec, burst=args.burst))))
    return 0
