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
