"""Event-time window slots with a watermark: probe records in, closed slots out, in order.

Between the receiver's TraceAssembler and the per-slot pipeline (DESIGN §2: receiver -> windows ->
features). A slot is `[k * window, (k + 1) * window)` on the probes' own clock (a record's
`start_ns`), the same edges as attribution/windows.py, so the live path cuts time exactly as the
offline one. A slot closes when the watermark passes its end; a record for a closed slot is late
(counted, dropped). Open slots are bounded: beyond `max_open_slots` the oldest closes early.
A record whose trace the open slot already holds replaces the earlier one (`revised_records`):
sidecar/ingest.py rebuilds a record when phase spans arrive after its root.

The watermark follows the probes' own clocks, never the sidecar's wall clock, so a prober whose
clock is off from the sidecar's is windowed correctly. No single series can drive it: the newest
start time of each series (target, vantage) is kept, and the *reference* is the newest start time
that at least two series have reached (the second-largest of the series' newest; while there is
one series, its own). The watermark is the reference minus the allowed lateness, advanced by the
sidecar's monotonic clock while the reference stands still (so the last slots close when probing
stops). One span with a far-future time (a broken clock, a corrupted timestamp) therefore moves
nothing: before, it ran the watermark ahead and every later record of every series was late.

Clock skew tolerated between probers, relative to the reference:
- behind it by up to the allowed lateness (further behind, a record's slot has closed: late);
- ahead of it by up to `max_open_slots` windows less the allowed lateness (116 s with 64 slots of
  2 s and 10 s lateness): those slots stay open until the other series reach them. A record
  further ahead is dropped and counted as `future_records`, so a rogue series cannot open slots
  without bound or force good slots closed. A series' newest time that came from such a dropped
  record is not trusted: the series' next older record replaces it, so bad spans in different
  series do not add up over time (two must be current at once to move the reference). When the
  reference falls (a lone series is joined by others with older clocks), records already in slots
  beyond the limit are dropped and counted the same way.
A single series is windowed as before: it is its own reference, and a jump of its clock is time
passing. Clocks of two or more series that jump together (a fleet's clocks stepped, the sidecar
suspended) move the reference after one record of the first series is dropped as future.
Memory is bounded: beyond `max_series` series the least recently seen is forgotten (counted).
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import itemgetter

from otelprobe.attribution.records import ProbeRecord
from otelprobe.attribution.windows import window_ns_of

_Series = tuple[str, str]
"""(target, vantage)"""


@dataclass(slots=True)
class Slot:
    """The records of one window slot (every series), handed out once it closes."""

    start_ns: int
    end_ns: int
    records: list[ProbeRecord] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    """trace id -> index in `records` (the windower's, while the slot is open)."""


@dataclass(slots=True)
class WindowerStats:
    records: int = 0
    late_records: int = 0
    """Records whose slot had already closed (dropped)."""
    future_records: int = 0
    """Records too far ahead of the other series' clocks (dropped)."""
    out_of_order_records: int = 0
    """Records older than the newest of their series, still in time (kept)."""
    revised_records: int = 0
    """Records that replaced the earlier record of their trace in its open slot (phases joined late)."""
    slots_closed: int = 0
    slots_forced: int = 0
    """Slots closed early because too many were open."""
    evicted_series: int = 0
    """Series whose newest time was forgotten, least recently seen first, beyond `max_series`."""


def _same_probe(old: ProbeRecord, new: ProbeRecord) -> bool:
    """Whether `new` is `old` rebuilt: same trace (the caller's check), root span, start and series."""
    return (
        old.span_id == new.span_id
        and old.start_ns == new.start_ns
        and old.target == new.target
        and old.vantage == new.vantage
    )


class EventTimeWindower:
    """Assigns records to slots and closes slots behind the watermark.

    Args:
        window_s: the slot length.
        allowed_lateness_s: how far behind the reference (the newest event time two series have
            reached) a record may still arrive.
        max_open_slots: open slots kept at most (the oldest closes first beyond it); records more
            than this many slots beyond the watermark's are dropped as future.
        max_series: series whose newest event time is remembered (least recently seen evicted).
        clock: monotonic seconds (advances the watermark while the reference stands still).
    """

    def __init__(
        self,
        window_s: float,
        allowed_lateness_s: float,
        *,
        max_open_slots: int = 64,
        max_series: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if allowed_lateness_s < 0:
            raise ValueError("allowed lateness must not be negative")
        self.window_s = window_s
        self.window_ns = window_ns_of(window_s)
        self.lateness_ns = round(allowed_lateness_s * 1e9)
        self.max_open_slots = max(1, max_open_slots)
        self.max_series = max(1, max_series)
        self._clock = clock
        self._open: dict[int, Slot] = {}
        self._closed_until_ns: int | None = None  # every slot ending at or before this is closed
        self._newest: OrderedDict[_Series, int] = OrderedDict()  # least recently seen first
        self._untrusted: set[_Series] = set()  # series whose newest was a record dropped as future
        # The two largest of `_newest`, kept as records arrive (a full scan only when one of them
        # is lowered or forgotten, which good input never does).
        self._first: _Series | None = None
        self._first_ns = 0
        self._second: _Series | None = None
        self._second_ns = 0
        self._reference_ns: int | None = None
        self._reference_set_s = 0.0  # when the reference last changed, by `clock`
        self.stats = WindowerStats()

    @property
    def open_slots(self) -> int:
        return len(self._open)

    @property
    def closed_until_ns(self) -> int | None:
        return self._closed_until_ns

    @property
    def series(self) -> int:
        """Series whose newest event time is remembered."""
        return len(self._newest)

    def late_before_ns(self) -> int | None:
        """A record starting before this is late (its slot has closed); None while none has closed."""
        if self._closed_until_ns is None:
            return None
        return -(-self._closed_until_ns // self.window_ns) * self.window_ns  # that slot edge or the next

    def resume_after(self, closed_until_ns: int) -> None:
        """Treat every slot ending at or before `closed_until_ns` as closed (state restored)."""
        self._closed_until_ns = closed_until_ns

    def watermark_ns(self) -> int | None:
        """The event time up to which every slot is complete; None before the first record."""
        if self._reference_ns is None:
            return None
        return self._reference_ns + self._idle_ns(self._clock()) - self.lateness_ns

    def add(self, records: Iterable[ProbeRecord]) -> None:
        """Put records in their slots; a probe already in its open slot (rebuilt with phases that
        came after its root) replaces the record there (an Ingest `attach`ed to this windower
        joins late phases only while their slot is open)."""
        now_s = self._clock()
        stats, newest, untrusted, open_slots = self.stats, self._newest, self._untrusted, self._open
        window_ns, closed_until_ns = self.window_ns, self._closed_until_ns
        reference_ns = self._reference_ns
        # The limit is measured from `basis_ns` (the reference, plus the idle time in this call);
        # it follows a falling basis at once and a rising one only when a record needs it.
        basis_ns = -1 if reference_ns is None else reference_ns + self._idle_ns(now_s)
        limit_basis_ns, last_start_ns = basis_ns, self._last_start_for(basis_ns)
        reference_moved = False
        count = 0
        for record in records:
            count += 1
            event_ns = record.start_ns
            start_ns = event_ns // window_ns * window_ns
            if closed_until_ns is not None and start_ns < closed_until_ns:
                stats.late_records += 1
                continue
            slot = open_slots.get(start_ns)
            if slot is not None:
                at = slot.positions.get(record.trace_id)
                if at is not None and _same_probe(slot.records[at], record):
                    slot.records[at] = record  # rebuilt with phases that came after its root
                    stats.revised_records += 1
                    continue
            series = (record.target, record.vantage)
            previous_ns = newest.get(series)
            if previous_ns is None:
                newest[series] = event_ns
                if len(newest) > self.max_series:
                    self._evict_least_recent()
                self._raised(series, event_ns)
            else:
                newest.move_to_end(series)
                if event_ns > previous_ns:
                    newest[series] = event_ns
                    self._raised(series, event_ns)
                elif event_ns < previous_ns:
                    if untrusted and series in untrusted:
                        newest[series] = event_ns  # its newest was a dropped future record
                        self._lowered(series)
                    else:
                        stats.out_of_order_records += 1
            current_ns = self._first_ns if self._second is None else self._second_ns
            if current_ns != reference_ns:
                reference_ns = basis_ns = current_ns
                reference_moved = True
                if current_ns < limit_basis_ns:
                    limit_basis_ns, last_start_ns = current_ns, self._last_start_for(current_ns)
                    if open_slots and max(open_slots) > last_start_ns:
                        self._drop_beyond(last_start_ns)
                        slot = open_slots.get(start_ns)
            if start_ns > last_start_ns:
                if basis_ns != limit_basis_ns:
                    limit_basis_ns, last_start_ns = basis_ns, self._last_start_for(basis_ns)
                if start_ns > last_start_ns:
                    stats.future_records += 1
                    untrusted.add(series)
                    continue
            if untrusted and series in untrusted and newest[series] == event_ns:
                untrusted.discard(series)
            if slot is None:
                slot = open_slots[start_ns] = Slot(start_ns, start_ns + window_ns)
            slot.positions[record.trace_id] = len(slot.records)
            slot.records.append(record)
        stats.records += count
        if reference_moved:
            self._reference_ns, self._reference_set_s = reference_ns, now_s

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

    # --- the reference ------------------------------------------------------------------------

    def _idle_ns(self, now_s: float) -> int:
        return round(max(0.0, now_s - self._reference_set_s) * 1e9)

    def _last_start_for(self, basis_ns: int) -> int:
        """The start of the last slot a record may open, `basis_ns` being the reference plus idle time."""
        window_ns = self.window_ns
        watermark_slot_ns = (basis_ns - self.lateness_ns) // window_ns * window_ns
        # Never below the basis' own slot, however large the lateness is against the open slots.
        return max(
            watermark_slot_ns + (self.max_open_slots - 1) * window_ns, basis_ns // window_ns * window_ns
        )

    def _drop_beyond(self, last_start_ns: int) -> None:
        """Slots opened while the reference stood higher (one series alone, now joined by others)."""
        for start_ns in [start for start in self._open if start > last_start_ns]:
            for record in self._open.pop(start_ns).records:
                self.stats.future_records += 1
                series = (record.target, record.vantage)
                if self._newest.get(series) == record.start_ns:
                    self._untrusted.add(series)

    def _raised(self, series: _Series, event_ns: int) -> None:
        """`series`' newest rose to `event_ns`: keep the two largest (O(1))."""
        if series == self._first:
            self._first_ns = event_ns
        elif self._first is None or event_ns > self._first_ns:
            self._second, self._second_ns = self._first, self._first_ns
            self._first, self._first_ns = series, event_ns
        elif series == self._second:
            self._second_ns = event_ns
        elif self._second is None or event_ns > self._second_ns:
            self._second, self._second_ns = series, event_ns

    def _lowered(self, series: _Series) -> None:
        if series == self._first or series == self._second:
            self._rank_all()

    def _evict_least_recent(self) -> None:
        series, _ = self._newest.popitem(last=False)
        self._untrusted.discard(series)
        self.stats.evicted_series += 1
        if series == self._first or series == self._second:
            self._rank_all()

    def _rank_all(self) -> None:
        """The two largest again, from every series (only when one of them fell)."""
        top = heapq.nlargest(2, self._newest.items(), key=itemgetter(1))
        self._first, self._first_ns = top[0] if top else (None, 0)
        self._second, self._second_ns = top[1] if len(top) > 1 else (None, 0)

    def _close(self, starts: list[int]) -> list[Slot]:
        slots = [self._open.pop(start) for start in starts]
        if slots:
            self._closed_until_ns = max(self._closed_until_ns or 0, slots[-1].end_ns)
            self.stats.slots_closed += len(slots)
        return slots
