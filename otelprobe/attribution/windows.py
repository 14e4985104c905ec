"""Event-time windows per (target, vantage) series.

A window is `[k * window_ns, (k + 1) * window_ns)` on the probes' own clock (the root span's
start), so every series cuts time at the same edges and a vantage's or a target's series can be
compared window by window. A series is the pair (target, vantage): the unit an SLO is evaluated on
and an attribution is made for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

SERIES_KEYS: Final = ("target", "vantage")
WINDOW_KEYS: Final = ("target", "vantage", "window_start_ns")

WINDOW_INTERVALS: Final = 2.0
"""Default window length in probe intervals: 2 intervals = 1 min at production's 30 s interval,
2 s in the compressed-time lab (probes every second). Features count probes per window, so the
window is defined by how many probes it holds, not by wall time."""


def window_ns_of(window_s: float) -> int:
    if not window_s > 0:
        raise ValueError(f"window length must be positive, got {window_s!r} s")
    return round(window_s * 1e9)


def assign_windows(records: pd.DataFrame, window_s: float) -> pd.DataFrame:
    """`records` with `window_start_ns` / `window_end_ns` added (a copy)."""
    window_ns = window_ns_of(window_s)
    out = records.copy()
    start = out["start_ns"].to_numpy(dtype=np.int64)
    out["window_start_ns"] = (start // window_ns) * window_ns
    out["window_end_ns"] = out["window_start_ns"] + window_ns
    return out


def median_interval_s(records: pd.DataFrame) -> float:
    """The median time between consecutive first attempts of one series (retries excluded), in
    seconds; NaN when no series has two probes."""
    firsts = records[records["attempt"] <= 1] if "attempt" in records else records
    ordered = firsts.sort_values(["target", "vantage", "start_ns"])
    gaps = ordered.groupby(list(SERIES_KEYS), sort=False)["start_ns"].diff().dropna()
    if gaps.empty:
        return float("nan")
    return float(np.median(gaps.to_numpy(dtype=np.float64)) / 1e9)


def auto_window_s(records: pd.DataFrame, intervals: float = WINDOW_INTERVALS) -> float:
    """The window that holds `intervals` probes of a series: 2 s for the compressed lab, 60 s for
    production probing every 30 s; 60 s when the interval cannot be told."""
    interval_s = median_interval_s(records)
    if not np.isfinite(interval_s) or interval_s <= 0:
        return 60.0
    # Two significant digits: 1.001 s intervals give a 2 s window, 29.97 s ones 60 s.
    return float(f"{intervals * interval_s:.2g}")
