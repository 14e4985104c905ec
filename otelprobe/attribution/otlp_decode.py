"""OTLP trace requests -> plain span views: the one place that walks OTLP span structures.

Two inputs give the same `SpanView`s: a decoded ExportTraceServiceRequest (the receiver's
protobuf, or JSON parsed into protobuf) and a parsed OTLP/JSON line walked as dicts. The second
is the fast path for recordings: json.loads plus a direct walk is several times faster than
protobuf's json_format (figures in docs/records.md). records.py joins the views into one
record per probe attempt; otlp_files.py reads recordings' lines into views, the receiver
and the benches' span log decode requests here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

_STATUS_ERROR: Final = Status.StatusCode.STATUS_CODE_ERROR
_TRACE_ID_HEX: Final = 32
_SPAN_ID_HEX: Final = 16


class SpanView(NamedTuple):
    """One span as plain values (a NamedTuple: cheap to build by the million)."""

    trace_id: str
    """32 lower-case hex digits."""
    span_id: str
    """16 hex digits."""
    parent_span_id: str
    """16 hex digits, or "" for a root span."""
    name: str
    start_ns: int
    end_ns: int
    error: bool
    """Status code ERROR."""
    status_message: str
    attributes: Mapping[str, object]
    resource: Mapping[str, object]
    """The resource's attributes (one dict shared by every span of a ResourceSpans)."""


class MalformedSpan(ValueError):
    """A span without the fields every probe span has (IDs, name, timestamps)."""


# --- protobuf -----------------------------------------------------------------------------------


_NESTED: Final = frozenset({"array_value", "kvlist_value"})


def any_value(value: AnyValue) -> object:
    """An OTLP AnyValue as the Python value it carries (arrays as tuples, kvlists as dicts)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind in _NESTED:
        if kind == "array_value":
            return tuple(any_value(v) for v in value.array_value.values)
        return attributes_dict(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_dict(attributes: Iterable[KeyValue], keys: frozenset[str] | None = None) -> dict[str, object]:
    """OTLP attributes (repeated KeyValue) as a dict; only `keys` if given (decoding values is
    most of the receiver's time, and a record reads about twenty keys)."""
    if keys is None:
        return {kv.key: any_value(kv.value) for kv in attributes}
    return {kv.key: any_value(kv.value) for kv in attributes if kv.key in keys}


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One protobuf span with the resource it came from (transport-level tests inspect these)."""

    resource: Resource
    span: Span

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, object]:
        return attributes_dict(self.span.attributes)

    @property
    def resource_attributes(self) -> dict[str, object]:
        return attributes_dict(self.resource.attributes)


def iter_received(request: ExportTraceServiceRequest) -> Iterator[ReceivedSpan]:
    """Every span of a request, as protobuf, with its resource."""
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield ReceivedSpan(resource_spans.resource, span)


def views_from_request(
    request: ExportTraceServiceRequest, keys: frozenset[str] | None = None
) -> Iterator[SpanView]:
    """Every span of a decoded request as a SpanView, with the span attributes in `keys` (all if
    None; resource attributes always all).

    Raises:
        MalformedSpan: a span whose trace or span ID has the wrong size.
    """
    for resource_spans in request.resource_spans:
        resource = attributes_dict(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
                if len(trace_id) != 16 or len(span_id) != 8 or len(parent) not in (0, 8):
                    raise MalformedSpan(f"span {span.name!r}: trace_id must be 16 bytes, span IDs 8")
                status = span.status
                yield SpanView(
                    trace_id.hex(),
                    span_id.hex(),
                    parent.hex(),
                    span.name,
                    span.start_time_unix_nano,
                    span.end_time_unix_nano,
                    status.code == _STATUS_ERROR,
                    status.message,
                    attributes_dict(span.attributes, keys),
                    resource,
                )


# --- OTLP/JSON as dicts -------------------------------------------------------------------------


def json_value(value: Mapping[str, Any]) -> object:
    """One OTLP/JSON AnyValue (`{"intValue": "3"}`) as a Python value; int64s arrive as strings."""
    # Membership tests in order of frequency: this runs once per attribute read.
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "boolValue" in value:
        return value["boolValue"]
    if "doubleValue" in value:
        return float(value["doubleValue"])  # NaN and the infinities arrive as strings
    if "arrayValue" in value:
        return tuple(json_value(v) for v in value["arrayValue"].get("values", ()))
    if "kvlistValue" in value:
        return json_attributes(value["kvlistValue"].get("values", ()))
    return value.get("bytesValue")


def json_attributes(
    items: Iterable[Mapping[str, Any]], keys: frozenset[str] | None = None
) -> dict[str, object]:
    """OTLP/JSON attributes (`[{"key": ..., "value": {...}}]`) as a dict; only `keys` if given
    (decoding values is most of a reader's time, and a record needs about twenty keys)."""
    if keys is None:
        return {item["key"]: json_value(item.get("value") or {}) for item in items}
    return {item["key"]: json_value(item.get("value") or {}) for item in items if item["key"] in keys}


def _hex_id(value: object, digits: int, what: str) -> str:
    if type(value) is not str or len(value) != digits:
        raise MalformedSpan(f"{what} must be {digits} hex digits, got {value!r:.40}")
    return value


def json_span_view(
    span: Mapping[str, Any], resource: Mapping[str, object], keys: frozenset[str] | None = None
) -> SpanView:
    """One OTLP/JSON span dict as a SpanView, with the attributes in `keys` (all if None).

    Raises:
        MalformedSpan: missing or ill-formed IDs, name or timestamps.
    """
    if not isinstance(span, dict):
        raise MalformedSpan(f"a span must be a JSON object, got {span!r:.40}")
    try:
        parent = span.get("parentSpanId")
        status = span.get("status")
        error = False
        message = ""
        if status:
            error = status.get("code") in (2, "STATUS_CODE_ERROR")
            message = str(status.get("message", ""))
        return SpanView(
            _hex_id(span.get("traceId"), _TRACE_ID_HEX, "traceId"),
            _hex_id(span.get("spanId"), _SPAN_ID_HEX, "spanId"),
            _hex_id(parent, _SPAN_ID_HEX, "parentSpanId") if parent else "",
            str(span["name"]),
            int(span["startTimeUnixNano"]),
            int(span["endTimeUnixNano"]),
            error,
            message,
            json_attributes(span.get("attributes", ()), keys),
            resource,
        )
    except MalformedSpan:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise MalformedSpan(f"span {span.get('name')!r:.60}: {type(exc).__name__}: {exc}") from exc


def json_resource_spans(request: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, object], list[Any]]]:
    """(resource attributes, span dicts) per scope of a parsed ExportTraceServiceRequest line.

    Raises:
        MalformedSpan: the structure is not that of a trace request.
    """
    try:
        for resource_spans in request["resourceSpans"]:
            resource = json_attributes((resource_spans.get("resource") or {}).get("attributes", ()))
            for scope_spans in resource_spans.get("scopeSpans", ()):
                spans = scope_spans.get("spans", ())
                if not isinstance(spans, list):
                    raise MalformedSpan("scopeSpans.spans is not a list")
                yield resource, spans
    except MalformedSpan:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedSpan(f"not an OTLP trace request: {type(exc).__name__}: {exc}") from exc
