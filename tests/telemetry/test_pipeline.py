"""The pipeline end to end: real OTLP exporters into a loopback receiver, a dead Collector,
Prometheus, and shutdown that never blocks the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from otelprobe import names
from otelprobe.config.telemetry import TelemetryConfig
from otelprobe.errors import ConnectRefused
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.sidecar.receiver import OTLPReceiver, ReceivedSpan, attributes_dict
from otelprobe.telemetry.pipeline import Telemetry

ResultFactory = Callable[..., ProbeResult]
FAST_QUEUE = {"schedule_delay": "20ms", "max_queue_size": 256, "max_export_batch_size": 64}


@pytest.fixture
async def receiver() -> AsyncIterator[OTLPReceiver]:
    async with OTLPReceiver() as rcv:
        yield rcv


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exporter_for(transport: str, receiver: OTLPReceiver) -> dict[str, Any]:
    if transport == "otlp_http":
        return {"type": "otlp_http", "endpoint": receiver.http_endpoint, "timeout": "2s"}
    return {"type": "otlp_grpc", "endpoint": receiver.grpc_endpoint, "insecure": True, "timeout": "2s"}


@pytest.mark.parametrize("transport", ["otlp_http", "otlp_grpc"])
async def test_exported_trace_tree_arrives_intact(
    transport: str, receiver: OTLPReceiver, result_factory: ResultFactory
) -> None:
    config = TelemetryConfig.model_validate(
        {"exporters": [exporter_for(transport, receiver)], "queue": FAST_QUEUE, "service_name": "prober"}
    )
    tel = Telemetry(config, vantage="eu-1", instance_id="p-1")
    refused = ConnectRefused("connection_refused", "connection refused by 127.0.0.1:9")
    first = tel.record(
        result_factory(
            phases=((names.SPAN_TCP_CONNECT, 0, 1),), failed_phase=names.SPAN_TCP_CONNECT, error=refused
        )
    )
    sent = TraceRef(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)
    retry = tel.record(result_factory(attempt=2, trace_ref=sent), link=first)
    assert retry == sent
    assert await tel.flush(5.0)
    spans = await receiver.wait_for_spans(2 + 6 + 1, timeout=10)
    await tel.shutdown(2.0)

    by_trace: dict[bytes, list[ReceivedSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.span.trace_id, []).append(span)
    assert set(by_trace) == {first.trace_id.to_bytes(16, "big"), sent.trace_id.to_bytes(16, "big")}

    failed = {s.name: s for s in by_trace[first.trace_id.to_bytes(16, "big")]}
    assert set(failed) == {"probe http", names.SPAN_TCP_CONNECT}
    root, connect = failed["probe http"], failed[names.SPAN_TCP_CONNECT]
    assert root.span.kind == 3 and connect.span.kind == 1  # CLIENT, INTERNAL
    assert connect.span.parent_span_id == root.span.span_id
    assert root.span.status.code == 2 and root.span.status.message == "connection refused by 127.0.0.1:9"
    assert connect.span.status.code == 2
    assert root.attributes[names.ERROR_TYPE] == connect.attributes[names.ERROR_TYPE] == "connect_refused"
    assert root.attributes[names.PROBE_SUCCESS] is False
    assert root.resource_attributes[names.SERVICE_NAME] == "prober"
    assert root.resource_attributes[names.SERVICE_INSTANCE_ID] == "p-1"
    assert root.resource_attributes[names.OTELPROBE_VANTAGE] == "eu-1"

    ok = {s.name: s for s in by_trace[sent.trace_id.to_bytes(16, "big")]}
    assert set(ok) == {"probe http", *names.HTTP_PHASES}
    retry_root = ok["probe http"]
    assert retry_root.span.span_id == sent.span_id.to_bytes(8, "big")
    assert not retry_root.span.parent_span_id
    assert retry_root.attributes[names.PROBE_ATTEMPT] == 2
    assert [(link.trace_id, link.span_id) for link in retry_root.span.links] == [
        (first.trace_id.to_bytes(16, "big"), first.span_id.to_bytes(8, "big"))
    ]
    assert all(s.span.parent_span_id == retry_root.span.span_id for n, s in ok.items() if n != "probe http")


@pytest.mark.parametrize("collector", ["refusing", "silent"])
async def test_dead_collector_never_slows_recording_and_drops_are_counted(
    collector: str, result_factory: ResultFactory
) -> None:
    # "refusing": nothing listens (fast failures); "silent": connections are queued by the kernel
    # but never answered, so every export hangs until its timeout.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    port = closed_port() if collector == "refusing" else silent.getsockname()[1]
    # A record that waited for the silent collector would take at least this long.
    timeout = "300ms" if collector == "refusing" else "2s"
    config = TelemetryConfig.model_validate(
        {
            "exporters": [{"type": "otlp_http", "endpoint": f"http://127.0.0.1:{port}", "timeout": timeout}],
            "queue": {"schedule_delay": "10ms", "max_queue_size": 200, "max_export_batch_size": 50},
        }
    )
    tel = Telemetry(config, vantage="eu-1", in_memory=True)
    results = [result_factory(target=f"t{i % 10}") for i in range(1200)]
    slowest = 0.0
    started = time.perf_counter()
    for result in results:
        before = time.perf_counter()
        tel.record(result)
        slowest = max(slowest, time.perf_counter() - before)
    elapsed = time.perf_counter() - started
    # Bounded per record: nothing waits for the exporter (generous slack for 2 noisy cores).
    assert elapsed < 10.0
    assert slowest < 1.0, f"one record took {slowest:.3f}s"
    (processor,) = tel.span_batchers
    # Silent: only the queue (200) and the few batches stuck in export (50 each) escape dropping.
    assert processor.dropped > (1200 * 7 - 1000 if collector == "silent" else 0)

    longest_gap = 0.0

    async def ticker() -> None:
        nonlocal longest_gap
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            longest_gap = max(longest_gap, time.perf_counter() - before)

    tick_task = asyncio.create_task(ticker())
    dropped_before = processor.dropped
    (dropped_metric,) = (
        m
        for rm in tel.collect_metrics().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == names.METRIC_EXPORT_DROPPED
    )
    assert dropped_metric.sum.is_monotonic
    by_reason = {
        attributes_dict(p.attributes)["otelprobe.export.reason"]: p for p in dropped_metric.sum.data_points
    }
    assert set(by_reason) == {"queue_full", "export_failed"}
    assert by_reason["queue_full"].as_int >= dropped_before
    assert by_reason["export_failed"].as_int <= processor.failed
    for point in by_reason.values():
        assert attributes_dict(point.attributes)["otelprobe.exporter"] == "otlp_http#0"
    shutdown_started = time.perf_counter()
    await tel.shutdown(2.0)
    shutdown_s = time.perf_counter() - shutdown_started
    await asyncio.sleep(0.02)
    tick_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tick_task
    silent.close()
    assert shutdown_s < 6.0
    # Batches taken from the queue and given up on are lost too, and counted as such.
    assert processor.failed > 0
    assert tel.dropped_by_exporter()["otlp_http#0", "export_failed"] == processor.failed
    assert longest_gap < 0.5, "shutdown must not block the event loop"
    # Every span is accounted for: handed to the (failing) exporter or counted as dropped.
    assert processor.exported + processor.dropped == 1200 * 7


async def test_prometheus_endpoint_serves_probe_metrics(result_factory: ResultFactory) -> None:
    config = TelemetryConfig.model_validate({"exporters": [{"type": "prometheus", "port": 0}]})
    tel = Telemetry(config, vantage="eu-1")
    try:
        assert tel.prometheus_address is not None
        host, port = tel.prometheus_address
        assert host == "127.0.0.1"
        tel.record(result_factory(attributes={names.PROBE_TLS_CERT_REMAINING: 3600.0}))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{host}:{port}/metrics") as response:
                assert response.status == 200
                text = await response.text()
    finally:
        await tel.shutdown(2.0)
    assert "probe_duration_seconds_bucket{" in text
    assert 'probe_phase="http.ttfb"' in text and 'probe_target="api"' in text
    assert 'otelprobe_vantage="eu-1"' in text
    assert "probe_tls_cert_remaining_seconds" in text
    assert "probe_success" in text


async def test_no_exporter_configured_exports_nothing(result_factory: ResultFactory) -> None:
    tel = Telemetry(vantage="eu-1")
    ref = tel.record(result_factory())
    assert ref.trace_id != 0
    assert tel.span_batchers == [] and tel.dropped == 0
    await tel.shutdown(1.0)
    await tel.shutdown(1.0)  # idempotent
