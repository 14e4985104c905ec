"""The shipped training recording as a window table, built once per test process: the evaluation
tests tune the static-threshold baseline on it (15 s to build on a shared 2-core machine)."""

from __future__ import annotations

import functools
from pathlib import Path

from otelprobe.attribution.dataset import WindowTable, read_window_table

TRAIN_RECORDING = Path(__file__).resolve().parents[2] / "data" / "lab" / "train-101" / "traces.jsonl.gz"


@functools.cache
def train_101_table() -> WindowTable:
    return read_window_table([TRAIN_RECORDING])
