"""Event-time window slots with a watermark: probe records in, closed slots out, in order.

Between the receiver's TraceAssembler and the per-slot pipeline (DESIGN §2: receiver -> windows ->
features). A slot is `[k * window, (k + 1) * window)` on the probes' own clock (a record's
`start_ns`), the same edges as attribution/windows.py, so the live path cuts time exactly as the
offline one. The watermark is the largest event time seen minus the allowed lateness, advanced by
the sidecar's monotonic clock while nothing arrives (so the last slots close when probing stops);
only differences of the probes' own timestamps matter, so a prober whose clock is off from the
sidecar's is windowed correctly. A slot closes when the watermark passes its end; a record for a
closed slot is late (counted, dropped). Open slots are bounded: beyond `max_open_slots` the oldest
closes early.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from otelprobe.attribution.records import ProbeRecord
from otelprobe.attribution.windows import window_ns_of


@dataclass(slots=True)
class Slot:
    """The records of one window slot (every series), handed out once it closes."""

    start_ns: int
    end_ns: int
    records: list[ProbeRecord] = field(default_factory=list)


@dataclass(slots=True)
class WindowerStats:
    records: int = 0
    late_records: int = 0
    """Records whose slot had already closed (dropped)."""
    out_of_order_records: int = 0
    """Records older than the newest seen, still in time (kept)."""
    slots_closed: int = 0
    slots_forced: int = 0
    """Slots closed early because too many were open."""


class EventTimeWindower:
    """Assigns records to slots and closes slots behind the watermark.

    Args:
        window_s: the slot length.
        allowed_lateness_s: how far behind the newest event time a record may still arrive.
        max_open_slots: open slots kept at most (the oldest closes first beyond it).
        clock: monotonic seconds (advances the watermark while nothing arrives).
    """

    def __init__(
        self,
        window_s: float,
        allowed_lateness_s: float,
        *,
        max_open_slots: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if allowed_lateness_s < 0:
            raise ValueError("allowed lateness must not be negative")
        self.window_s = window_s
        self.window_ns = window_ns_of(window_s)
        self.lateness_ns = round(allowed_lateness_s * 1e9)
        self.max_open_slots = max(1, max_open_slots)
        self._clock = clock
        self._open: dict[int, Slot] = {}
        self._closed_until_ns: int | None = None  # every slot ending at or before this is closed
        self._max_event_ns: int | None = None
        self._max_event_seen_s = 0.0  # when the newest event time arrived, by `clock`
        self.stats = WindowerStats()

    @property
    def open_slots(self) -> int:
        return len(self._open)

    @property
    def closed_until_ns(self) -> int | None:
        return self._closed_until_ns

    def resume_after(self, closed_until_ns: int) -> None:
        """Treat every slot ending at or before `closed_until_ns` as closed (state restored)."""
        self._closed_until_ns = closed_until_ns

    def watermark_ns(self) -> int | None:
        """The event time up to which every slot is complete; None before the first record."""
        if self._max_event_ns is None:
            return None
        idle_ns = round(max(0.0, self._clock() - self._max_event_seen_s) * 1e9)
        return self._max_event_ns + idle_ns - self.lateness_ns

    def add(self, records: Iterable[ProbeRecord]) -> None:
        for record in records:
            self.stats.records += 1
            start_ns = (record.start_ns // self.window_ns) * self.window_ns
            if self._closed_until_ns is not None and start_ns < self._closed_until_ns:
                self.stats.late_records += 1
                continue
            if self._max_event_ns is None or record.start_ns > self._max_event_ns:
                self._max_event_ns = record.start_ns
                self._max_event_seen_s = self._clock()
            elif record.start_ns < self._max_event_ns:
                self.stats.out_of_order_records += 1
            slot = self._open.get(start_ns)
            if slot is None:
                slot = self._open[start_ns] = Slot(start_ns, start_ns + self.window_ns)
            slot.records.append(record)

    def close_ready(self) -> list[Slot]:
        """Slots the watermark has passed (and the oldest beyond the open limit), oldest first."""
        watermark = self.watermark_ns()
        ready = [s for s in self._open if watermark is not None and s + self.window_ns <= watermark]
        overflow = len(self._open) - len(ready) - self.max_open_slots
        if overflow > 0:
            rest = sorted(s for s in self._open if s not in ready)[:overflow]
            self.stats.slots_forced += len(rest)
            ready.extend(rest)
        return self._close(sorted(ready))

    def drain(self) -> list[Slot]:
        """Close every open slot (shutdown)."""
        return self._close(sorted(self._open))

    def _close(self, starts: list[int]) -> list[Slot]:
        slots = [self._open.pop(start) for start in starts]
        if slots:
            self._closed_until_ns = max(self._closed_until_ns or 0, slots[-1].end_ns)
            self.stats.slots_closed += len(slots)
        return slots
