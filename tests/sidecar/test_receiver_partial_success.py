"""OTLP partial success and oversize requests at the real receiver, over HTTP (protobuf and JSON)
and gRPC, with real clients and exporters on loopback.

Spans with ill-sized IDs are dropped and the rest accepted, the answer saying how many and why
(OTLP spec, "Partial Success"); a request with no good span is bad data (400 / INVALID_ARGUMENT).
gRPC messages over the cap are refused by the handler (RESOURCE_EXHAUSTED) and counted as HTTP's
413s are, also when they only grow past the cap once inflated.
"""

from __future__ import annotations

import asyncio
import gzip

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from otelprobe.sidecar.ingest import Ingest
from otelprobe.sidecar.otlp_bodies import SPAN_IDS_FIELD
from otelprobe.sidecar.receiver import GRPC_CORE_LIMIT_FACTOR, OTLPReceiver
from otelprobe.telemetry.otlp_json import json_to_message, message_to_json
from tests.support.sidecar_spans import BASE, probe_spans, request

TRACES = "/v1/traces"
TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


def bad_id_spans() -> list[Span]:
    return [
        Span(trace_id=b"\x01" * 15, span_id=b"\x01" * 8, name="short trace id"),
        Span(trace_id=b"\x02" * 16, span_id=b"\x02" * 8, parent_span_id=b"\x02" * 3, name="short parent"),
    ]


def mixed_request() -> ExportTraceServiceRequest:
    """Two probe traces (4 good spans) and two spans with ill-sized IDs, in two scopes."""
    mixed = request(*probe_spans(1, BASE), bad_id_spans()[0])
    mixed.resource_spans[0].scope_spans.add().spans.extend([*probe_spans(2, BASE), bad_id_spans()[1]])
    return mixed


def assert_two_rejected(answer: ExportTraceServiceResponse) -> None:
    assert answer.HasField("partial_success")
    assert answer.partial_success.rejected_spans == 2
    message = answer.partial_success.error_message
    assert "2 of 6 spans dropped for invalid IDs" in message and "'short trace id'" in message


async def test_http_protobuf_drops_bad_spans_and_answers_partial_success(http: aiohttp.ClientSession) -> None:
    ingest = Ingest()
    records = []
    async with OTLPReceiver(grpc_port=None, on_traces=lambda r: records.extend(ingest.add(r))) as rcv:
        async with http.post(
            rcv.http_endpoint + TRACES, data=mixed_request().SerializeToString(), headers=PROTOBUF
        ) as r:
            assert r.status == 200 and r.content_type == "application/x-protobuf"
            assert_two_rejected(ExportTraceServiceResponse.FromString(await r.read()))
    # The rest went on: both probe traces became records, and ingest saw nothing malformed.
    assert sorted(record.trace_id[-2:] for record in records) == ["01", "02"]
    assert ingest.stats.malformed_requests == 0 and ingest.reader.spans == 4
    assert (rcv.stats.spans, rcv.stats.invalid_spans, rcv.stats.trace_requests) == (4, 2, 1)
    assert rcv.stats.rejected == {}


async def test_http_json_answers_partial_success_in_json(http: aiohttp.ClientSession) -> None:
    async with OTLPReceiver(grpc_port=None) as rcv:
        async with http.post(
            rcv.http_endpoint + TRACES, data=message_to_json(mixed_request()), headers=JSON
        ) as r:
            assert r.status == 200 and r.content_type == "application/json"
            text = await r.text()
        assert '"partialSuccess"' in text and '"rejectedSpans"' in text
        assert_two_rejected(json_to_message(text, ExportTraceServiceResponse()))
        queued = rcv.queue.get_nowait()
    assert [span.name for scope in queued.resource_spans[0].scope_spans for span in scope.spans] == [
        "probe http",
        "http.ttfb",
        "probe http",
        "http.ttfb",
    ]


def bad_request_of(status: status_pb2.Status) -> list[tuple[str, str]]:
    """The (field, description) pairs of the BadRequest detail a Status carries."""
    (detail,) = status.details
    found = error_details_pb2.BadRequest()
    assert detail.Unpack(found)
    return [(v.field, v.description) for v in found.field_violations]


async def test_grpc_answers_partial_success() -> None:
    async with OTLPReceiver(http_port=None) as rcv, grpc.aio.insecure_channel(rcv.grpc_endpoint) as channel:
        export = channel.unary_unary(TRACE_METHOD)
        assert_two_rejected(
            ExportTraceServiceResponse.FromString(
                await export(mixed_request().SerializeToString(), timeout=5)
            )
        )
        assert rcv.queue.qsize() == 1 and rcv.stats.invalid_spans == 2


async def test_a_request_with_no_good_span_is_bad_data(http: aiohttp.ClientSession) -> None:
    # Spec, "Bad Data": nothing of it can be accepted, so it is a failure, not a partial success.
    all_bad = request(*bad_id_spans()).SerializeToString()
    async with OTLPReceiver() as rcv:
        async with http.post(rcv.http_endpoint + TRACES, data=all_bad, headers=PROTOBUF) as r:
            assert r.status == 400
            status = status_pb2.Status.FromString(await r.read())
        assert status.code == 3 and "2 of 2 spans dropped for invalid IDs" in status.message
        # The spec's detail for bad data: a BadRequest saying what was wrong, and where.
        assert bad_request_of(status) == [(SPAN_IDS_FIELD, status.message)]
        async with grpc.aio.insecure_channel(rcv.grpc_endpoint) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await channel.unary_unary(TRACE_METHOD)(all_bad, timeout=5)
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "invalid IDs" in (failure.value.details() or "")
        rich = dict(failure.value.trailing_metadata() or ())["grpc-status-details-bin"]
        assert bad_request_of(status_pb2.Status.FromString(rich)) == [
            (SPAN_IDS_FIELD, failure.value.details())
        ]
        assert rcv.stats.rejected == {"malformed": 2} and rcv.stats.invalid_spans == 4
        assert rcv.queue.empty() and rcv.stats.trace_requests == 0


async def test_an_empty_request_is_a_full_success(http: aiohttp.ClientSession) -> None:
    async with OTLPReceiver(grpc_port=None) as rcv:
        async with http.post(rcv.http_endpoint + TRACES, data=b"", headers=PROTOBUF) as r:
            assert r.status == 200
            assert not ExportTraceServiceResponse.FromString(await r.read()).HasField("partial_success")


async def test_a_full_queue_rejects_every_span_of_a_mixed_request(http: aiohttp.ClientSession) -> None:
    async with OTLPReceiver(grpc_port=None, max_queue=1) as rcv:
        answers = []
        for _ in range(2):
            async with http.post(
                rcv.http_endpoint + TRACES, data=mixed_request().SerializeToString(), headers=PROTOBUF
            ) as r:
                answers.append(ExportTraceServiceResponse.FromString(await r.read()).partial_success)
    assert [a.rejected_spans for a in answers] == [2, 6]
    assert answers[1].error_message.startswith("receiver queue full; 2 of 6 spans dropped")
    assert (rcv.stats.dropped_spans, rcv.stats.invalid_spans) == (4, 4)


async def test_retry_later_does_not_count_the_bad_spans_twice(http: aiohttp.ClientSession) -> None:
    async with OTLPReceiver(grpc_port=None, max_queue=1, when_full="retry") as rcv:
        statuses = []
        for _ in range(2):
            async with http.post(
                rcv.http_endpoint + TRACES, data=mixed_request().SerializeToString(), headers=PROTOBUF
            ) as r:
                statuses.append(r.status)
        rcv.queue.get_nowait()
        async with http.post(
            rcv.http_endpoint + TRACES, data=mixed_request().SerializeToString(), headers=PROTOBUF
        ) as r:
            statuses.append(r.status)
    assert statuses == [200, 503, 200]
    assert (rcv.stats.invalid_spans, rcv.stats.retry_answers) == (4, 1)


# --- gRPC messages over the cap ------------------------------------------------------------------

CAP = 16 * 1024


async def test_grpc_oversize_is_resource_exhausted_and_counted() -> None:
    async with OTLPReceiver(http_port=None, max_body_bytes=CAP) as rcv:
        big = request(Span(trace_id=b"\x01" * 16, span_id=b"\x01" * 8, name="x" * (CAP + 100)))
        body = big.SerializeToString()
        assert CAP < len(body) < GRPC_CORE_LIMIT_FACTOR * CAP
        async with grpc.aio.insecure_channel(rcv.grpc_endpoint) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await channel.unary_unary(TRACE_METHOD)(body, timeout=5)
            assert failure.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"exceeds {CAP} bytes" in (failure.value.details() or "")
            logs = ExportLogsServiceRequest(
                resource_logs=[
                    ResourceLogs(scope_logs=[ScopeLogs(log_records=[LogRecord(severity_text="x" * CAP)])])
                ]
            )
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await channel.unary_unary(LOGS_METHOD)(logs.SerializeToString(), timeout=5)
            assert failure.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            # Under the cap still goes through.
            await channel.unary_unary(TRACE_METHOD)(
                request(*probe_spans(3, BASE)).SerializeToString(), timeout=5
            )
        assert rcv.stats.rejected == {"too_large": 2}
        assert rcv.queue.qsize() == 1 and rcv.stats.log_requests == 0


async def test_grpc_gzip_that_inflates_past_the_cap_is_refused_and_counted() -> None:
    async with OTLPReceiver(http_port=None, max_body_bytes=CAP) as rcv:
        # 24 KiB of one repeated name: a few hundred bytes on the wire.
        body = request(
            Span(trace_id=b"\x01" * 16, span_id=b"\x01" * 8, name="a" * (24 * 1024))
        ).SerializeToString()
        assert len(gzip.compress(body)) < 1024
        async with grpc.aio.insecure_channel(rcv.grpc_endpoint, compression=grpc.Compression.Gzip) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await channel.unary_unary(TRACE_METHOD)(body, timeout=5)
            assert failure.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert rcv.stats.rejected == {"too_large": 1}
            # A bomb beyond gRPC core's own limit is refused before inflating further (not counted).
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await channel.unary_unary(TRACE_METHOD)(b"\0" * (100 * CAP), timeout=5)
            assert failure.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert rcv.queue.empty()


def _export_one_big_span(exporter: GRPCSpanExporter) -> SpanExportResult:
    provider = TracerProvider(resource=Resource.create({"service.name": "probe-test"}))
    results: list[SpanExportResult] = []

    class Capture(SimpleSpanProcessor):
        def on_end(self, span):  # type: ignore[no-untyped-def]
            results.append(exporter.export([span]))

    provider.add_span_processor(Capture(exporter))
    with provider.get_tracer("t").start_as_current_span("probe http") as span:
        span.set_attribute("big", "x" * (CAP + 1000))
    provider.shutdown()
    return results[-1]


async def test_a_real_grpc_exporter_sending_too_much_fails_and_is_counted() -> None:
    async with OTLPReceiver(http_port=None, max_body_bytes=CAP) as rcv:
        # The Python exporter retries RESOURCE_EXHAUSTED until its timeout (the spec says it
        # should not without RetryInfo); a short timeout keeps this quick.
        exporter = GRPCSpanExporter(endpoint=rcv.grpc_endpoint, insecure=True, timeout=2)
        assert await asyncio.to_thread(_export_one_big_span, exporter) is SpanExportResult.FAILURE
        assert rcv.stats.rejected.get("too_large", 0) >= 1 and rcv.queue.empty()
