"""Runs every benchmark in bench/ one after the other (`make bench`); --quick for a short smoke run.

Each benchmark is its own script (and process), so one that fails does not hide the others;
the exit code is non-zero if any failed. Benchmarks that need root (link_accuracy.py) are
skipped when not running as root.

    .venv/bin/python bench/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def scripts(quick: bool) -> list[list[str]]:
    found = [[str(BENCH / name)] for name in ("timing_error.py", "cost.py", "scale.py")]
    found = [cmd for cmd in found if Path(cmd[0]).exists()]
    if quick:
        # Only scripts that know the option get it (bench scripts are written by different people).
        found = [[*cmd, "--quick"] if "--quick" in Path(cmd[0]).read_text() else cmd for cmd in found]
    if os.geteuid() == 0:
        samples = ["--samples", "60"] if quick else []
        found.append([str(BENCH / "link_accuracy.py"), *samples])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test, not figures")
    args = parser.parse_args()
    failed = []
    for cmd in scripts(args.quick):
        name = Path(cmd[0]).name
        print(f"=== {name} {' '.join(cmd[1:])}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, *cmd], cwd=BENCH.parent)
        print(f"=== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
