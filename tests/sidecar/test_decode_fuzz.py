"""Fuzzing the sidecar's decode path: random and corrupted OTLP (protobuf and JSON) through the one
reader (records_from_request, the JSON span walker) and through the real receiver over HTTP and
gRPC. Whatever comes in: a clear status (200 / partial success, 400, 413, 415; gRPC OK,
INVALID_ARGUMENT, RESOURCE_EXHAUSTED), counted, never a crash, within bounded time and memory."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import math
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otelprobe.attribution.features import FeatureEngine
from otelprobe.attribution.otlp_decode import MalformedSpan, json_resource_spans, json_span_view
from otelprobe.attribution.records import (
    MAX_DURATION_S,
    RECORD_COLUMNS,
    RECORD_KEYS,
    ReaderStats,
    records_frame,
    records_from_request,
)
from otelprobe.attribution.slo import SLOEvaluator
from otelprobe.sidecar.ingest import Ingest
from otelprobe.sidecar.receiver import (
    MalformedRequest,
    OTLPReceiver,
    decode_json,
    decode_protobuf,
)
from otelprobe.sidecar.slot_table import slot_table
from otelprobe.sidecar.windower import EventTimeWindower
from otelprobe.telemetry.otlp_json import message_to_json

MAX_BODY_BYTES = 256 * 1024
FUZZ = settings(
    max_examples=60, deadline=2000, suppress_health_check=list(HealthCheck), database=None, derandomize=True
)
PHASE_FIELDS = ("dns_s", "connect_s", "tls_s", "request_s", "ttfb_s", "transfer_s", "other_s", "total_s")
SPAN_NAMES = (
    "probe http",
    "probe dns",
    "dns.lookup",
    "tcp.connect",
    "tls.handshake",
    "http.request",
    "http.ttfb",
    "http.transfer",
    "icmp.echo",
    "probe ",
    "",
)
HOUR_NS = 3600 * 10**9
T0_NS = 1_795_000_000_000_000_000

# --- strategies ---------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.text(max_size=20),
    st.just("x" * 100_000),  # a huge value
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
keys = st.sampled_from(sorted(RECORD_KEYS)) | st.text(max_size=12)


def set_any(target: AnyValue, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, list):
        array = target.array_value
        for item in value:
            set_any(array.values.add(), item)
    elif isinstance(value, dict):
        kvlist = target.kvlist_value
        for key, item in value.items():
            added = kvlist.values.add(key=key)
            set_any(added.value, item)


SPAN_ATTRIBUTES = st.dictionaries(keys, values, max_size=6)
ids_16 = st.sampled_from([bytes([i]) * 16 for i in range(1, 5)])
times = st.one_of(
    st.integers(0, 2**64 - 1),
    st.integers(T0_NS, T0_NS + 10**9),
    st.integers(T0_NS - HOUR_NS * 2, T0_NS + HOUR_NS * 2),  # hour-long and negative phases
)


ANY_IDS = (ids_16 | st.binary(max_size=20), st.binary(max_size=10), st.binary(max_size=10))
VALID_IDS = (ids_16, st.binary(min_size=8, max_size=8), st.sampled_from([b"", b"\x01" * 8, b"\x02" * 8]))
NAMES = st.sampled_from(SPAN_NAMES) | st.text(max_size=10)
STATUS_CODES = st.integers(0, 2)
MESSAGES = st.text(max_size=10)


@st.composite
def spans(draw: st.DrawFn, valid_ids: bool) -> dict[str, Any]:
    trace_ids, span_ids, parents = VALID_IDS if valid_ids else ANY_IDS
    return {
        "trace_id": draw(trace_ids),
        "span_id": draw(span_ids),
        "parent_span_id": draw(parents),
        "name": draw(NAMES),
        "start_time_unix_nano": draw(times),
        "end_time_unix_nano": draw(times),
        "status_code": draw(STATUS_CODES),
        "message": draw(MESSAGES),
        "attributes": draw(SPAN_ATTRIBUTES),
    }


# Strategies are built once: hypothesis validates each new strategy object (slow when per draw).
RESOURCE_ATTRIBUTES = st.dictionaries(keys, values, max_size=3)
SPAN_LISTS = {valid: st.lists(spans(valid), max_size=6) for valid in (False, True)}


@st.composite
def requests(draw: st.DrawFn, valid_ids: bool = False) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 3))):
        resource_spans = request.resource_spans.add()
        for key, value in draw(RESOURCE_ATTRIBUTES).items():
            set_any(resource_spans.resource.attributes.add(key=key).value, value)
        scope = resource_spans.scope_spans.add()
        for fields in draw(SPAN_LISTS[valid_ids]):
            span = scope.spans.add(
                trace_id=fields["trace_id"],
                span_id=fields["span_id"],
                parent_span_id=fields["parent_span_id"],
                name=fields["name"],
                start_time_unix_nano=fields["start_time_unix_nano"],
                end_time_unix_nano=fields["end_time_unix_nano"],
                kind=Span.SpanKind.SPAN_KIND_CLIENT,
            )
            span.status.code = fields["status_code"]
            span.status.message = fields["message"]
            for key, value in fields["attributes"].items():
                set_any(span.attributes.add(key=key).value, value)
    return request


VALID_REQUESTS = requests(valid_ids=True)


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    """A valid request's bytes with flipped bytes, cuts and spliced slices."""
    body = bytearray(draw(VALID_REQUESTS).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        if not body:
            break
        at = draw(st.integers(0, len(body) - 1))
        action = draw(st.sampled_from(["flip", "cut", "splice", "varint"]))
        if action == "flip":
            body[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del body[at:]
        elif action == "splice":
            body[at:at] = body[: draw(st.integers(0, len(body)))]
        else:  # an absurd length prefix
            body[at:at] = b"\xff\xff\xff\xff\x0f"
    return bytes(body)


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=10),
    st.sampled_from(["NaN", "Infinity", "-1", "1e400", "zz" * 8, "0" * 32]),
    st.lists(st.integers(), max_size=3),
    st.just({"deep": [[[[{"x": 1}]]]]}),
)


@st.composite
def mutated_json(draw: st.DrawFn) -> dict[str, Any]:
    """A valid OTLP/JSON request with values replaced by wrong types and absurd values."""
    tree: dict[str, Any] = json.loads(message_to_json(draw(VALID_REQUESTS)))
    nodes: list[tuple[Any, Any]] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, item in node.items():
                nodes.append((node, key))
                collect(item)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                nodes.append((node, index))
                collect(item)

    collect(tree)
    for _ in range(draw(st.integers(0, 4))):
        if nodes:
            parent, key = draw(st.sampled_from(nodes))
            parent[key] = draw(JSON_VALUES)
    return tree


def deep_json(depth: int) -> str:
    return '{"resourceSpans":' + "[" * depth + "]" * depth + "}"


# --- the reader ---------------------------------------------------------------------------------


def check_records(request: ExportTraceServiceRequest) -> None:
    stats = ReaderStats()
    try:
        records = records_from_request(request, stats)
    except MalformedSpan:
        return  # the documented refusal of ill-sized IDs (the receiver answers 400)
    for record in records:
        for name in PHASE_FIELDS:
            value = getattr(record, name)
            # other_s sums the phases outside the named ones, each within the bound.
            bound = MAX_DURATION_S * (1 if name != "other_s" else 100)
            assert math.isnan(value) or 0.0 <= value <= bound, (name, value)
        assert isinstance(record.target, str) and isinstance(record.vantage, str)
        assert record.attempt >= 1
        for name in ("status_code", "body_bytes", "dns_attempts", "lab_incident"):
            value = getattr(record, name)
            assert math.isnan(value) or (math.isfinite(value) and value >= 0), (name, value)
        assert math.isnan(record.cert_remaining_s) or math.isfinite(record.cert_remaining_s)
        assert record.peer_address is None or isinstance(record.peer_address, str)
    assert stats.records == len(records)
    # Whatever was kept fits the frame's dtypes (int64 times and counts among them).
    assert len(records_frame(records)) == len(records)


@given(requests())
@FUZZ
def test_records_from_any_request(request: ExportTraceServiceRequest) -> None:
    check_records(request)


@given(st.binary(max_size=512) | mutated_bytes())
@FUZZ
def test_records_from_random_and_mutated_protobuf(body: bytes) -> None:
    try:
        request = decode_protobuf(body, ExportTraceServiceRequest())
    except MalformedRequest:
        return
    check_records(request)


@given(mutated_json())
@settings(FUZZ, max_examples=30)
def test_json_walker_on_corrupted_requests(tree: dict[str, Any]) -> None:
    # The recordings' path (attribution/otlp_files.py): dict walk, MalformedSpan for bad shapes.
    try:
        for resource, span_dicts in json_resource_spans(tree):
            for span in span_dicts:
                try:
                    json_span_view(span, resource)
                except MalformedSpan:
                    pass
    except MalformedSpan:
        pass
    # The receiver's path: JSON -> protobuf -> records.
    try:
        request = decode_json(json.dumps(tree).encode(), ExportTraceServiceRequest())
    except MalformedRequest:
        return
    check_records(request)


@given(requests(valid_ids=True))
@settings(FUZZ, max_examples=25, deadline=10_000)
def test_fuzzed_requests_flow_through_ingest_windows_features_and_slos(
    request: ExportTraceServiceRequest,
) -> None:
    # The live path after the receiver, without a model: whatever records came out of a request
    # are windowed, featured and judged against the SLOs without an exception.
    ingest = Ingest()
    windows = EventTimeWindower(2.0, allowed_lateness_s=1.0, clock=lambda: 0.0)
    ingest.attach(windows)
    windows.add(ingest.add(request))
    engine, evaluator = FeatureEngine(), SLOEvaluator(None, 2.0)
    for slot in windows.drain():
        table, verdicts = slot_table(engine, evaluator, slot.start_ns, slot.records)
        assert table is not None and len(table) == len({(r.target, r.vantage) for r in slot.records})
        assert {(v.target, v.vantage) for v in verdicts} >= {(r.target, r.vantage) for r in slot.records}


def test_times_beyond_int64_and_absurd_attempts_are_counted_not_crashes() -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    late = spans.add(trace_id=b"\x08" * 16, span_id=b"\x01" * 8, name="probe http")
    late.start_time_unix_nano, late.end_time_unix_nano = 2**64 - 10, 2**64 - 1  # valid OTLP
    retried = spans.add(trace_id=b"\x09" * 16, span_id=b"\x01" * 8, name="probe http")
    retried.start_time_unix_nano, retried.end_time_unix_nano = T0_NS, T0_NS + 10**6
    retried.attributes.add(key="probe.attempt").value.double_value = 1e300
    stats = ReaderStats()
    (record,) = records_from_request(request, stats)
    assert record.trace_id == "09" * 16 and record.attempt == 1
    assert stats.bad_spans == 1 and stats.absurd_values == 1
    assert "beyond int64" in stats.problems[0]
    assert tuple(records_frame([record]).columns) == RECORD_COLUMNS


def test_hour_long_and_negative_phases_are_counted_not_kept() -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    trace = b"\x07" * 16
    root = spans.add(trace_id=trace, span_id=b"\x01" * 8, name="probe http")
    root.start_time_unix_nano, root.end_time_unix_nano = T0_NS, T0_NS + 2 * HOUR_NS
    for name, end in (("dns.lookup", T0_NS - 10**6), ("http.ttfb", T0_NS + 2 * HOUR_NS)):
        spans.add(
            trace_id=trace,
            span_id=b"\x02" * 8,
            parent_span_id=b"\x01" * 8,
            name=name,
            start_time_unix_nano=T0_NS,
            end_time_unix_nano=end,
        )
    stats = ReaderStats()
    (record,) = records_from_request(request, stats)
    assert math.isnan(record.total_s) and math.isnan(record.dns_s) and math.isnan(record.ttfb_s)
    assert stats.absurd_values == 3


# --- the real receiver --------------------------------------------------------------------------


class ThreadedReceiver:
    """A real OTLPReceiver (queue mode, nobody draining: the queue fills up) in its own loop."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.receiver = OTLPReceiver(max_body_bytes=MAX_BODY_BYTES, max_queue=64)

    def __enter__(self) -> ThreadedReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.receiver.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.stop(0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def post(self, body: bytes, content_type: str, encoding: str | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.receiver.http_port, timeout=10)
        headers = {"Content-Type": content_type}
        if encoding:
            headers["Content-Encoding"] = encoding
        try:
            connection.request("POST", "/v1/traces", body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[ThreadedReceiver]:
    with ThreadedReceiver() as running:
        yield running


def _answer_is_clear(status: int, body: bytes, content_type: str) -> None:
    assert status in (200, 400, 413, 415), status
    if status == 200:
        answer = ExportTraceServiceResponse()
        if content_type == "application/json":
            assert isinstance(json.loads(body), dict)
        else:
            answer.ParseFromString(body)
    elif status in (400, 413):
        if content_type == "application/json":
            assert json.loads(body)["message"]
        else:
            assert status_pb2.Status.FromString(body).message


bodies = st.one_of(
    st.tuples(st.binary(max_size=512) | mutated_bytes(), st.just("application/x-protobuf")),
    st.tuples(requests().map(lambda r: r.SerializeToString()), st.just("application/x-protobuf")),
    st.tuples(mutated_json().map(lambda t: json.dumps(t).encode()), st.just("application/json")),
    st.tuples(
        st.binary(max_size=64), st.sampled_from(["application/json", "text/plain", "application/grpc"])
    ),
)


@given(bodies, st.sampled_from([None, "gzip", "deflate", "br"]), st.booleans())
@settings(
    max_examples=60, deadline=5000, suppress_health_check=list(HealthCheck), database=None, derandomize=True
)
def test_receiver_http_answers_every_body_clearly(
    receiver: ThreadedReceiver, body_and_type: tuple[bytes, str], encoding: str | None, truncate: bool
) -> None:
    body, content_type = body_and_type
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    if truncate and encoding in ("gzip", "deflate"):
        body = body[: len(body) // 2]
    status, answer = receiver.post(body, content_type, encoding)
    _answer_is_clear(status, answer, content_type)


def test_receiver_http_bad_input_is_counted_and_it_keeps_working(receiver: ThreadedReceiver) -> None:
    before = dict(receiver.receiver.stats.rejected)
    started = time.monotonic()
    cases = [
        (deep_json(100_000).encode(), "application/json", None),  # deep nesting
        (deep_json(900).encode(), "application/json", None),
        (b"\x00" * (MAX_BODY_BYTES + 1), "application/x-protobuf", None),  # oversized
        (gzip.compress(b"\x00" * (64 * MAX_BODY_BYTES)), "application/x-protobuf", "gzip"),  # a gzip bomb
        (b"\x0a\xff\xff\xff\xff\x0f", "application/x-protobuf", None),  # a 4 GiB length prefix
    ]
    statuses = [receiver.post(body, content_type, encoding)[0] for body, content_type, encoding in cases]
    assert statuses == [400, 400, 413, 413, 400]
    assert time.monotonic() - started < 10
    rejected = receiver.receiver.stats.rejected
    assert rejected.get("malformed", 0) - before.get("malformed", 0) == 3
    assert rejected.get("too_large", 0) - before.get("too_large", 0) == 2
    good = ExportTraceServiceRequest()
    good.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x01" * 8, name="x"
    )
    status, _ = receiver.post(good.SerializeToString(), "application/x-protobuf")
    assert status == 200


def test_a_full_queue_is_a_partial_success_with_a_counter(receiver: ThreadedReceiver) -> None:
    good = ExportTraceServiceRequest()
    good.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x02" * 16, span_id=b"\x01" * 8, name="x"
    )
    answers = [receiver.post(good.SerializeToString(), "application/x-protobuf") for _ in range(80)]
    assert {status for status, _ in answers} == {200}
    partial = [ExportTraceServiceResponse.FromString(body).partial_success for _, body in answers]
    assert any(p.rejected_spans == 1 and p.error_message for p in partial)
    assert receiver.receiver.stats.dropped_requests >= 1


@given(st.binary(max_size=512) | mutated_bytes() | requests().map(lambda r: r.SerializeToString()))
@settings(
    max_examples=40, deadline=5000, suppress_health_check=list(HealthCheck), database=None, derandomize=True
)
def test_receiver_grpc_answers_every_body_clearly(receiver: ThreadedReceiver, body: bytes) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{receiver.receiver.grpc_port}") as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        try:
            ExportTraceServiceResponse.FromString(export(body, timeout=10))
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), exc
            assert exc.details()
