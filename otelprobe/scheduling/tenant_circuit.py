"""A tenant's circuit: when its attempts time out in bulk, its concurrency is cut until they recover.

Pure and synchronous (times are passed in), used by fair_share.py: the scheduler reports every
finished attempt of the tenant (`observe`), and the gate asks `limit(base)` for the tenant's
concurrency now. CLOSED keeps `base`; OPEN and HALF_OPEN keep `shed_to` of it (at least 1). It
opens when at least `min_attempts` attempts finished within `window_s` and `timeout_ratio` of
them timed out; after `open_for_s` it goes HALF_OPEN, where the next `half_open_attempts` finished
attempts decide: CLOSED if their timeout share is below the ratio, OPEN again otherwise.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque

from otelprobe.config.tenants import CircuitConfig

log = logging.getLogger(__name__)


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class TenantCircuit:
    """The circuit of one tenant; `opened` and `closed` count transitions (never reset)."""

    __slots__ = (
        "_half_open_seen",
        "_half_open_timeouts",
        "_opened_at",
        "_recent",
        "_timeouts",
        "closed",
        "config",
        "name",
        "opened",
        "state",
    )

    def __init__(self, name: str, config: CircuitConfig) -> None:
        self.name = name
        self.config = config
        self.state = CircuitState.CLOSED
        self._recent: deque[tuple[float, bool]] = deque()
        self._timeouts = 0
        self._opened_at = 0.0
        self._half_open_seen = 0
        self._half_open_timeouts = 0
        self.opened = 0
        self.closed = 0

    def limit(self, base: int, now: float) -> int:
        """The tenant's concurrency now, for a configured (or global) limit of `base`."""
        if self.state is CircuitState.CLOSED:
            return base
        if self.state is CircuitState.OPEN and now - self._opened_at >= self.config.open_for_s:
            self.state = CircuitState.HALF_OPEN
            self._half_open_seen = self._half_open_timeouts = 0
            log.info("tenant %s: circuit half-open, trying its targets again", self.name)
        return self.shed_limit(base)

    def shed_limit(self, base: int) -> int:
        """The limit while open or half-open, without a state change (for readers on other threads)."""
        return base if self.state is CircuitState.CLOSED else max(1, math.floor(base * self.config.shed_to))

    def observe(self, timed_out: bool, now: float) -> None:
        """Count one finished attempt of the tenant."""
        config = self.config
        if not config.enabled:
            return
        if self.state is CircuitState.HALF_OPEN:
            self._half_open_seen += 1
            self._half_open_timeouts += timed_out
            if self._half_open_seen >= config.half_open_attempts:
                if self._half_open_timeouts / self._half_open_seen < config.timeout_ratio:
                    self._close(now)
                else:
                    self._open(now, self._half_open_timeouts, self._half_open_seen)
            return
        recent = self._recent
        recent.append((now, timed_out))
        self._timeouts += timed_out
        horizon = now - config.window_s
        while recent and recent[0][0] < horizon:
            self._timeouts -= recent.popleft()[1]
        if (
            self.state is CircuitState.CLOSED
            and len(recent) >= config.min_attempts
            and self._timeouts >= config.timeout_ratio * len(recent)
        ):
            self._open(now, self._timeouts, len(recent))

    def _open(self, now: float, timeouts: int, seen: int) -> None:
        self.state = CircuitState.OPEN
        self._opened_at = now
        self.opened += 1
        log.warning(
            "tenant %s: circuit open, %d of its last %d attempts timed out; its concurrency is cut to"
            " %g of its limit for %gs",
            self.name,
            timeouts,
            seen,
            self.config.shed_to,
            self.config.open_for_s,
        )

    def _close(self, now: float) -> None:
        self.state = CircuitState.CLOSED
        self.closed += 1
        self._recent.clear()
        self._timeouts = 0
        log.info("tenant %s: circuit closed, its targets answer in time again", self.name)
