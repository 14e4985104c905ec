"""Scheduler statistics: counters and a bounded window of probe-start lateness with percentiles.

The scheduler feeds these on every start, retry and failure; benchmarks, tests and the runtime's
logs read them. Memory is bounded: lateness keeps only the most recent samples in a ring.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Final

DEFAULT_WINDOW: Final = 65_536


class LatencyStats:
    """A ring of the most recent lateness samples (seconds) with a percentile query."""

    __slots__ = ("_next", "_ring", "count", "max_s")

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._ring = array("d", bytes(8 * window))
        self._next = 0
        self.count = 0
        """Samples seen since creation (or the last reset), including those the ring dropped."""
        self.max_s = 0.0

    def add(self, seconds: float) -> None:
        self._ring[self._next] = seconds
        self._next = (self._next + 1) % len(self._ring)
        self.count += 1
        self.max_s = max(self.max_s, seconds)

    def samples(self) -> list[float]:
        """The samples still in the window, oldest first."""
        if self.count < len(self._ring):
            return list(self._ring[: self.count])
        return list(self._ring[self._next :]) + list(self._ring[: self._next])

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100, nearest rank) of the window; 0.0 when it is empty."""
        if not 0.0 <= q <= 100.0:
            raise ValueError("q must be within 0..100")
        values = sorted(self.samples())
        if not values:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * len(values)))
        return values[rank - 1]

    def reset(self) -> None:
        self._next = 0
        self.count = 0
        self.max_s = 0.0


@dataclass(slots=True)
class SchedulerStats:
    """What the scheduler did since it started; all counters only grow."""

    lateness: LatencyStats = field(default_factory=LatencyStats)
    runs: int = 0
    """Scheduled runs started (a run is the first attempt plus its retries)."""
    attempts: int = 0
    retries: int = 0
    failed_runs: int = 0
    probe_exceptions: int = 0
    """Probes that raised something other than a classified ProbeError (bugs)."""
    probes_hung: int = 0
    """Attempts cut off by the scheduler's outer safety deadline."""
    sink_errors: int = 0
    skipped_runs: int = 0
    """Runs not started because the previous run of the target was still going, the loop lagged, or
    (with tenants) the run could not start at the fair gate before its next due time."""
    build_errors: int = 0
    """Targets whose probe could not be created."""
