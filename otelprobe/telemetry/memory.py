"""An in-memory span sink for tests and one-shot tools: keeps every span, synchronously.

`Telemetry(in_memory=True)` hands each attempt's OTLP spans here as they are recorded. They stay
available as the protobuf messages that exporters send (`spans`) and, decoded, as OpenTelemetry
SDK `ReadableSpan` objects (`get_finished_spans`), the shape of the SDK's InMemorySpanExporter, so
that code that inspects spans reads them with the usual API types (SpanKind, Status, Link).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

_KINDS: Final = {
    Span.SpanKind.SPAN_KIND_INTERNAL: SpanKind.INTERNAL,
    Span.SpanKind.SPAN_KIND_SERVER: SpanKind.SERVER,
    Span.SpanKind.SPAN_KIND_CLIENT: SpanKind.CLIENT,
    Span.SpanKind.SPAN_KIND_PRODUCER: SpanKind.PRODUCER,
    Span.SpanKind.SPAN_KIND_CONSUMER: SpanKind.CONSUMER,
}
_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)


def _value(value: AnyValue) -> AttributeValue:
    which = value.WhichOneof("value")
    if which == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    return getattr(value, which) if which else ""


def _attributes(key_values: Sequence[KeyValue]) -> dict[str, AttributeValue]:
    return {kv.key: _value(kv.value) for kv in key_values}


def _context(trace_id: bytes, span_id: bytes) -> SpanContext:
    return SpanContext(
        int.from_bytes(trace_id, "big"), int.from_bytes(span_id, "big"), is_remote=False, trace_flags=_SAMPLED
    )


def to_readable_span(span: Span, resource: Resource) -> ReadableSpan:
    """One OTLP span as the SDK's ReadableSpan (for inspection; nothing is exported from it)."""
    status = Status(StatusCode(span.status.code), span.status.message or None)
    return ReadableSpan(
        name=span.name,
        context=_context(span.trace_id, span.span_id),
        parent=_context(span.trace_id, span.parent_span_id) if span.parent_span_id else None,
        resource=resource,
        attributes=_attributes(span.attributes),
        links=[Link(_context(link.trace_id, link.span_id)) for link in span.links],
        events=[Event(e.name, _attributes(e.attributes), e.time_unix_nano) for e in span.events],
        kind=_KINDS[span.kind],
        status=status,
        start_time=span.start_time_unix_nano,
        end_time=span.end_time_unix_nano,
    )


class InMemorySpans:
    """Every span recorded so far, in order, as OTLP messages and as SDK ReadableSpans."""

    def __init__(self, resource: Resource) -> None:
        self._resource = resource
        self._lock = threading.Lock()
        self._spans: list[Span] = []

    def add(self, spans: Sequence[Span]) -> None:
        with self._lock:
            self._spans.extend(spans)

    @property
    def spans(self) -> list[Span]:
        """The OTLP messages, as the exporters send them."""
        with self._lock:
            return list(self._spans)

    def get_finished_spans(self) -> tuple[ReadableSpan, ...]:
        """The spans decoded into SDK ReadableSpans (the SDK InMemorySpanExporter's method)."""
        return tuple(to_readable_span(span, self._resource) for span in self.spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
