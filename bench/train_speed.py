"""How long `train_model` takes on ~100,000 windows (issue 8: "under a minute here").

The shipped training recording holds ~7,700 series-windows, ~2,000 of which teach (warm, labeled,
symptomatic). A table of the wanted size is built by stacking copies of its window table, each copy
with every feature jittered by a few percent and its incidents renumbered (so the held-out split
for the temperature still splits by incident), then `train_model` is timed as `otelprobe train`
calls it (default rounds, parameters and members: each booster the mean of 3 seeds, the fits on
a thread pool as wide as the usable cores, one LightGBM thread each). Wall time and this
process's CPU time are both printed: on a shared machine CPU time over the cores is what idle
cores would take.

    .venv/bin/python bench/train_speed.py                      # a 100,000-window table
    .venv/bin/python bench/train_speed.py --teaching-only      # 100,000 windows that all teach
    .venv/bin/python bench/train_speed.py --windows 20000 --repeat 3
    .venv/bin/python bench/train_speed.py --members 1         # one seed per booster (before session 19)
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from otelprobe.attribution.dataset import read_window_table  # noqa: E402
from otelprobe.attribution.features import FEATURE_NAMES  # noqa: E402
from otelprobe.attribution.model import DEFAULT_MEMBERS, DEFAULT_ROUNDS  # noqa: E402
from otelprobe.attribution.train import teaching_windows, train_model  # noqa: E402

RECORDING = REPO / "data" / "lab" / "train-101" / "traces.jsonl.gz"
INCIDENT_STRIDE = 100_000
"""Incident ids of copy k are shifted by k * this, so copies never share an incident."""


def stacked(frame: pd.DataFrame, windows: int, jitter: float, seed: int) -> pd.DataFrame:
    """`windows` rows made of jittered copies of `frame` (a window table)."""
    rng = np.random.default_rng(seed)
    copies = math.ceil(windows / len(frame))
    pieces = []
    for k in range(copies):
        part = frame.copy()
        if k:
            features = part.loc[:, list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
            part.loc[:, list(FEATURE_NAMES)] = features * rng.normal(1.0, jitter, size=features.shape)
            part["label_incident"] = part["label_incident"] + k * INCIDENT_STRIDE
        pieces.append(part)
    return pd.concat(pieces, ignore_index=True).iloc[:windows].reset_index(drop=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--windows", type=int, default=100_000, help="windows in the table (default 100,000)")
    parser.add_argument(
        "--teaching-only", action="store_true", help="stack only the teaching windows (every row teaches)"
    )
    parser.add_argument(
        "--jitter", type=float, default=0.03, help="relative feature noise per copy (default 0.03)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="timed runs (default 1)")
    parser.add_argument("--rounds", type=int, help="boosting rounds (default: train_model's)")
    parser.add_argument(
        "--members", type=int, default=DEFAULT_MEMBERS, help=f"seeds per booster (default {DEFAULT_MEMBERS})"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    table = read_window_table([RECORDING])
    read_s = time.perf_counter() - started
    source = table.frame
    if args.teaching_only:
        source = teaching_windows(source).frame
    frame = stacked(source, args.windows, args.jitter, seed=1)
    teaching = len(teaching_windows(frame).frame)
    print(
        f"{RECORDING.parent.name}: {len(table.frame):,} windows read in {read_s:.1f} s; table of "
        f"{len(frame):,} windows ({teaching:,} teaching), {len(FEATURE_NAMES)} features"
    )
    times, cpu_times = [], []
    for run in range(args.repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        model = train_model(
            frame, window_s=table.window_s, rounds=args.rounds or DEFAULT_ROUNDS, members=args.members
        )
        took, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        times.append(took)
        cpu_times.append(cpu)
        print(
            f"run {run + 1}: train_model {took:.1f} s wall, {cpu:.1f} s CPU "
            f"(temperature {model.metadata.temperature:.2f}, rounds {model.metadata.training['rounds']}, "
            f"members {model.metadata.training['members']}, "
            f"threads per fit {model.metadata.params.get('num_threads')})"
        )
    print(
        f"median {statistics.median(times):.1f} s wall, {statistics.median(cpu_times):.1f} s CPU "
        f"over {len(times)} run(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
