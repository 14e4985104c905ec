"""Decoded OTLP trace requests -> probe records: traces joined, late phases joined, retries dropped.

The first step after the receiver (DESIGN §2): one long-lived TraceAssembler joins the spans of
a probe that arrive in different requests (attribution/records.py, the one reader of probe
traces) and records a trace when its root arrives. A span of a trace already recorded is either
- a duplicate: same trace id and span id as a span seen before (a Collector retrying an export
  whose answer it lost). Counted (`duplicate_spans`; `duplicate_traces` when the root is among
  them) and dropped; or
- a late phase: a new span id. A Collector with several sending consumers, or a retry, can deliver
  a phase after the request that brought its root. While the window slot of the record is open,
  the record is rebuilt (`JoinableRecord.join`: what build_record makes of the whole trace) and
  returned again (`late_phases`); the windower puts it in place of the earlier one. Once the
  slot has closed the span is counted (`late_phases_after_close`, and in `reader.late_spans`)
  and dropped.

Memory: a recorded trace's spans are not kept. Until the windower closes its slot, a
`JoinableRecord` (attribution/records.py: the record, its span ids and up to 7 start times; ~1 KB
with its entries here, where the decoded spans of a 7-span probe take ~6 KB) stands for it, for
at most `max_pending_traces` traces (beyond that the oldest recorded go first: `joins_evicted`);
then only its span ids (16 bytes a span) among the last `max_seen_traces` recorded traces. A
span of a trace forgotten even from that is taken as new.
The windower is the one given to `attach` (the windower this Ingest's records go to); without
one, every slot counts as open.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelprobe.attribution.otlp_decode import MalformedSpan, SpanView, views_from_request
from otelprobe.attribution.records import (
    RECORD_KEYS,
    JoinableRecord,
    ProbeRecord,
    ReaderStats,
    TraceAssembler,
)

if TYPE_CHECKING:
    from otelprobe.sidecar.windower import EventTimeWindower

MAX_PHASES: Final = 1024
"""Phase spans a recorded trace may reach by late joins; more are bad spans (no probe has them)."""
_SPAN_ID_HEX: Final = 16


@dataclass(slots=True)
class IngestStats:
    requests: int = 0
    duplicate_traces: int = 0
    """Recorded traces whose root span came again (a Collector's retry)."""
    duplicate_spans: int = 0
    """Spans seen before (same trace id and span id), dropped."""
    malformed_requests: int = 0
    late_phases: int = 0
    """Phase spans that arrived after their root, joined: the record was rebuilt and returned again."""
    late_phases_after_close: int = 0
    """Phase spans that arrived after their record's window slot closed (or after the trace was let
    go beyond the count bound, see `joins_evicted`), dropped; `reader.late_spans` counts them too."""
    joins_evicted: int = 0
    """Recorded traces let go before their slot closed (beyond max_pending_traces)."""


class Ingest:
    """Requests in, records out; spans of a trace already recorded are duplicates or late phases.

    Args:
        max_seen_traces: recorded traces remembered for duplicate detection (oldest forgotten first).
        max_pending_traces: traces waiting for their root span, at most; and recorded traces that
            late phases can still join, at most.
        max_pending_age_s: a trace whose root has not arrived after this long is an orphan.
    """

    def __init__(
        self,
        *,
        max_seen_traces: int = 200_000,
        max_pending_traces: int = 50_000,
        max_pending_age_s: float = 60.0,
    ) -> None:
        self.reader = ReaderStats()
        self.stats = IngestStats()
        self._assembler = TraceAssembler(
            self.reader, max_pending_traces=max_pending_traces, max_age_s=max_pending_age_s
        )
        # Recorded traces, oldest first: joinable while their slot is open, then their span ids.
        self._seen: OrderedDict[str, JoinableRecord | str] = OrderedDict()
        self._max_seen = max(1, max_seen_traces)
        self._joinable: deque[JoinableRecord] = deque()  # in the order they were recorded
        self._max_joinable = max(1, max_pending_traces)
        self._windower: EventTimeWindower | None = None

    @property
    def pending_traces(self) -> int:
        return self._assembler.pending_traces

    @property
    def joinable_traces(self) -> int:
        """Recorded traces late phases can join (an upper bound: some may have been let go early)."""
        return len(self._joinable)

    def attach(self, windower: EventTimeWindower) -> None:
        """Join late phases only while `windower` holds their record's slot open, and let a
        recorded trace go when it closes it (the windower its records are given to)."""
        self._windower = windower

    def add(self, request: ExportTraceServiceRequest) -> list[ProbeRecord]:
        """The records the request completed, then those it revised (same trace id as one returned
        before, rebuilt with phases that came after the root); duplicates and bad spans counted,
        not raised."""
        self.stats.requests += 1
        records: list[ProbeRecord] = []
        try:
            views = list(views_from_request(request, RECORD_KEYS))
        except MalformedSpan:
            self.stats.malformed_requests += 1
            return records
        seen = self._seen
        fresh = []
        again: list[SpanView] = []
        for view in views:
            if view.trace_id in seen:
                again.append(view)
            else:
                fresh.append(view)
        joinable: list[JoinableRecord] = []
        records.extend(self._assembler.add(fresh, joinable=joinable))
        for trace in joinable:
            seen[trace.record.trace_id] = trace
        self._joinable.extend(joinable)
        if again:
            records.extend(self._recorded_again(again))
        self._let_go()
        while len(seen) > self._max_seen:
            seen.popitem(last=False)
        return records

    # --- spans of recorded traces (rare) ------------------------------------------------------

    def _recorded_again(self, views: list[SpanView]) -> list[ProbeRecord]:
        """Sort the spans of recorded traces into duplicates and late phases; the revised records."""
        by_trace: dict[str, list[SpanView]] = {}
        for view in views:
            by_trace.setdefault(view.trace_id, []).append(view)
        revised = []
        for trace_id, spans in by_trace.items():
            entry = self._seen[trace_id]
            known = entry if isinstance(entry, str) else entry.span_ids
            phases: list[SpanView] = []
            duplicate_root = False
            for span in spans:
                if _has_span(known, span.span_id):
                    self.stats.duplicate_spans += 1
                    duplicate_root = duplicate_root or not span.parent_span_id
                elif span.parent_span_id:
                    phases.append(span)
                    known += span.span_id  # the same span twice in one request: a duplicate
                else:
                    self.reader.late_spans += 1  # a second root: the first is kept
            self.stats.duplicate_traces += duplicate_root
            if not phases:
                continue
            if isinstance(entry, str) or entry.record.start_ns < self._late_before_ns():
                self.stats.late_phases_after_close += len(phases)
                self.reader.late_spans += len(phases)
                if not isinstance(entry, str):
                    self._seen[trace_id] = entry.span_ids
            elif len(entry.span_ids) // _SPAN_ID_HEX + len(phases) > MAX_PHASES:
                self.reader.bad_spans += len(phases)
                self.reader.problem(f"trace {trace_id}: more than {MAX_PHASES} phase spans")
            else:
                self.reader.spans += len(phases)
                self.stats.late_phases += len(phases)
                revised.append(entry.join(phases, self.reader))
        return revised

    # --- memory ---------------------------------------------------------------------------------

    def _late_before_ns(self) -> int:
        """Records starting before this are in closed slots (none without a windower)."""
        late_before_ns = None if self._windower is None else self._windower.late_before_ns()
        return -(2**63) if late_before_ns is None else late_before_ns

    def _let_go(self) -> None:
        """Keep only the span ids of recorded traces whose slot closed, or beyond the count bound."""
        joinable, seen = self._joinable, self._seen
        late_before_ns = self._late_before_ns()
        while joinable:
            trace = joinable[0]
            record = trace.record
            closed = record.start_ns < late_before_ns
            if not closed and len(joinable) <= self._max_joinable:
                return
            joinable.popleft()
            if seen.get(record.trace_id) is trace:  # not forgotten, nor let go already
                seen[record.trace_id] = trace.span_ids
                if not closed:
                    self.stats.joins_evicted += 1


def _has_span(span_ids: str, span_id: str) -> bool:
    """Whether `span_ids` (16 hex digits each, end to end) holds `span_id`."""
    at = span_ids.find(span_id)
    while at > 0 and at % _SPAN_ID_HEX:  # a match across two ids: look further on
        at = span_ids.find(span_id, at + 1)
    return at >= 0
