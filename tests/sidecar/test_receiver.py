"""The OTLP receiver: real OTLP exporters in, decoded requests out; malformed input rejected."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from otelprobe.sidecar.receiver import OTLPReceiver
from otelprobe.telemetry.otlp_json import message_to_json

TRACES_PATH = "/v1/traces"


def request_with(count: int, name: str = "s") -> ExportTraceServiceRequest:
    spans = [
        Span(trace_id=bytes([1] * 16), span_id=i.to_bytes(8, "big"), name=f"{name}{i}")
        for i in range(1, count + 1)
    ]
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])


@pytest.fixture
async def receiver() -> AsyncIterator[OTLPReceiver]:
    async with OTLPReceiver() as rcv:
        yield rcv


def export_with(exporter: SpanExporter) -> SpanExportResult:
    """Spans from a real SDK, exported by a real OTLP exporter (runs in a worker thread)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "probe-test"}))
    results: list[SpanExportResult] = []

    class Capture(SimpleSpanProcessor):
        def on_end(self, span):  # type: ignore[no-untyped-def]
            results.append(exporter.export([span]))

    provider.add_span_processor(Capture(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent"):
        with tracer.start_as_current_span("child") as child:
            child.set_attribute("k", 7)
    provider.shutdown()
    return results[-1]


async def test_listens_on_loopback_with_free_ports(receiver: OTLPReceiver) -> None:
    assert receiver.host == "127.0.0.1"
    assert receiver.http_port and receiver.grpc_port and receiver.http_port != receiver.grpc_port


async def test_real_http_exporter_delivers_decoded_spans(receiver: OTLPReceiver) -> None:
    exporter = HTTPSpanExporter(endpoint=receiver.http_endpoint + TRACES_PATH, timeout=5)
    assert await asyncio.to_thread(export_with, exporter) is SpanExportResult.SUCCESS
    spans = await receiver.wait_for_spans(2, timeout=5)
    by_name = {s.name: s for s in spans}
    assert by_name["child"].span.parent_span_id == by_name["parent"].span.span_id
    assert by_name["child"].attributes == {"k": 7}
    assert by_name["parent"].resource_attributes["service.name"] == "probe-test"


async def test_real_grpc_exporter_delivers_decoded_spans(receiver: OTLPReceiver) -> None:
    exporter = GRPCSpanExporter(
        endpoint=receiver.grpc_endpoint, insecure=True, timeout=5, compression=grpc.Compression.Gzip
    )
    assert await asyncio.to_thread(export_with, exporter) is SpanExportResult.SUCCESS
    child = await receiver.wait_for_span("child", timeout=5)
    assert child.attributes == {"k": 7}


async def test_http_accepts_json_and_gzip(receiver: OTLPReceiver, http: aiohttp.ClientSession) -> None:
    url = receiver.http_endpoint + TRACES_PATH
    sent = request_with(2, "json")
    async with http.post(url, data=message_to_json(sent), headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200 and r.content_type == "application/json"
    body = gzip.compress(request_with(3, "gz").SerializeToString())
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    async with http.post(url, data=body, headers=headers) as r:
        assert r.status == 200
        ExportTraceServiceResponse.FromString(await r.read())
    spans = await receiver.wait_for_spans(5, timeout=5)
    assert sorted(s.name for s in spans) == ["gz1", "gz2", "gz3", "json1", "json2"]
    assert spans[0].span.trace_id == bytes([1] * 16)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-protobuf", b"\xff\xff\xff garbage"),
        ("application/json", b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "nothex"}]}]}]}'),
        ("application/json", b"{not json"),
    ],
)
async def test_malformed_http_body_is_400_with_a_status(
    receiver: OTLPReceiver, http: aiohttp.ClientSession, content_type: str, body: bytes
) -> None:
    async with http.post(
        receiver.http_endpoint + TRACES_PATH, data=body, headers={"Content-Type": content_type}
    ) as r:
        assert r.status == 400
        raw = await r.read()
    if content_type == "application/x-protobuf":
        status = status_pb2.Status.FromString(raw)
        assert status.code == 3 and "protobuf" in status.message  # INVALID_ARGUMENT
        assert status.details[0].type_url == "type.googleapis.com/google.rpc.BadRequest"
    else:
        answer = json.loads(raw)
        assert answer["code"] == 3
        (detail,) = answer["details"]  # the BadRequest, in OTLP/JSON as well
        assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
        assert detail["fieldViolations"][0]["description"] == answer["message"]
    assert receiver.stats.rejected == {"malformed": 1}
    assert receiver.queue.empty()


async def test_wrong_ids_are_malformed(receiver: OTLPReceiver, http: aiohttp.ClientSession) -> None:
    bad = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[Span(trace_id=b"\x01", span_id=b"")])])]
    )
    async with http.post(
        receiver.http_endpoint + TRACES_PATH,
        data=bad.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    ) as r:
        assert r.status == 400


async def test_unknown_content_type_is_415(receiver: OTLPReceiver, http: aiohttp.ClientSession) -> None:
    async with http.post(
        receiver.http_endpoint + TRACES_PATH, data=b"x", headers={"Content-Type": "text/plain"}
    ) as r:
        assert r.status == 415


async def test_bodies_over_the_cap_are_413_even_when_compressed(http: aiohttp.ClientSession) -> None:
    async with OTLPReceiver(max_body_bytes=1024, grpc_port=None) as rcv:
        url = rcv.http_endpoint + TRACES_PATH
        async with http.post(url, data=b"\0" * 4096, headers={"Content-Type": "application/x-protobuf"}) as r:
            assert r.status == 413
        bomb = gzip.compress(b"\0" * 1_000_000)
        assert len(bomb) < 1024
        headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
        async with http.post(url, data=bomb, headers=headers) as r:
            assert r.status == 413
        assert rcv.stats.rejected == {"too_large": 2}


async def test_malformed_grpc_is_invalid_argument(receiver: OTLPReceiver) -> None:
    async with grpc.aio.insecure_channel(receiver.grpc_endpoint) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export", None, None
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await export(b"\xff\xff\xff garbage", timeout=5)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_full_queue_rejects_through_partial_success_and_counts(http: aiohttp.ClientSession) -> None:
    async with OTLPReceiver(max_queue=2, grpc_port=None) as rcv:
        headers = {"Content-Type": "application/x-protobuf"}
        response = ExportTraceServiceResponse()
        for _ in range(5):
            async with http.post(
                rcv.http_endpoint + TRACES_PATH, data=request_with(3).SerializeToString(), headers=headers
            ) as r:
                assert r.status == 200
                response = ExportTraceServiceResponse.FromString(await r.read())
        assert response.partial_success.rejected_spans == 3
        assert rcv.queue.qsize() == 2
        assert (rcv.stats.spans, rcv.stats.dropped_requests, rcv.stats.dropped_spans) == (6, 3, 9)


async def test_metrics_go_to_their_own_callback(http: aiohttp.ClientSession) -> None:
    got: list[ExportMetricsServiceRequest] = []
    async with OTLPReceiver(on_metrics=got.append) as rcv:
        async with http.post(
            rcv.http_endpoint + "/v1/metrics",
            data=ExportMetricsServiceRequest().SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        ) as r:
            assert r.status == 200
    assert len(got) == 1 and rcv.queue.empty()


async def test_traces_callback_replaces_the_queue() -> None:
    got: list[ExportTraceServiceRequest] = []
    async with OTLPReceiver(on_traces=got.append, http_port=None) as rcv:
        exporter = GRPCSpanExporter(endpoint=rcv.grpc_endpoint, insecure=True, timeout=5)
        assert await asyncio.to_thread(export_with, exporter) is SpanExportResult.SUCCESS
    assert sum(len(ss.spans) for r in got for rs in r.resource_spans for ss in rs.scope_spans) == 2
    assert rcv.queue.empty()


def test_port_in_use_is_reported() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def start() -> None:
            rcv = OTLPReceiver(http_port=port, grpc_port=None)
            try:
                await rcv.start()
            finally:
                await rcv.stop()

        with pytest.raises(OSError):
            asyncio.run(start())


async def test_broken_gzip_and_unknown_encoding_are_400(
    receiver: OTLPReceiver, http: aiohttp.ClientSession
) -> None:
    url = receiver.http_endpoint + TRACES_PATH
    for encoding, body in (("gzip", b"\x1f\x8b not gzip at all"), ("zstd", b"\x28\xb5\x2f\xfd")):
        headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": encoding}
        async with http.post(url, data=body, headers=headers) as r:
            assert r.status == 400, encoding


def probe_spans(trace: int) -> list[Span]:
    """A probe attempt's root and two phases, as the prober's encoder writes them."""
    trace_id, root_id = trace.to_bytes(16, "big"), trace.to_bytes(8, "big")
    ms = 1_000_000
    root = Span(
        trace_id=trace_id,
        span_id=root_id,
        name="probe tcp",
        start_time_unix_nano=1000 * ms,
        end_time_unix_nano=1010 * ms,
    )
    for key, value in (("probe.kind", "tcp"), ("probe.target", "db"), ("otelprobe.vantage", "io-1")):
        root.attributes.add(key=key).value.string_value = value
    root.attributes.add(key="probe.success").value.bool_value = True
    phases = [
        Span(
            trace_id=trace_id,
            span_id=(trace * 10 + i).to_bytes(8, "big"),
            parent_span_id=root_id,
            name=name,
            start_time_unix_nano=(1000 + start) * ms,
            end_time_unix_nano=(1000 + end) * ms,
        )
        for i, (name, start, end) in enumerate((("dns.lookup", 0, 3), ("tcp.connect", 3, 10)))
    ]
    return [root, *phases]


def request_of(spans: list[Span]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])


async def test_probe_traces_split_over_requests_become_one_record_each(
    receiver: OTLPReceiver, http: aiohttp.ClientSession
) -> None:
    url = receiver.http_endpoint + TRACES_PATH
    first, second = probe_spans(5), probe_spans(6)
    # The phases of attempt 5 as JSON; its root, with all of attempt 6, later as protobuf.
    async with http.post(
        url, data=message_to_json(request_of(first[1:])), headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 200
    body = request_of([first[0], *second]).SerializeToString()
    async with http.post(url, data=body, headers={"Content-Type": "application/x-protobuf"}) as r:
        assert r.status == 200
    records = await receiver.wait_for_records(2, timeout=5)
    assert [int(r.trace_id, 16) for r in records] == [5, 6]
    for record in records:
        assert (record.kind, record.target, record.vantage, record.success) == ("tcp", "db", "io-1", True)
        assert record.dns_s == pytest.approx(0.003) and record.connect_s == pytest.approx(0.007)
    assert receiver.record_stats.orphan_traces == 0 and receiver.record_stats.spans == 6
