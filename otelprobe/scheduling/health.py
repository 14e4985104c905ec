"""Per-target health: UP/DOWN from consecutive failed runs, and the backoff before each retry.

The scheduler updates a `Health` after every run and asks `backoff_s` before every retry; both
are plain values so their rules are tested without timers.
"""

from __future__ import annotations

import enum
import logging
import random

from otelprobe.settings.common import RetryPolicy

log = logging.getLogger(__name__)


class TargetState(enum.Enum):
    UP = "up"
    DOWN = "down"


class Health:
    """Consecutive failed runs of one target and the state they imply."""

    __slots__ = ("consecutive_failures", "name", "state", "threshold")

    def __init__(self, name: str, threshold: int) -> None:
        self.name = name
        self.threshold = threshold
        self.consecutive_failures = 0
        self.state = TargetState.UP

    def observe(self, success: bool) -> TargetState:
        """Count one finished run; log the state change, once, when there is one."""
        if success:
            self.consecutive_failures = 0
            if self.state is TargetState.DOWN:
                self.state = TargetState.UP
                log.info("target %s is UP again", self.name)
            return self.state
        self.consecutive_failures += 1
        if self.state is TargetState.UP and self.consecutive_failures >= self.threshold:
            self.state = TargetState.DOWN
            log.warning(
                "target %s is DOWN after %d consecutive failed runs", self.name, self.consecutive_failures
            )
        return self.state


def backoff_s(policy: RetryPolicy, retry: int, rng: random.Random) -> float:
    """The pause before retry number `retry` (1 = the first retry).

    backoff × multiplier^(retry-1), capped at max_backoff, then spread by ± jitter × itself so
    that targets failing together do not retry together.
    """
    base = min(policy.backoff_s * policy.multiplier ** (retry - 1), policy.max_backoff_s)
    spread = base * policy.jitter
    return max(0.0, base + rng.uniform(-spread, spread))
