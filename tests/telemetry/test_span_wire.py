"""The hand-written span wire format against the protobuf classes: every span and every request
must decode (`FromString`) to exactly the message the upb-message path built before."""

from __future__ import annotations

import dataclasses
import itertools
import random
import threading
from collections.abc import Callable, Mapping, Sequence

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otelprobe import names
from otelprobe.errors import DNSError, ProbeError, ProbeTimeout, TLSError
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.settings.secrets import clear_secrets, redact, register_secret
from otelprobe.telemetry import spans
from otelprobe.telemetry.batching import SpanBatcher, build_request, request_bytes
from otelprobe.telemetry.spans import SpanEncoder, any_value
from otelprobe.timing import AttributeValue, Phase, PhaseEvent

ResultFactory = Callable[..., ProbeResult]
LOCAL: int = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
LINK = TraceRef(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)


def reference_spans(result: ProbeResult, vantage: str, link: TraceRef | None) -> list[Span]:
    """What the upb-message SpanEncoder built (the implementation before the wire format), draw
    for draw the same random IDs."""
    ref = result.trace_ref or TraceRef.new()
    trace_id, root_id = ref.trace_id.to_bytes(16, "big"), ref.span_id.to_bytes(8, "big")
    offset = result.anchor_wall_ns - result.anchor_mono_ns
    reserved = {names.PROBE_KIND, names.PROBE_TARGET, names.PROBE_SUCCESS, names.PROBE_ATTEMPT}
    reserved.add(names.OTELPROBE_VANTAGE)
    if result.error is not None:
        reserved |= {names.ERROR_TYPE, names.PROBE_ERROR_DETAIL}
    attrs = kvs(result.attributes, reserved)
    attrs.append(KeyValue(key=names.PROBE_KIND, value=AnyValue(string_value=result.kind)))
    attrs.append(KeyValue(key=names.PROBE_TARGET, value=AnyValue(string_value=result.target)))
    attrs.append(KeyValue(key=names.OTELPROBE_VANTAGE, value=AnyValue(string_value=vantage)))
    attrs += kvs({names.PROBE_SUCCESS: result.error is None, names.PROBE_ATTEMPT: result.attempt}, set())
    root = Span(
        trace_id=trace_id,
        span_id=root_id,
        name=names.ROOT_SPAN_PREFIX + result.kind,
        kind=Span.SpanKind.SPAN_KIND_CLIENT,
        start_time_unix_nano=result.start_ns + offset,
        end_time_unix_nano=result.end_ns + offset,
        flags=LOCAL,
    )
    if result.error is not None:
        error = result.error
        attrs += kvs({names.ERROR_TYPE: error.error_type, names.PROBE_ERROR_DETAIL: error.detail}, set())
        root.status.code = Status.StatusCode.STATUS_CODE_ERROR
        root.status.message = redact(error.message)
    root.attributes.extend(attrs)
    if link is not None:
        root.links.add(
            trace_id=link.trace_id.to_bytes(16, "big"), span_id=link.span_id.to_bytes(8, "big"), flags=LOCAL
        )
    out = [root]
    for phase in sorted(result.phases, key=lambda p: (p.start_ns, p.end_ns)):
        out.append(reference_phase(phase, trace_id, root_id, offset, result.target))
    return out


def reference_phase(phase: Phase, trace_id: bytes, root_id: bytes, offset: int, target: str) -> Span:
    reserved = {names.PROBE_TARGET}
    if phase.error_type is not None:
        reserved.add(names.ERROR_TYPE)
        if phase.error_detail:
            reserved.add(names.PROBE_ERROR_DETAIL)
    attrs = kvs(phase.attributes, reserved)
    attrs.append(KeyValue(key=names.PROBE_TARGET, value=AnyValue(string_value=target)))
    span = Span(
        trace_id=trace_id,
        span_id=(random.getrandbits(64) or 1).to_bytes(8, "big"),
        parent_span_id=root_id,
        name=phase.name,
        kind=Span.SpanKind.SPAN_KIND_INTERNAL,
        start_time_unix_nano=phase.start_ns + offset,
        end_time_unix_nano=phase.end_ns + offset,
        flags=LOCAL,
    )
    if phase.error_type is not None:
        attrs += kvs({names.ERROR_TYPE: phase.error_type}, set())
        if phase.error_detail:
            attrs += kvs({names.PROBE_ERROR_DETAIL: phase.error_detail}, set())
        span.status.code = Status.StatusCode.STATUS_CODE_ERROR
        span.status.message = redact(phase.error_detail or phase.error_type)
    span.attributes.extend(attrs)
    for event in phase.events:
        span.events.add(
            time_unix_nano=event.time_ns + offset, name=event.name, attributes=kvs(event.attributes, set())
        )
    return span


def kvs(attributes: Mapping[str, AttributeValue], reserved: set[str]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items() if k not in reserved]


def assert_same_as_reference(
    result: ProbeResult, link: TraceRef | None = None, vantage: str = "eu-1"
) -> None:
    random.seed(20261123)
    ref, ours = SpanEncoder(vantage).encode(result, link)
    random.seed(20261123)
    reference = reference_spans(result, vantage, link)
    assert ref.trace_id.to_bytes(16, "big") == reference[0].trace_id
    assert [Span.FromString(span) for span in ours] == reference


# Every value shape an attribute can take, at the edges of the wire format's one-byte lengths
# and varints.
AWKWARD: dict[str, AttributeValue] = {
    names.HTTP_REQUEST_METHOD: "GET",
    names.SERVER_PORT: 443,
    "zero": 0,
    "small": 127,
    "two.bytes": 128,
    "negative": -5,
    "int64.min": -(1 << 63),
    "int64.max": (1 << 63) - 1,
    "true": True,
    "false": False,
    "ratio": 0.5,
    "nan.free.float": -1e-300,
    "empty": "",
    "unicode": "ü€😀",
    "string.125": "s" * 125,
    "string.126": "s" * 126,
    "string.long": "l" * 20_000,
    "k" * 127: "key of 127",
    "k" * 300: 7,
    names.DNS_ANSWERS: ("127.0.0.1", "::1"),
    "ints": (1, -2, 300),
    "floats": (0.25, 1e9),
    "empty.tuple": (),
}


@pytest.mark.parametrize("with_link", [False, True])
@pytest.mark.parametrize("failed", [None, "with_detail", "without_detail"])
def test_spans_decode_to_what_the_message_path_built(
    failed: str | None, with_link: bool, result_factory: ResultFactory
) -> None:
    error: ProbeError | None = None
    if failed == "with_detail":
        error = ProbeTimeout("deadline_exceeded_in_http_ttfb", "deadline exceeded in http.ttfb")
    elif failed == "without_detail":
        error = TLSError("", "handshake failed")
    result = result_factory(
        attempt=3,
        failed_phase=names.SPAN_HTTP_TTFB if error else None,
        error=error,
        attributes=AWKWARD,
        phase_attributes={
            names.SPAN_TCP_CONNECT: {names.NETWORK_PEER_ADDRESS: "127.0.0.1", "n": 3},
            names.SPAN_HTTP_TTFB: AWKWARD,
        },
    )
    assert_same_as_reference(result, LINK if with_link else None)


def with_events(result: ProbeResult, events: Mapping[str, Sequence[PhaseEvent]]) -> ProbeResult:
    phases = tuple(dataclasses.replace(p, events=tuple(events.get(p.name, ()))) for p in result.phases)
    return dataclasses.replace(result, phases=phases)


@pytest.mark.parametrize("failed", [False, True])
def test_phase_events_decode_to_the_messages_and_serialize_byte_for_byte(
    failed: bool, result_factory: ResultFactory
) -> None:
    error = DNSError("resolver_timeout", "no answer") if failed else None
    result = result_factory(
        failed_phase=names.SPAN_DNS_LOOKUP if failed else None,
        error=error,
        phase_attributes={names.SPAN_DNS_LOOKUP: {names.PROBE_DNS_ATTEMPTS: 2}},
    )
    lookup = result.phases[0]
    retransmit: dict[str, AttributeValue] = {names.PROBE_DNS_QUERY_TYPE: "AAAA", names.PROBE_DNS_ATTEMPT: 2}
    result = with_events(
        result,
        {
            names.SPAN_DNS_LOOKUP: [
                PhaseEvent(names.EVENT_DNS_RETRANSMIT, lookup.start_ns + 500_000, retransmit),
                PhaseEvent("awkward", lookup.start_ns + 600_000, AWKWARD),
                PhaseEvent("bare", lookup.end_ns),
            ]
        },
    )
    assert_same_as_reference(result)
    random.seed(7)
    _, ours = SpanEncoder("eu-1").encode(result)
    random.seed(7)
    reference = reference_spans(result, "eu-1", None)
    # Field order too: the bytes are what the protobuf runtime itself serializes.
    assert ours[1] == reference[1].SerializeToString()
    decoded = Span.FromString(ours[1])
    assert [(e.name, e.time_unix_nano) for e in decoded.events] == [
        (names.EVENT_DNS_RETRANSMIT, result.to_epoch_ns(lookup.start_ns + 500_000)),
        ("awkward", result.to_epoch_ns(lookup.start_ns + 600_000)),
        ("bare", result.to_epoch_ns(lookup.end_ns)),
    ]


def test_event_values_are_redacted(result_factory: ResultFactory) -> None:
    register_secret("s3cr3t-token")
    try:
        result = result_factory()
        at = result.phases[0].start_ns
        result = with_events(result, {names.SPAN_DNS_LOOKUP: [PhaseEvent("e", at, {"why": "s3cr3t-token"})]})
        assert_same_as_reference(result)
        _, ours = SpanEncoder("eu-1").encode(result)
    finally:
        clear_secrets()
    assert not any(b"s3cr3t-token" in span for span in ours)


def test_probe_attributes_never_override_the_converters_own(result_factory: ResultFactory) -> None:
    clash: dict[str, AttributeValue] = {
        names.PROBE_TARGET: "spoofed",
        names.PROBE_KIND: "spoofed",
        names.PROBE_SUCCESS: False,
        names.ERROR_TYPE: "spoofed",
        names.PROBE_ERROR_DETAIL: "spoofed",
    }
    for error in (None, DNSError("nxdomain", "no such name")):
        result = result_factory(
            error=error,
            failed_phase=names.SPAN_DNS_LOOKUP if error else None,
            attributes=clash,
            phase_attributes={names.SPAN_DNS_LOOKUP: clash, names.SPAN_TCP_CONNECT: clash},
        )
        assert_same_as_reference(result)


def test_other_kinds_unordered_phases_and_forced_ids(result_factory: ResultFactory) -> None:
    result = result_factory(
        kind="dns",
        target="résolveur",
        phases=((names.SPAN_TCP_CONNECT, 2.0, 3.0), (names.SPAN_DNS_LOOKUP, 0.0, 5.0)),
        trace_ref=TraceRef(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7),
    )
    assert_same_as_reference(result, vantage="ap-south-1")
    assert_same_as_reference(result_factory(phases=()))


def test_redaction_applies_to_values_and_status_as_before(result_factory: ResultFactory) -> None:
    register_secret("s3cr3t-token")
    try:
        error = ProbeTimeout("s3cr3t-token", "timed out fetching ?k=s3cr3t-token")
        result = result_factory(
            attributes={names.URL_FULL: "https://api/x?k=s3cr3t-token", "list": ("s3cr3t-token", "ok")},
            phase_attributes={names.SPAN_HTTP_TTFB: {"why": "s3cr3t-token!"}},
            failed_phase=names.SPAN_HTTP_TTFB,
            error=error,
        )
        assert_same_as_reference(result)
        _, ours = SpanEncoder("eu-1").encode(result)
    finally:
        clear_secrets()
    assert not any(b"s3cr3t-token" in span for span in ours)


def test_an_int_beyond_int64_is_refused_as_before(result_factory: ResultFactory) -> None:
    result = result_factory(attributes={"huge": 1 << 63})
    with pytest.raises(ValueError):
        SpanEncoder("eu-1").encode(result)
    with pytest.raises(ValueError):
        any_value(1 << 63)


def test_key_and_name_caches_stay_bounded(result_factory: ResultFactory) -> None:
    encoder = SpanEncoder("eu-1")
    many = spans._CACHE_MAX + 100
    for index in range(many):
        encoder.encode(result_factory(attributes={f"made.up.{index}": index}, phases=((f"p{index}", 0, 1),)))
    assert len(encoder._keys) <= spans._CACHE_MAX and len(encoder._heads) <= spans._CACHE_MAX


def message_request(
    batch: Sequence[Span], resource: Resource, scope: InstrumentationScope
) -> ExportTraceServiceRequest:
    """The request as the batcher built it with messages before."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.CopyFrom(resource)
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.CopyFrom(scope)
    scope_spans.spans.extend(batch)
    return request


RESOURCE = Resource(
    attributes=[
        KeyValue(key=names.SERVICE_NAME, value=any_value("otelprobe")),
        KeyValue(key=names.OTELPROBE_VANTAGE, value=any_value("eu-1")),
    ]
)
SCOPE = InstrumentationScope(name="otelprobe", version="1.2.3")


@pytest.mark.parametrize("resource", [Resource(), RESOURCE])
def test_requests_decode_to_what_the_message_path_built(
    resource: Resource, result_factory: ResultFactory
) -> None:
    encoder = SpanEncoder("eu-1")
    results = [result_factory(target=f"t{i}", attributes={"long": "x" * i}) for i in range(80)]
    encoded = list(itertools.chain.from_iterable(encoder.encode(r)[1] for r in results))
    messages = [Span.FromString(span) for span in encoded]
    for batch in (encoded[:1], encoded[:512], encoded, []):
        body = request_bytes(batch, resource.SerializeToString(), SCOPE.SerializeToString())
        expected = message_request([Span.FromString(span) for span in batch], resource, SCOPE)
        assert ExportTraceServiceRequest.FromString(body) == expected
    # Span messages built by hand are accepted too, in any mix.
    mixed = [span if index % 2 else messages[index] for index, span in enumerate(encoded)]
    assert build_request(mixed, resource, SCOPE) == message_request(messages, resource, SCOPE)


class BytesSender:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.sent = threading.Event()

    def send(self, request: ExportTraceServiceRequest, timeout_s: float) -> bool:
        raise AssertionError("a sender that takes bytes gets bytes")

    def send_serialized(self, body: bytes, timeout_s: float, items: int = 0) -> bool:
        self.bodies.append(body)
        return True

    def shutdown(self) -> None:
        return None


class MessageSender:
    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []

    def send(self, request: ExportTraceServiceRequest, timeout_s: float) -> bool:
        self.requests.append(request)
        return True

    def shutdown(self) -> None:
        return None


def test_batcher_sends_bytes_or_messages_as_the_sender_takes_them(result_factory: ResultFactory) -> None:
    encoder = SpanEncoder("eu-1")
    attempts = [encoder.encode(result_factory(target=f"t{i}"))[1] for i in range(10)]
    expected = [Span.FromString(span) for attempt in attempts for span in attempt]
    by_bytes, by_message = BytesSender(), MessageSender()
    batchers = [
        SpanBatcher(sender, RESOURCE, SCOPE, max_export_batch_size=16, schedule_delay_s=0.01)
        for sender in (by_bytes, by_message)
    ]
    for batcher in batchers:
        for attempt in attempts:
            batcher.put(attempt)
        assert batcher.force_flush(5.0)
        batcher.shutdown(5.0)
        assert batcher.exported == len(expected) and batcher.dropped == batcher.failed == 0
    requests = [ExportTraceServiceRequest.FromString(body) for body in by_bytes.bodies]
    assert requests == by_message.requests
    assert len(requests) == 5  # 70 spans in batches of at most 16
    for request in requests:
        (resource_spans,) = request.resource_spans
        assert resource_spans.resource == RESOURCE and resource_spans.scope_spans[0].scope == SCOPE
    delivered = [s for r in requests for s in r.resource_spans[0].scope_spans[0].spans]
    assert delivered == expected
