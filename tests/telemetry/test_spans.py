"""ProbeResult -> span tree: names, parenting, exact times, attributes, errors, links, IDs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from otelprobe import names
from otelprobe.errors import ConnectRefused, ProbeTimeout
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.settings.secrets import clear_secrets, register_secret
from otelprobe.telemetry.pipeline import Telemetry
from otelprobe.telemetry.spans import SpanEncoder

ResultFactory = Callable[..., ProbeResult]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    tel = Telemetry(vantage="eu-1", instance_id="prober-7", in_memory=True)
    yield tel
    tel.shutdown_sync(1.0)


def spans_of(tel: Telemetry) -> dict[str, ReadableSpan]:
    assert tel.span_exporter is not None
    return {s.name: s for s in tel.span_exporter.get_finished_spans()}


def test_root_and_one_child_per_phase_with_exact_times(
    telemetry: Telemetry, result_factory: ResultFactory
) -> None:
    result = result_factory(attributes={names.HTTP_REQUEST_METHOD: "GET", names.SERVER_PORT: 443})
    ref = telemetry.record(result)

    spans = spans_of(telemetry)
    root = spans["probe http"]
    assert set(spans) == {"probe http", *names.HTTP_PHASES}
    assert root.kind is SpanKind.CLIENT and root.parent is None
    assert (root.context.trace_id, root.context.span_id) == (ref.trace_id, ref.span_id)
    assert root.start_time == result.to_epoch_ns(result.start_ns)
    assert root.end_time == result.to_epoch_ns(result.end_ns)
    assert root.status.status_code is StatusCode.UNSET
    assert dict(root.attributes or {}) == {
        names.HTTP_REQUEST_METHOD: "GET",
        names.SERVER_PORT: 443,
        names.PROBE_KIND: "http",
        names.PROBE_TARGET: "api",
        names.PROBE_SUCCESS: True,
        names.PROBE_ATTEMPT: 1,
        names.OTELPROBE_VANTAGE: "eu-1",
    }
    for phase in result.phases:
        child = spans[phase.name]
        assert child.kind is SpanKind.INTERNAL
        assert child.parent is not None and child.parent.span_id == root.context.span_id
        assert child.context.trace_id == root.context.trace_id
        assert child.start_time == result.to_epoch_ns(phase.start_ns)
        assert child.end_time == result.to_epoch_ns(phase.end_ns)
    ttfb = spans[names.SPAN_HTTP_TTFB]
    assert ttfb.end_time is not None and ttfb.start_time is not None
    assert ttfb.end_time - ttfb.start_time == 11_500_000
    resource = root.resource.attributes
    assert resource[names.SERVICE_NAME] == "otelprobe"
    assert resource[names.SERVICE_INSTANCE_ID] == "prober-7"
    assert resource[names.OTELPROBE_VANTAGE] == "eu-1"


def test_failed_phase_and_root_carry_error_status_and_type(
    telemetry: Telemetry, result_factory: ResultFactory
) -> None:
    error = ProbeTimeout("deadline_exceeded_in_http_ttfb", "deadline exceeded in http.ttfb")
    result = result_factory(
        phases=(
            (names.SPAN_DNS_LOOKUP, 0, 1),
            (names.SPAN_TCP_CONNECT, 1, 2),
            (names.SPAN_HTTP_REQUEST, 2, 3),
            (names.SPAN_HTTP_TTFB, 3, 100),
        ),
        failed_phase=names.SPAN_HTTP_TTFB,
        error=error,
    )
    telemetry.record(result)

    spans = spans_of(telemetry)
    root, ttfb = spans["probe http"], spans[names.SPAN_HTTP_TTFB]
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "deadline exceeded in http.ttfb"
    assert root.attributes is not None and root.attributes[names.ERROR_TYPE] == "timeout"
    assert root.attributes[names.PROBE_SUCCESS] is False
    assert root.attributes[names.PROBE_ERROR_DETAIL] == "deadline_exceeded_in_http_ttfb"
    assert ttfb.status.status_code is StatusCode.ERROR
    assert ttfb.status.description == "deadline_exceeded_in_http_ttfb"
    assert ttfb.attributes is not None and ttfb.attributes[names.ERROR_TYPE] == "timeout"
    for name in (names.SPAN_DNS_LOOKUP, names.SPAN_TCP_CONNECT, names.SPAN_HTTP_REQUEST):
        assert spans[name].status.status_code is StatusCode.UNSET
        assert names.ERROR_TYPE not in (spans[name].attributes or {})


def test_retry_is_a_new_trace_linked_to_the_first_attempt(
    telemetry: Telemetry, result_factory: ResultFactory
) -> None:
    refused = ConnectRefused("connection_refused")
    first = telemetry.record(
        result_factory(
            phases=((names.SPAN_TCP_CONNECT, 0, 1),), failed_phase=names.SPAN_TCP_CONNECT, error=refused
        )
    )
    second = telemetry.record(result_factory(attempt=2), link=first)

    assert second.trace_id != first.trace_id
    assert telemetry.span_exporter is not None
    roots = [s for s in telemetry.span_exporter.get_finished_spans() if s.parent is None]
    retry = next(s for s in roots if s.context.trace_id == second.trace_id)
    assert retry.attributes is not None and retry.attributes[names.PROBE_ATTEMPT] == 2
    assert [(link.context.trace_id, link.context.span_id) for link in retry.links] == [
        (first.trace_id, first.span_id)
    ]
    original = next(s for s in roots if s.context.trace_id == first.trace_id)
    assert list(original.links) == []


def test_root_takes_the_ids_already_sent_in_traceparent(
    telemetry: Telemetry, result_factory: ResultFactory
) -> None:
    sent = TraceRef(trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736, span_id=0x00F067AA0BA902B7)
    ref = telemetry.record(result_factory(trace_ref=sent))

    assert ref == sent
    spans = spans_of(telemetry)
    root = spans["probe http"]
    assert (root.context.trace_id, root.context.span_id) == (sent.trace_id, sent.span_id)
    children = [s for s in spans.values() if s.parent is not None]
    assert children and all(s.parent and s.parent.span_id == sent.span_id for s in children)
    assert all(s.context.span_id != sent.span_id for s in children)
    # The forced IDs apply to that one root only.
    other = telemetry.record(result_factory())
    assert other.trace_id != sent.trace_id


def sdk_reference_spans(result: ProbeResult, vantage: str, link: TraceRef | None) -> list[Span]:
    """The same attempt through the OpenTelemetry SDK tracer and its OTLP encoder, as otelprobe
    exported it before spans were built directly (the SDK is the reference for the encoding)."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("otelprobe")
    links = [Link(SpanContext(link.trace_id, link.span_id, False, TraceFlags(1)))] if link else []
    root_attrs: dict[str, Any] = {
        **result.attributes,
        names.PROBE_KIND: result.kind,
        names.PROBE_TARGET: result.target,
        names.PROBE_SUCCESS: result.success,
        names.PROBE_ATTEMPT: result.attempt,
        names.OTELPROBE_VANTAGE: vantage,
    }
    if result.error is not None:
        root_attrs[names.ERROR_TYPE] = result.error.error_type
        root_attrs[names.PROBE_ERROR_DETAIL] = result.error.detail
    root = tracer.start_span(
        names.ROOT_SPAN_PREFIX + result.kind,
        context=Context(),
        kind=SpanKind.CLIENT,
        attributes=root_attrs,
        links=links,
        start_time=result.to_epoch_ns(result.start_ns),
    )
    parent = set_span_in_context(root, Context())
    for phase in result.phases:
        attrs: dict[str, Any] = {**phase.attributes, names.PROBE_TARGET: result.target}
        if phase.error_type is not None:
            attrs[names.ERROR_TYPE] = phase.error_type
            if phase.error_detail:
                attrs[names.PROBE_ERROR_DETAIL] = phase.error_detail
        child = tracer.start_span(
            phase.name,
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attrs,
            start_time=result.to_epoch_ns(phase.start_ns),
        )
        if phase.error_type is not None:
            child.set_status(Status(StatusCode.ERROR, phase.error_detail or phase.error_type))
        child.end(end_time=result.to_epoch_ns(phase.end_ns))
    if result.error is not None:
        root.set_status(Status(StatusCode.ERROR, result.error.message))
    root.end(end_time=result.to_epoch_ns(result.end_ns))
    request = encode_spans(exporter.get_finished_spans())
    provider.shutdown()
    return list(request.resource_spans[0].scope_spans[0].spans)


def comparable(span: Span, root_id: bytes) -> tuple[object, ...]:
    """Everything but the random IDs: parenting is reduced to "child of the root or not"."""
    attributes = sorted((kv.key, kv.value.SerializeToString()) for kv in span.attributes)
    links = [(link.trace_id, link.span_id, link.flags) for link in span.links]
    return (
        span.name,
        span.kind,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        span.parent_span_id == root_id if span.parent_span_id else None,
        attributes,
        span.status.code,
        span.status.message,
        links,
        span.flags,
        len(span.events),
    )


@pytest.mark.parametrize("failed", [False, True])
def test_spans_equal_what_the_sdk_tracer_and_encoder_produce(
    failed: bool, result_factory: ResultFactory
) -> None:
    error = (
        ProbeTimeout("deadline_exceeded_in_http_ttfb", "deadline exceeded in http.ttfb") if failed else None
    )
    result = result_factory(
        attempt=2,
        failed_phase=names.SPAN_HTTP_TTFB if failed else None,
        error=error,
        attributes={
            names.HTTP_REQUEST_METHOD: "GET",
            names.SERVER_PORT: 443,
            names.URL_FULL: "https://api/x",
            "probe.ratio": 0.5,
            names.DNS_ANSWERS: ("127.0.0.1", "::1"),
        },
        phase_attributes={names.SPAN_TCP_CONNECT: {names.NETWORK_PEER_ADDRESS: "127.0.0.1", "n": 3}},
    )
    link = TraceRef(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)
    ref, encoded = SpanEncoder("eu-1").encode(result, link)
    ours = [Span.FromString(span) for span in encoded]
    reference = sdk_reference_spans(result, "eu-1", link)

    our_root = ours[0]
    assert our_root.trace_id == ref.trace_id.to_bytes(16, "big") and not our_root.parent_span_id
    assert all(s.trace_id == our_root.trace_id for s in ours)
    assert len({s.span_id for s in ours}) == len(ours)
    ref_root = next(s for s in reference if not s.parent_span_id)
    assert sorted(comparable(s, our_root.span_id) for s in ours) == sorted(
        comparable(s, ref_root.span_id) for s in reference
    )


def test_registered_secrets_never_reach_span_attributes(
    telemetry: Telemetry, result_factory: ResultFactory
) -> None:
    register_secret("s3cr3t-token")
    try:
        telemetry.record(result_factory(attributes={names.URL_FULL: "https://api/x?k=s3cr3t-token"}))
    finally:
        clear_secrets()
    root = spans_of(telemetry)["probe http"]
    assert root.attributes is not None and root.attributes[names.URL_FULL] == "https://api/x?k=REDACTED"
