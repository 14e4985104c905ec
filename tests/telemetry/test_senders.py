"""The span export path: OTLP/HTTP and gRPC senders into real receivers, gzip, retries, a full
queue and a dead Collector."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otelprobe import names
from otelprobe.config.telemetry import OTLPGRPCExporterConfig, OTLPHTTPExporterConfig, TelemetryConfig
from otelprobe.errors import ConnectRefused
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.sidecar.receiver import OTLPReceiver
from otelprobe.telemetry.batching import SpanBatcher
from otelprobe.telemetry.otlp_json import json_to_message
from otelprobe.telemetry.pipeline import Telemetry
from otelprobe.telemetry.senders import ConsoleSender, OTLPGRPCSender, OTLPHTTPSender
from tests.support.otlp_requests import a_request

ResultFactory = Callable[..., ProbeResult]
FAST_QUEUE = {"schedule_delay": "20ms", "max_queue_size": 256, "max_export_batch_size": 64}


class CaptureServer:
    """A loopback OTLP/HTTP endpoint that answers with scripted statuses and keeps what it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.requests.append((headers, ExportTraceServiceRequest.FromString(body)))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, body=b"")

    async def __aenter__(self) -> CaptureServer:
        app = web.Application()
        app.router.add_post("/v1/traces", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, auto_decompress=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[OTLPReceiver]:
    async with OTLPReceiver() as rcv:
        yield rcv


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_config(endpoint: str, **extra: Any) -> OTLPHTTPExporterConfig:
    return OTLPHTTPExporterConfig.model_validate({"type": "otlp_http", "endpoint": endpoint, **extra})


@pytest.mark.parametrize("compression", ["gzip", "none"])
@pytest.mark.parametrize("transport", ["otlp_http", "otlp_grpc"])
async def test_spans_arrive_exactly_as_recorded(
    transport: str, compression: str, receiver: OTLPReceiver, result_factory: ResultFactory
) -> None:
    if transport == "otlp_http":
        exporter: dict[str, Any] = {"type": transport, "endpoint": receiver.http_endpoint}
    else:
        exporter = {"type": transport, "endpoint": receiver.grpc_endpoint, "insecure": True}
    config = TelemetryConfig.model_validate(
        {"exporters": [{**exporter, "compression": compression, "timeout": "2s"}], "queue": FAST_QUEUE}
    )
    tel = Telemetry(config, vantage="eu-1", instance_id="p-1", in_memory=True)
    refused = ConnectRefused("connection_refused", "connection refused by 127.0.0.1:9")
    first = tel.record(
        result_factory(
            phases=((names.SPAN_TCP_CONNECT, 0, 1),), failed_phase=names.SPAN_TCP_CONNECT, error=refused
        )
    )
    tel.record(result_factory(attempt=2, trace_ref=TraceRef(7, 9)), link=first)
    assert await tel.flush(5.0)
    received = await receiver.wait_for_spans(2 + 7, timeout=10)
    await tel.shutdown(2.0)

    assert tel.span_exporter is not None
    recorded = {s.span_id: s for s in tel.span_exporter.spans}
    assert {r.span.span_id: r.span for r in received} == recorded
    assert received[0].resource_attributes[names.SERVICE_INSTANCE_ID] == "p-1"
    assert tel.exported == 9 and tel.dropped == 0


@pytest.mark.parametrize("compression", ["gzip", "none"])
async def test_http_body_is_protobuf_gzipped_per_config_with_headers(
    compression: str, result_factory: ResultFactory
) -> None:
    request = a_request(result_factory())
    async with CaptureServer([]) as server:
        sender = OTLPHTTPSender(
            http_config(server.url, compression=compression, headers={"Authorization": "Bearer t0ken"})
        )
        assert await asyncio.to_thread(sender.send, request, 2.0)
        sender.shutdown()
    ((headers, got),) = server.requests
    assert got == request
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["Authorization"] == "Bearer t0ken"
    assert headers.get("Content-Encoding") == ("gzip" if compression == "gzip" else None)


async def test_http_retries_retryable_statuses_and_not_others(result_factory: ResultFactory) -> None:
    request = a_request(result_factory())
    async with CaptureServer([503, 429, 200, 400]) as server:
        sender = OTLPHTTPSender(http_config(server.url))
        assert await asyncio.to_thread(sender.send, request, 5.0)
        assert len(server.requests) == 3
        assert not await asyncio.to_thread(sender.send, request, 5.0)  # 400: permanent, one try
        assert len(server.requests) == 4
        sender.shutdown()


async def test_backoff_stops_at_the_timeout(result_factory: ResultFactory) -> None:
    request = a_request(result_factory())
    async with CaptureServer([503] * 100) as server:
        sender = OTLPHTTPSender(http_config(server.url))
        started = time.monotonic()
        assert not await asyncio.to_thread(sender.send, request, 0.8)
        elapsed = time.monotonic() - started
        sender.shutdown()
    assert 0.1 < elapsed < 3.0
    assert 2 <= len(server.requests) < 10


@pytest.mark.parametrize("transport", ["otlp_http", "otlp_grpc"])
async def test_shutdown_interrupts_retries_to_a_dead_collector(
    transport: str, result_factory: ResultFactory
) -> None:
    request = a_request(result_factory())
    port = closed_port()
    sender: OTLPHTTPSender | OTLPGRPCSender
    if transport == "otlp_http":
        sender = OTLPHTTPSender(http_config(f"http://127.0.0.1:{port}"))
    else:
        sender = OTLPGRPCSender(
            OTLPGRPCExporterConfig.model_validate(
                {"type": "otlp_grpc", "endpoint": f"127.0.0.1:{port}", "insecure": True}
            )
        )
    outcome: list[bool] = []
    worker = threading.Thread(target=lambda: outcome.append(sender.send(request, 30.0)))
    worker.start()
    await asyncio.sleep(0.5)
    started = time.monotonic()
    sender.shutdown()
    await asyncio.to_thread(worker.join, 10.0)
    assert outcome == [False]
    assert time.monotonic() - started < 5.0
    assert not sender.send(request, 5.0)  # after shutdown: fails at once


class GatedSender:
    """Blocks every send until released: a Collector that stopped answering."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.received: list[ExportTraceServiceRequest] = []

    def send(self, request: ExportTraceServiceRequest, timeout_s: float) -> bool:
        self.release.wait(timeout_s)
        self.received.append(request)
        return True

    def shutdown(self) -> None:
        self.release.set()


def test_full_queue_drops_whole_attempts_and_counts_every_span() -> None:
    sender = GatedSender()
    batcher = SpanBatcher(
        sender,
        Resource(),
        InstrumentationScope(name="otelprobe"),
        max_queue_size=20,
        max_export_batch_size=20,
        schedule_delay_s=0.01,
    )
    spans = [Span(name=f"s{i}", trace_id=b"\1" * 16, span_id=bytes([i + 1]) * 8) for i in range(7)]
    batcher.put(spans)  # taken by the worker, which then blocks in send
    deadline = time.monotonic() + 5
    while batcher.queued and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.perf_counter()
    for _ in range(10):
        batcher.put(spans)
    assert time.perf_counter() - started < 0.5  # never waits for the sender
    assert batcher.queued == 14 and batcher.dropped == 8 * 7
    sender.release.set()
    assert batcher.force_flush(5.0)
    batcher.shutdown(5.0)
    delivered = [s for r in sender.received for s in r.resource_spans[0].scope_spans[0].spans]
    assert len(delivered) == batcher.exported == 21
    assert batcher.exported + batcher.dropped == 11 * 7


def test_console_prints_each_batch_as_an_otlp_json_line(
    result_factory: ResultFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    request = a_request(result_factory())
    assert ConsoleSender().send(request, 1.0)
    (line,) = capsys.readouterr().out.splitlines()
    assert json_to_message(line, ExportTraceServiceRequest()) == request
