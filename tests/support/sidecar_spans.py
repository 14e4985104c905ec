"""Probe spans as a prober exports them, for the sidecar's windowing and ingest tests: OTLP
requests of `probe http` traces, the ProbeRecord one of them ingests to, and a settable clock."""

from __future__ import annotations

import dataclasses

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otelprobe.attribution.records import ProbeRecord
from otelprobe.sidecar.ingest import Ingest

S = 1_000_000_000
BASE = 1_800_000_000 * S  # 2027-01-15, a whole number of windows


def _attr(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def probe_spans(n: int, start_ns: int, target: str = "api", *, ok: bool = True) -> list[Span]:
    """A probe trace: root `probe http` and one `http.ttfb` child, 20 ms long."""
    trace_id, root_id = n.to_bytes(16, "big"), n.to_bytes(8, "big")
    attrs = {"probe.kind": "http", "probe.target": target, "otelprobe.vantage": "v1", "probe.success": ok}
    root = Span(
        trace_id=trace_id,
        span_id=root_id,
        name="probe http",
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + 20_000_000,
        attributes=[_attr(k, v) for k, v in attrs.items()],
    )
    child = Span(
        trace_id=trace_id,
        span_id=(n + 1_000_000).to_bytes(8, "big"),
        parent_span_id=root_id,
        name="http.ttfb",
        start_time_unix_nano=start_ns + 1_000_000,
        end_time_unix_nano=start_ns + 19_000_000,
    )
    return [root, child]


def request(*spans: Span) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=list(spans))])]
    )


def record(start_ns: int, target: str = "api", vantage: str = "v1") -> ProbeRecord:
    ingest = Ingest()
    (found,) = ingest.add(request(*probe_spans(start_ns // S % 100_000 + 1, start_ns, target)))
    return dataclasses.replace(found, vantage=vantage)


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s
