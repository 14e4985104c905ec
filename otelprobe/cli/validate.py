"""`otelprobe validate FILE`: report every problem in a config file with file, line and field path."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config file (YAML or JSON)")


def run(args: argparse.Namespace) -> int:
    from otelprobe.config import validate

    problems = validate(args.config)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{args.config}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.config}: OK")
    return 0
