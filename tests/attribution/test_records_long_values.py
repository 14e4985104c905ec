"""Huge attribute values (100 kB) are cut to a bounded length in the record, head and tail kept,
and counted: they would otherwise flow into span attributes, Prometheus labels and SQLite."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from otelprobe.attribution.records import MAX_DETAIL_CHARS, MAX_NAME_CHARS, ReaderStats, records_from_request
from otelprobe.sidecar.ingest import Ingest

S = 1_000_000_000
HUGE = 100_000


def _text(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def huge(word: str) -> str:
    """100 kB that starts and ends with `word`, so the cut's head and tail can be seen."""
    return f"{word}-head-" + "x" * HUGE + f"-{word}-tail"


def huge_probe_request(phase_name: str = "tcp.connect") -> ExportTraceServiceRequest:
    trace_id, root_id = b"\x01" * 16, b"\x02" * 8
    root = Span(
        trace_id=trace_id,
        span_id=root_id,
        name="probe http",
        start_time_unix_nano=10 * S,
        end_time_unix_nano=10 * S + 50_000_000,
        attributes=[
            _text("probe.kind", huge("kind")),
            _text("probe.target", huge("target")),
            _text("otelprobe.tenant", huge("tenant")),
            _text("error.type", huge("type")),
            _text("probe.error.detail", huge("detail")),
            _text("network.peer.address", huge("peer")),
            KeyValue(key="probe.success", value=AnyValue(bool_value=False)),
        ],
    )
    phase = Span(
        trace_id=trace_id,
        span_id=b"\x03" * 8,
        parent_span_id=root_id,
        name=phase_name,
        start_time_unix_nano=10 * S,
        end_time_unix_nano=10 * S + 10_000_000,
        status=Status(code=Status.StatusCode.STATUS_CODE_ERROR),
    )
    resource = Resource(attributes=[_text("otelprobe.vantage", huge("vantage"))])
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=[root, phase])])]
    )


def test_huge_text_values_are_cut_head_and_tail_kept_and_counted() -> None:
    stats = ReaderStats()
    (record,) = records_from_request(huge_probe_request(), stats)
    names = {
        "target": record.target,
        "vantage": record.vantage,
        "kind": record.kind,
        "tenant": record.tenant,
        "type": record.error_type,
        "peer": record.peer_address,
    }
    for word, value in names.items():
        assert value is not None and len(value) == MAX_NAME_CHARS, word
        assert value.startswith(f"{word}-head-") and value.endswith(f"-{word}-tail") and "…" in value
    detail = record.error_detail
    assert detail is not None and len(detail) == MAX_DETAIL_CHARS
    assert detail.startswith("detail-head-") and detail.endswith("-detail-tail")
    assert stats.long_values == 7
    assert record.failed_phase == "tcp.connect" and not record.phases_ok


def test_a_huge_failed_phase_name_is_cut_too() -> None:
    stats = ReaderStats()
    (record,) = records_from_request(huge_probe_request(huge("phase")), stats)
    assert record.failed_phase is not None and len(record.failed_phase) == MAX_NAME_CHARS
    assert stats.long_values == 8


def test_values_at_the_limit_are_kept_whole_and_not_counted() -> None:
    request = huge_probe_request()
    root = request.resource_spans[0].scope_spans[0].spans[0]
    del root.attributes[:]
    root.attributes.extend(
        [_text("probe.target", "t" * MAX_NAME_CHARS), _text("probe.error.detail", "d" * MAX_DETAIL_CHARS)]
    )
    request.resource_spans[0].resource.attributes[0].value.string_value = "eu-1"
    stats = ReaderStats()
    (record,) = records_from_request(request, stats)
    assert (record.target, record.error_detail, record.vantage) == (
        "t" * MAX_NAME_CHARS,
        "d" * MAX_DETAIL_CHARS,
        "eu-1",
    )
    assert stats.long_values == 0


def test_the_sidecar_ingest_cuts_and_counts_once_even_when_a_late_phase_rebuilds_the_record() -> None:
    request = huge_probe_request()
    spans = request.resource_spans[0].scope_spans[0].spans
    phase = Span()
    phase.CopyFrom(spans[1])
    del spans[1]  # the phase comes in a later request
    ingest = Ingest()
    (first,) = ingest.add(request)
    late = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[phase])])])
    (rebuilt,) = ingest.add(late)
    assert len(first.target) == len(rebuilt.target) == MAX_NAME_CHARS
    assert (first.failed_phase, rebuilt.failed_phase) == (None, "tcp.connect")
    assert ingest.reader.long_values == 7 and ingest.stats.late_phases == 1
