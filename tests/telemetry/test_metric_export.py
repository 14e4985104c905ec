"""The metric path: OTLP metrics over HTTP and gRPC into a receiver, request splitting, Prometheus
text, and an export of many series that does not hold the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from otelprobe import names
from otelprobe.config.telemetry import TelemetryConfig
from otelprobe.errors import HTTPStatusError
from otelprobe.results import ProbeResult
from otelprobe.sidecar.receiver import OTLPReceiver, attributes_dict
from otelprobe.telemetry.aggregation import MetricStore
from otelprobe.telemetry.metrics import LATENCY_BUCKETS_S, ProbeMetrics
from otelprobe.telemetry.metrics_otlp import MetricEncoder
from otelprobe.telemetry.pipeline import Telemetry

ResultFactory = Callable[..., ProbeResult]


@pytest.fixture
async def received() -> AsyncIterator[tuple[OTLPReceiver, list[ExportMetricsServiceRequest]]]:
    requests: list[ExportMetricsServiceRequest] = []
    async with OTLPReceiver(on_metrics=requests.append) as rcv:
        yield rcv, requests


def metrics_of(requests: list[ExportMetricsServiceRequest], name: str) -> list[Metric]:
    return [
        m
        for r in requests
        for rm in r.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
    ]


def ttfb_point(metric: Metric) -> Any:
    (point,) = (
        p
        for p in metric.histogram.data_points
        if attributes_dict(p.attributes)[names.PROBE_PHASE] == "http.ttfb"
    )
    return point


@pytest.mark.parametrize("transport", ["otlp_http", "otlp_grpc"])
async def test_cumulative_histograms_arrive_over_otlp(
    transport: str,
    received: tuple[OTLPReceiver, list[ExportMetricsServiceRequest]],
    result_factory: ResultFactory,
) -> None:
    receiver, requests = received
    exporter: dict[str, Any] = {"type": transport, "timeout": "2s"}
    if transport == "otlp_http":
        exporter["endpoint"] = receiver.http_endpoint
    else:
        exporter.update(endpoint=receiver.grpc_endpoint, insecure=True)
    config = TelemetryConfig.model_validate({"exporters": [exporter], "metric_export_interval": "1h"})
    tel = Telemetry(config, vantage="eu-1", instance_id="p-1")
    try:
        tel.record(result_factory(phases=((names.SPAN_HTTP_TTFB, 0.0, 3.0),)))
        assert await tel.flush(5.0)
        tel.record(
            result_factory(phases=((names.SPAN_HTTP_TTFB, 0.0, 40.0),), error=HTTPStatusError("status_503"))
        )
        assert await tel.flush(5.0)
    finally:
        await tel.shutdown(2.0)

    assert len(requests) >= 2
    first, second = requests[0], requests[1]
    resource = attributes_dict(first.resource_metrics[0].resource.attributes)
    assert resource[names.SERVICE_INSTANCE_ID] == "p-1" and resource[names.OTELPROBE_VANTAGE] == "eu-1"
    assert first.resource_metrics[0].scope_metrics[0].scope.name == "otelprobe"

    (duration1,) = metrics_of([first], names.METRIC_PROBE_DURATION)
    assert duration1.unit == "s"
    assert (
        duration1.histogram.aggregation_temporality
        == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    )
    point1 = ttfb_point(duration1)
    assert point1.count == 1 and point1.sum == pytest.approx(0.003)
    assert tuple(point1.explicit_bounds) == LATENCY_BUCKETS_S
    assert list(point1.bucket_counts) == [0, 0, 0, 1] + [0] * 14  # 3 ms: (2.5 ms, 5 ms]
    assert point1.min == pytest.approx(0.003) and point1.max == pytest.approx(0.003)
    assert attributes_dict(point1.attributes) == {
        names.PROBE_KIND: "http",
        names.PROBE_TARGET: "api",
        names.OTELPROBE_VANTAGE: "eu-1",
        names.PROBE_PHASE: "http.ttfb",
    }

    # Cumulative: the second export carries both observations, from the same start time.
    point2 = ttfb_point(metrics_of([second], names.METRIC_PROBE_DURATION)[0])
    assert point2.count == 2 and point2.sum == pytest.approx(0.043)
    assert point2.start_time_unix_nano == point1.start_time_unix_nano < point2.time_unix_nano
    assert point2.max == pytest.approx(0.040)
    totals = {
        attributes_dict(p.attributes).get(names.ERROR_TYPE): p.count
        for p in metrics_of([second], names.METRIC_PROBE_DURATION)[0].histogram.data_points
        if attributes_dict(p.attributes)[names.PROBE_PHASE] == "total"
    }
    assert totals == {None: 1, "http_status": 1}
    (success,) = metrics_of([second], names.METRIC_PROBE_SUCCESS)
    assert [p.as_int for p in success.gauge.data_points] == [0]
    (dropped,) = metrics_of([second], names.METRIC_EXPORT_DROPPED)
    assert dropped.sum.is_monotonic and dropped.sum.data_points[0].as_int == 0


def test_requests_are_split_at_max_points(result_factory: ResultFactory) -> None:
    store = MetricStore()
    metrics = ProbeMetrics(store, "eu-1")
    for i in range(10):
        metrics.record(result_factory(target=f"t{i}"))
    tel = Telemetry(vantage="eu-1")
    encoder = MetricEncoder(store, tel._resource_proto, tel._scope, max_points=7)
    bodies = list(encoder.requests(pause=False))
    parsed = [ExportMetricsServiceRequest.FromString(b) for b in bodies]
    counts = [
        sum(
            len(getattr(m, m.WhichOneof("data") or "gauge").data_points)
            for m in r.resource_metrics[0].scope_metrics[0].metrics
        )
        for r in parsed
    ]
    # 10 targets x 7 duration series + 10 success gauges; http.client and dns.lookup: 1 series each.
    assert sum(counts) == 70 + 10 + 1 + 1
    assert counts == [7] * 11 + [5]
    whole = MetricEncoder(store, tel._resource_proto, tel._scope).collect()
    assert sum(len(m.histogram.data_points) for m in whole.resource_metrics[0].scope_metrics[0].metrics) == 72


async def test_prometheus_scrape_renders_cumulative_buckets(result_factory: ResultFactory) -> None:
    config = TelemetryConfig.model_validate({"exporters": [{"type": "prometheus", "port": 0}]})
    tel = Telemetry(config, vantage="eu-1")
    try:
        assert tel.prometheus_address is not None
        host, port = tel.prometheus_address
        tel.record(result_factory(target='we"ird', phases=((names.SPAN_HTTP_TTFB, 0.0, 3.0),)))
        tel.record(result_factory(target='we"ird', phases=((names.SPAN_HTTP_TTFB, 0.0, 40.0),)))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{host}:{port}/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await response.text()
    finally:
        await tel.shutdown(2.0)
    labels = (
        'otel_scope_name="otelprobe",otel_scope_version="0.1.0",otelprobe_vantage="eu-1",'
        'probe_kind="http",probe_phase="http.ttfb",probe_target="we\\"ird"'
    )
    lines = set(text.splitlines())
    assert f'probe_duration_seconds_bucket{{{labels},le="0.0025"}} 0' in lines
    assert f'probe_duration_seconds_bucket{{{labels},le="0.005"}} 1' in lines
    assert f'probe_duration_seconds_bucket{{{labels},le="0.05"}} 2' in lines
    assert f'probe_duration_seconds_bucket{{{labels},le="+Inf"}} 2' in lines
    assert f"probe_duration_seconds_count{{{labels}}} 2" in lines
    assert "# TYPE probe_duration_seconds histogram" in lines
    assert "# TYPE probe_success gauge" in lines
    assert any(line.startswith("target_info{") and 'service_name="otelprobe"' in line for line in lines)


async def test_export_of_many_series_does_not_hold_the_event_loop(result_factory: ResultFactory) -> None:
    # 4,000 targets x 8 series: the SDK took ~0.1 s per 10k series with the GIL held.
    store = MetricStore()
    metrics = ProbeMetrics(store, "eu-1")
    template = [result_factory(target=f"target-{i:05d}") for i in range(4000)]
    for result in template:
        metrics.record(result)
    tel = Telemetry(vantage="eu-1")
    encoder = MetricEncoder(store, tel._resource_proto, tel._scope)
    longest_gap = 0.0

    async def ticker() -> None:
        nonlocal longest_gap
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            longest_gap = max(longest_gap, time.perf_counter() - before)

    del template
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    # What is measured is the exporter's hold on the GIL, not this test process's own GC passes
    # (a whole test session's heap makes them long).
    gc.disable()
    try:
        started = time.perf_counter()
        size = await asyncio.to_thread(lambda: sum(len(b) for b in encoder.requests()))
        elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await tel.shutdown(1.0)
    assert size > 4000 * 7 * 200
    assert elapsed < 30.0  # paced to a quarter of a core
    # Generous for 2 noisy shared cores; a held loop would show the whole encode time (~0.1-0.5 s).
    assert longest_gap < 0.05, f"loop held for {longest_gap * 1000:.1f} ms (export took {elapsed:.3f} s)"


def test_series_beyond_the_limit_fold_into_one_overflow_series(result_factory: ResultFactory) -> None:
    store = MetricStore(max_series=3)
    metrics = ProbeMetrics(store, "eu-1")
    for target in ("a", "b", "c", "d", "e"):
        metrics.record(result_factory(target=target, phases=((names.SPAN_HTTP_TTFB, 0.0, 3.0),)))
    tel = Telemetry(vantage="eu-1")
    request = MetricEncoder(store, tel._resource_proto, tel._scope).collect()
    (duration,) = metrics_of([request], names.METRIC_PROBE_DURATION)
    by_attrs = {
        tuple(sorted(attributes_dict(p.attributes).items())): p.count for p in duration.histogram.data_points
    }
    assert len(by_attrs) == 4
    # 5 targets x 2 series (ttfb, total): 3 kept, the other 7 observations counted in the overflow.
    assert by_attrs[(("otel.metric.overflow", True),)] == 7
    assert sum(by_attrs.values()) == 10
