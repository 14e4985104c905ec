"""Recordings in, one row per series-window out: features, context, lab truth (when present) and
SLO detection — the table that training, evaluation, attribution and the notebooks share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from otelprobe.attribution.features import FeatureEngine
from otelprobe.attribution.labels import window_labels
from otelprobe.attribution.records import ReaderStats, read_records
from otelprobe.attribution.slo import evaluate_windows
from otelprobe.attribution.windows import WINDOW_INTERVALS, WINDOW_KEYS, assign_windows, auto_window_s

if TYPE_CHECKING:
    import pandas as pd

    from otelprobe.attribution.slo_file import SLOFile


@dataclass(frozen=True, slots=True)
class WindowTable:
    frame: pd.DataFrame
    window_s: float
    reader: ReaderStats
    records: int


def window_table(
    records: pd.DataFrame,
    window_s: float | None = None,
    slos: SLOFile | None = None,
    window_intervals: float = WINDOW_INTERVALS,
) -> tuple[pd.DataFrame, float]:
    """Features, labels and detection of every series-window of `records`."""
    if window_s is None or not math.isfinite(window_s):
        window_s = auto_window_s(records, window_intervals)
    rec = assign_windows(records, window_s)
    frame = FeatureEngine().features(rec, window_s)
    keys = list(WINDOW_KEYS)
    if rec["lab_cause"].notna().any() or rec["lab_incident"].notna().any():
        frame = frame.merge(window_labels(rec), on=keys, how="left")
    detection = evaluate_windows(records, window_s, slos)
    if not detection.empty:
        frame = frame.merge(detection[[*keys, "violating", "violating_slos"]], on=keys, how="left")
        frame["violating"] = frame["violating"].fillna(False).astype(bool)
    else:
        frame["violating"] = False
        frame["violating_slos"] = ""
    return frame, window_s


def read_window_table(
    paths: Sequence[str | Path],
    window_s: float | None = None,
    slos: SLOFile | None = None,
    window_intervals: float = WINDOW_INTERVALS,
) -> WindowTable:
    """`window_table` of recordings on disk (OTLP JSON lines, plain or gzip)."""
    records, stats = read_records([str(p) for p in paths])
    frame, window = window_table(records, window_s, slos, window_intervals)
    return WindowTable(frame, window, stats, len(records))
