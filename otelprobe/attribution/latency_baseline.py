"""A series' own healthy latency, learned window by window: what `threshold: baseline` compares to.

Used by the SLO evaluator (slo.py) for latency SLOs without a fixed threshold. Only windows
that were not violating, and were followed by `confirm_windows` more that were not, are
learned, so the first slow window of a degradation (seen before the alert fired) does not
teach the baseline that slow is normal; probes far above normal are never learned. State is
bounded: the last `samples` durations in a fixed array.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from otelprobe.attribution.slo_file import BaselineSettings


class LatencyBaseline:
    """Durations (s) of successful probes in recent healthy windows of one series."""

    __slots__ = ("_count", "_limit_s", "_next", "_pending", "_ring", "_settings", "_threshold_s")

    def __init__(self, settings: BaselineSettings) -> None:
        self._settings = settings
        self._ring = np.empty(settings.samples)
        self._next = 0  # where the next sample goes
        self._count = 0
        self._pending: deque[Sequence[float]] = deque()
        self._threshold_s: float | None = None
        self._limit_s: float | None = None

    @property
    def sample_count(self) -> int:
        return self._count

    def threshold_s(self) -> float | None:
        """Slower than this is slow; None until `warmup_samples` healthy probes were learned."""
        if self._threshold_s is None and self._count >= self._settings.warmup_samples:
            self._threshold_s = learned_threshold_s(self._ring[: self._count], self._settings)
        return self._threshold_s

    def observe(self, durations_s: Sequence[float], violating: bool) -> None:
        """Record one closed window: its successful probes' durations and whether it violated."""
        if violating:
            # The windows just before an alert may already hold the degradation: forget them.
            self._pending.clear()
            return
        self._pending.append(durations_s)
        while len(self._pending) > self._settings.confirm_windows:
            window = self._pending.popleft()
            limit_s = self._learn_limit_s()
            for duration_s in window:
                if duration_s <= limit_s:
                    self._learn(duration_s)

    def _learn(self, duration_s: float) -> None:
        self._ring[self._next] = duration_s
        self._next = (self._next + 1) % len(self._ring)
        self._count = min(self._count + 1, len(self._ring))
        self._threshold_s = self._limit_s = None  # recomputed when next asked

    def _learn_limit_s(self) -> float:
        # A probe far above normal is not learned even from a quiet window: while warming up no
        # alert can keep a degradation out, and one that never alerted must not raise the bar.
        if self._limit_s is None:
            if not self._count:
                return float("inf")
            median_s = _quantile(np.sort(self._ring[: self._count]), 0.5)
            self._limit_s = max(
                self._settings.outlier_ratio * median_s,
                median_s + self._settings.min_margin_s,
                self.threshold_s() or 0.0,
            )
        return self._limit_s


def learned_threshold_s(samples_s: np.ndarray, settings: BaselineSettings) -> float:
    """max(ratio x p50, p_quantile + margin, p50 + min_margin) of the samples (docs/attribution.md)."""
    ordered = np.sort(samples_s)
    median_s, tail_s = _quantile(ordered, 0.5), _quantile(ordered, settings.quantile)
    return max(settings.ratio * median_s, tail_s + settings.margin_s, median_s + settings.min_margin_s)


def _quantile(ordered: np.ndarray, q: float) -> float:
    """numpy's default (linear) quantile of sorted values, without np.quantile's ~100 us overhead."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


class LatencyStore:
    """`LatencyBaseline` of every series in arrays (a row each), one window learned for all at once.

    The per-series object cost ~5 us of Python per series and window (10,000 series per sidecar
    slot); this holds the same state — per row the ring of samples, where the next goes, how many
    are held, how many windows wait for confirmation — and applies `LatencyBaseline.observe` to all
    rows of a window with array operations. The arithmetic is the same, operation for operation
    (quantiles of sorted values, the same max chains), so thresholds are bit for bit those of
    `LatencyBaseline` (tests/attribution/test_latency_store.py).

    Pending windows: a row's pending windows are always its last ones (each window appends one,
    a violating window clears them), so the store keeps the healthy durations of the last
    `confirm_windows + 1` windows of all rows (record order) and a count per row.
    """

    def __init__(self, settings: BaselineSettings, capacity: int = 1024) -> None:
        self.settings = settings
        size = settings.samples
        self._ring = np.zeros((capacity, size))
        self._next = np.zeros(capacity, dtype=np.int64)
        self._count = np.zeros(capacity, dtype=np.int64)
        self._pending = np.zeros(capacity, dtype=np.int64)
        # Cached per row until it learns: threshold (NaN: none yet) and median (NaN: no samples).
        self._threshold = np.full(capacity, np.nan)
        self._median = np.full(capacity, np.nan)
        self._stale = np.ones(capacity, dtype=bool)
        empty = (np.empty(0, dtype=np.int64), np.empty(0))
        # (rows, durations) of the healthy probes of each of the last windows, oldest first.
        self._windows: deque[tuple[np.ndarray, np.ndarray]] = deque(
            [empty] * (settings.confirm_windows + 1), maxlen=settings.confirm_windows + 1
        )

    @property
    def capacity(self) -> int:
        return len(self._next)

    def grow(self, capacity: int) -> None:
        held = self.capacity
        for name in ("_ring", "_next", "_count", "_pending", "_threshold", "_median", "_stale"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        self._stale[held:] = True

    def clear(self, rows: np.ndarray | list[int]) -> None:
        """Rows back to a series never seen."""
        self._next[rows] = self._count[rows] = self._pending[rows] = 0
        self._stale[rows] = True

    def sample_count(self, row: int) -> int:
        return int(self._count[row])

    def thresholds(self, rows: np.ndarray) -> np.ndarray:
        """`LatencyBaseline.threshold_s()` of each row (NaN: None, still warming up)."""
        self._refresh(rows)
        return np.asarray(self._threshold[rows], dtype=np.float64)

    def _refresh(self, rows: np.ndarray) -> None:
        stale = rows[self._stale[rows]]
        if not len(stale):
            return
        counts = self._count[stale]
        width = int(counts.max()) if len(counts) else 0
        block = self._ring[stale, :width].copy()
        block[np.arange(width) >= counts[:, None]] = np.inf  # past the samples held
        ordered = np.sort(block, axis=1)
        settings = self.settings
        median = _quantiles(ordered, counts, 0.5)
        tail = _quantiles(ordered, counts, settings.quantile)
        threshold = np.maximum(
            np.maximum(settings.ratio * median, tail + settings.margin_s), median + settings.min_margin_s
        )
        self._threshold[stale] = np.where(counts >= settings.warmup_samples, threshold, np.nan)
        self._median[stale] = np.where(counts > 0, median, np.nan)
        self._stale[stale] = False

    def observe(
        self, rows: np.ndarray, violating: np.ndarray, record_rows: np.ndarray, durations_s: np.ndarray
    ) -> None:
        """`LatencyBaseline.observe` for each of `rows` (distinct): the window's healthy probe
        durations are `durations_s` of the records at `record_rows` (record order; rows not in
        `rows` are ignored), `violating` says which rows' windows violated."""
        settings = self.settings
        self._windows.append((record_rows, durations_s))
        self._pending[rows[violating]] = 0
        calm = rows[~violating]
        self._pending[calm] += 1
        popping = calm[self._pending[calm] > settings.confirm_windows]
        if not len(popping):
            return
        self._pending[popping] = settings.confirm_windows
        self._refresh(popping)
        # A probe far above normal is not learned even from a quiet window (see `_learn_limit_s`).
        median, threshold = self._median[popping], self._threshold[popping]
        limit = np.maximum(
            np.maximum(settings.outlier_ratio * median, median + settings.min_margin_s),
            np.where(np.isnan(threshold), 0.0, threshold),
        )
        limit_of = np.full(self.capacity, np.nan)
        limit_of[popping] = np.where(self._count[popping] > 0, limit, np.inf)
        oldest_rows, oldest = self._windows[0]  # the window `confirm_windows` ago: each popped row's oldest
        with np.errstate(invalid="ignore"):
            learned = oldest <= limit_of[oldest_rows]  # NaN limit: a row not popping now
        self._learn(oldest_rows[learned], oldest[learned])

    def _learn(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Append each value to its row's ring, in order (LatencyBaseline._learn, one by one)."""
        if not len(rows):
            return
        size = self.settings.samples
        order = np.argsort(rows, kind="stable")
        rows, values = rows[order], values[order]
        distinct, first, taken = np.unique(rows, return_index=True, return_counts=True)
        at = np.arange(len(rows)) - np.repeat(first, taken)  # each value's place in its row's run
        total = np.repeat(taken, taken)
        kept = at >= total - size  # more than a ring's worth: only the last ones stay
        rows, values, at = rows[kept], values[kept], at[kept]
        self._ring[rows, (self._next[rows] + at) % size] = values
        self._next[distinct] = (self._next[distinct] + taken) % size
        self._count[distinct] = np.minimum(self._count[distinct] + taken, size)
        self._stale[distinct] = True

    # --- the per-series shape (snapshot.py persists it) ---------------------------------------

    def export(self, row: int) -> tuple[list[float], int, int, list[list[float]]]:
        """(ring[:count], next, count, pending windows oldest first), as LatencyBaseline held them."""
        count = int(self._count[row])
        pending = []
        for rows, values in list(self._windows)[len(self._windows) - int(self._pending[row]) :]:
            pending.append(values[rows == row].tolist())
        return self._ring[row, :count].tolist(), int(self._next[row]), count, pending

    def restore(
        self, row: int, ring: Sequence[float], next_at: int, pending: Sequence[Sequence[float]]
    ) -> None:
        """Set a row from LatencyBaseline's state (`ring`: its `count` learned samples)."""
        self.clear([row])
        count = len(ring)
        self._ring[row, :count] = ring
        self._next[row] = next_at
        self._count[row] = count
        kept = list(pending)[-len(self._windows) + 1 :] if len(self._windows) > 1 else []
        windows = list(self._windows)
        for k, window in enumerate(kept):
            # Its pending windows were the last ones: the k-th of m is (m - 1 - k) windows ago.
            at = len(windows) - len(kept) + k
            rows, values = windows[at]
            others = rows != row  # a reused row: drop what its former series left
            added = np.asarray(window, dtype=np.float64)
            windows[at] = (
                np.concatenate([rows[others], np.full(len(added), row, dtype=np.int64)]),
                np.concatenate([values[others], added]),
            )
        self._windows.clear()
        self._windows.extend(windows)
        self._pending[row] = len(kept)


def _quantiles(ordered: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """`_quantile` of each row's first `counts` sorted values (garbage where the count is 0)."""
    position = q * (counts - 1).astype(np.float64)
    low = np.maximum(position, 0).astype(np.int64)
    high = np.minimum(low + 1, np.maximum(counts - 1, 0))
    if not ordered.shape[1]:
        return np.full(len(counts), np.nan)
    index = np.arange(len(counts))
    value, following = ordered[index, low], ordered[index, high]
    with np.errstate(invalid="ignore"):
        return np.asarray(value + (following - value) * (position - low), dtype=np.float64)
