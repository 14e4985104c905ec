"""What a dead or refusing Collector puts in the log: a few lines per outage, not one per batch.

A sender that fails every batch (a Collector down for two minutes at 100 probes/s failed 82
batches) logs the first failure with its reason, then at most one summary per interval with the
batches and spans lost since the line before, and one line when an export gets through again.
The counts of lost spans themselves are kept by the batchers (`SpanBatcher.failed`); this is
only what a person reading the log sees.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

_logger = logging.getLogger(__name__)

SUMMARY_INTERVAL_S: Final = 60.0


class ExportFailureLog:
    """Log lines about one destination's failing exports; safe to call from any thread.

    Args:
        destination: e.g. "OTLP/HTTP http://collector:4318/v1/traces".
        signal: "traces" or "metrics", as in the lines.
        unit: what the `items` of a failed batch are ("spans"); metric requests pass none, as
            cumulative points are sent again in full by the next export.
        summary_interval_s: the shortest time between two lines of one outage.
        clock: monotonic seconds (tests may pass their own).
    """

    def __init__(
        self,
        destination: str,
        signal: str,
        unit: str = "spans",
        *,
        summary_interval_s: float = SUMMARY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what = f"export of {signal} to {destination}"
        self._unit = unit
        self._interval_s = summary_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._outage_start: float | None = None  # None while exports get through
        self._outage_batches = 0
        self._outage_items = 0
        self._last_line_at = 0.0
        self._unreported_batches = 0
        self._unreported_items = 0
        self._last_problem = ""

    def failed(self, problem: str, items: int = 0) -> None:
        """One batch was given up on (retries exhausted or rejected); `items` were in it."""
        now = self._clock()
        with self._lock:
            self._outage_batches += 1
            self._outage_items += items
            self._last_problem = problem
            if self._outage_start is None:
                self._outage_start = self._last_line_at = now
                _logger.warning(
                    "%s failed: %s%s; further failures are summarised every %gs",
                    self._what,
                    problem,
                    self._lost(items),
                    self._interval_s,
                )
                return
            self._unreported_batches += 1
            self._unreported_items += items
            if now - self._last_line_at >= self._interval_s:
                self._summarise(now, "still failing")

    def succeeded(self) -> None:
        """One batch got through: ends an outage, with one line saying so."""
        now = self._clock()
        with self._lock:
            if self._outage_start is None:
                return
            _logger.info(
                "%s recovered after %d failed batch(es) over %.1fs%s",
                self._what,
                self._outage_batches,
                now - self._outage_start,
                self._lost(self._outage_items),
            )
            self._outage_start = None
            self._outage_batches = self._outage_items = 0
            self._unreported_batches = self._unreported_items = 0

    def close(self) -> None:
        """At shutdown: report the failures no line has told of yet."""
        with self._lock:
            if self._unreported_batches:
                self._summarise(self._clock(), "still failing at shutdown")

    def _summarise(self, now: float, state: str) -> None:
        _logger.warning(
            "%s %s: %d more failed batch(es)%s in the last %.1fs; last error: %s",
            self._what,
            state,
            self._unreported_batches,
            self._lost(self._unreported_items),
            now - self._last_line_at,
            self._last_problem,
        )
        self._last_line_at = now
        self._unreported_batches = self._unreported_items = 0

    def _lost(self, items: int) -> str:
        return f" ({items} {self._unit} lost)" if items else ""
