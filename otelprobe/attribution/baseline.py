"""A series' own healthy baseline, learned from its recent healthy windows.

Features compare a window with what *this* (target, vantage) series usually looks like, never with
absolute values, so a model trained on one lab's round-trip times works on another's. The baseline
of each phase is the median of the per-window medians of the last `HISTORY_WINDOWS` healthy
windows, with a robust spread (1.4826 × MAD) and the usual within-window jitter (p90 − p50).

A window updates the baseline only when it looks healthy against it (no failed probe, every phase
within a tolerance), so an incident does not teach the baseline its own symptoms; a level shift
that persists for `RELEARN_AFTER` windows (a route change, a new server) is accepted by learning
afresh. State per series is bounded: a few short deques per phase.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from otelprobe.attribution.aggregates import PHASES

HISTORY_WINDOWS: Final = 30
WARM_WINDOWS: Final = 3
"""Healthy windows needed before a series' deltas are defined (until then: warming up)."""
RELEARN_AFTER: Final = 30
"""Consecutive windows rejected as unhealthy after which the baseline is learned afresh."""
MIN_SPREAD_S: Final = 0.0005
"""Floor of a phase's spread: loopback-fast phases must not turn 0.1 ms of noise into a z-score."""


@dataclass(frozen=True, slots=True)
class PhaseBaseline:
    p50_s: float
    spread_s: float
    jitter_s: float


@dataclass(frozen=True, slots=True)
class BaselineSnapshot:
    """What a series usually looks like, as of the start of one window."""

    phases: Mapping[str, PhaseBaseline]
    body_bytes: float
    addresses: frozenset[str]
    healthy_windows: int
    row: tuple[float, ...] = field(init=False, repr=False, compare=False)
    """p50, spread and jitter of every phase of `PHASES`, in that order (NaN where unknown): one
    row of the feature engine's baseline matrix, built once per snapshot."""

    def __post_init__(self) -> None:
        nan = math.nan
        row: list[float] = []
        for phase in PHASES:
            base = self.phases.get(phase)
            row.extend((nan, nan, nan) if base is None else (base.p50_s, base.spread_s, base.jitter_s))
        object.__setattr__(self, "row", tuple(row))

    @property
    def warm(self) -> bool:
        return self.healthy_windows >= WARM_WINDOWS

    def p50(self, phase: str) -> float:
        base = self.phases.get(phase)
        return base.p50_s if base is not None else math.nan

    def spread(self, phase: str) -> float:
        base = self.phases.get(phase)
        return base.spread_s if base is not None else math.nan

    def jitter(self, phase: str) -> float:
        base = self.phases.get(phase)
        return base.jitter_s if base is not None else math.nan


@dataclass(slots=True)
class SeriesBaseline:
    """The learning state of one series; `snapshot()` before a window, `observe()` after it."""

    p50s: dict[str, deque[float]] = field(default_factory=dict)
    jitters: dict[str, deque[float]] = field(default_factory=dict)
    bodies: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_WINDOWS))
    addresses: deque[frozenset[str]] = field(default_factory=lambda: deque(maxlen=HISTORY_WINDOWS))
    healthy_windows: int = 0
    rejected_in_a_row: int = 0
    _cached: BaselineSnapshot | None = None

    def snapshot(self) -> BaselineSnapshot:
        if self._cached is None:
            phases = {}
            for phase, values in self.p50s.items():
                if not values:
                    continue
                # Pure Python on ≤ 30 values: ~20x cheaper than numpy's per-call overhead here.
                median = _median_of_sorted(sorted(values))
                mad = _median_of_sorted(sorted([abs(v - median) for v in values])) * 1.4826
                jitter = _median_of_sorted(sorted(self.jitters[phase]))
                phases[phase] = PhaseBaseline(median, max(mad, MIN_SPREAD_S, 0.02 * median), jitter)
            body = _median(self.bodies) if self.bodies else math.nan
            addresses = frozenset().union(*self.addresses) if self.addresses else frozenset()
            self._cached = BaselineSnapshot(phases, body, addresses, self.healthy_windows)
        return self._cached

    def looks_healthy(self, failed: int, p50s: Mapping[str, float]) -> bool:
        """Whether a window may teach the baseline: no failure, every phase near its baseline."""
        if failed:
            return False
        base = self.snapshot()
        if not base.warm:
            return True
        for phase, value in p50s.items():
            usual = base.phases.get(phase)
            if usual is None or not math.isfinite(value):
                continue
            tolerance = max(6.0 * usual.spread_s, 0.5 * usual.p50_s, 0.003)
            if value > usual.p50_s + tolerance:
                return False
        return True

    def observe(
        self,
        failed: int,
        p50s: Mapping[str, float],
        jitters: Mapping[str, float],
        body_bytes: float,
        addresses: frozenset[str],
    ) -> None:
        """Learn from one closed window of this series (if it looks healthy)."""
        if not self.looks_healthy(failed, p50s):
            self.rejected_in_a_row += 1
            if self.rejected_in_a_row < RELEARN_AFTER:
                return
            self._forget()
            if failed:
                return
        self.rejected_in_a_row = 0
        for phase, value in p50s.items():
            if not math.isfinite(value):
                continue
            # get, not setdefault: setdefault would build a deque on every call.
            history = self.p50s.get(phase)
            if history is None:
                history = self.p50s[phase] = deque(maxlen=HISTORY_WINDOWS)
            jitter_history = self.jitters.get(phase)
            if jitter_history is None:
                jitter_history = self.jitters[phase] = deque(maxlen=HISTORY_WINDOWS)
            history.append(value)
            jitter = jitters.get(phase, 0.0)
            jitter_history.append(jitter if math.isfinite(jitter) else 0.0)
        if math.isfinite(body_bytes):
            self.bodies.append(body_bytes)
        if addresses:
            self.addresses.append(addresses)
        self.healthy_windows += 1
        self._cached = None

    def _forget(self) -> None:
        self.p50s.clear()
        self.jitters.clear()
        self.bodies.clear()
        self.addresses.clear()
        self.healthy_windows = 0
        self.rejected_in_a_row = 0
        self._cached = None


def _median(values: Iterable[float]) -> float:
    return _median_of_sorted(sorted(values))


def _median_of_sorted(ordered: list[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
