"""Decoded OTLP trace requests -> probe records, with Collector retries recognised and dropped.

The first step after the receiver (DESIGN §2): one long-lived TraceAssembler joins the spans of
a probe that arrive in different requests (attribution/records.py, the one reader of probe
traces). A Collector that retries an export sends the same traces again; a bounded memory of the
trace ids already turned into records tells such a duplicate from new data, so it is counted
(`duplicate_traces`) and dropped before it reaches the windows.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelprobe.attribution.otlp_decode import MalformedSpan, views_from_request
from otelprobe.attribution.records import RECORD_KEYS, ProbeRecord, ReaderStats, TraceAssembler


@dataclass(slots=True)
class IngestStats:
    requests: int = 0
    duplicate_traces: int = 0
    duplicate_spans: int = 0
    malformed_requests: int = 0


class Ingest:
    """Requests in, records out; spans of a trace already recorded are duplicates.

    Args:
        max_seen_traces: trace ids remembered for duplicate detection (oldest forgotten first).
        max_pending_traces: traces waiting for their root span, at most.
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
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._max_seen = max(1, max_seen_traces)

    @property
    def pending_traces(self) -> int:
        return self._assembler.pending_traces

    def add(self, request: ExportTraceServiceRequest) -> list[ProbeRecord]:
        """The records the request completes (duplicates and bad spans counted, not raised)."""
        self.stats.requests += 1
        try:
            views = list(views_from_request(request, RECORD_KEYS))
        except MalformedSpan:
            self.stats.malformed_requests += 1
            return []
        fresh = []
        duplicates: set[str] = set()
        for view in views:
            if view.trace_id in self._seen:
                self.stats.duplicate_spans += 1
                if not view.parent_span_id:
                    duplicates.add(view.trace_id)
            else:
                fresh.append(view)
        self.stats.duplicate_traces += len(duplicates)
        records = self._assembler.add(fresh)
        for record in records:
            self._seen[record.trace_id] = None
        while len(self._seen) > self._max_seen:
            self._seen.popitem(last=False)
        return records
