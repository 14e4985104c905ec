"""ProbeResult -> metrics: phase histograms, success gauge, certificate and ICMP gauges, semconv ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import HistogramDataPoint, NumberDataPoint

from otelprobe import names
from otelprobe.errors import DNSError, HTTPStatusError
from otelprobe.results import ProbeResult
from otelprobe.sidecar.receiver import attributes_dict
from otelprobe.telemetry.metrics import LATENCY_BUCKETS_S
from otelprobe.telemetry.pipeline import Telemetry

ResultFactory = Callable[..., ProbeResult]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    tel = Telemetry(vantage="eu-1", in_memory=True)
    yield tel
    tel.shutdown_sync(1.0)


class Point:
    """One exported data point with its attributes as a dict."""

    def __init__(self, point: HistogramDataPoint | NumberDataPoint) -> None:
        self.point = point
        self.attributes = attributes_dict(point.attributes)

    def __getattr__(self, name: str) -> Any:
        if name == "value":
            assert isinstance(self.point, NumberDataPoint)
            return getattr(self.point, self.point.WhichOneof("value") or "as_int")
        return getattr(self.point, name)


def points(tel: Telemetry, metric: str) -> list[Point]:
    found: list[Point] = []
    for rm in tel.collect_metrics().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == metric:
                    data = getattr(m, m.WhichOneof("data") or "gauge")
                    found.extend(Point(p) for p in data.data_points)
    return found


def by_phase(tel: Telemetry) -> dict[str, Point]:
    return {str(p.attributes[names.PROBE_PHASE]): p for p in points(tel, names.METRIC_PROBE_DURATION)}


def test_probe_duration_has_one_observation_per_phase_and_total(
    telemetry: Telemetry, result_factory: ResultFactory
) -> None:
    telemetry.record(result_factory())

    phases = by_phase(telemetry)
    assert set(phases) == {*names.HTTP_PHASES, "total"}
    ttfb = phases[names.SPAN_HTTP_TTFB]
    assert ttfb.count == 1
    assert ttfb.sum == pytest.approx(0.0115)
    assert tuple(ttfb.explicit_bounds) == LATENCY_BUCKETS_S
    assert ttfb.attributes == {
        names.PROBE_KIND: "http",
        names.PROBE_TARGET: "api",
        names.OTELPROBE_VANTAGE: "eu-1",
        names.PROBE_PHASE: names.SPAN_HTTP_TTFB,
    }
    assert phases["total"].sum == pytest.approx(0.025)


def test_buckets_separate_millisecond_latencies(telemetry: Telemetry, result_factory: ResultFactory) -> None:
    for ttfb_ms in (0.7, 3.0, 40.0, 900.0, 9000.0):
        telemetry.record(result_factory(phases=((names.SPAN_HTTP_TTFB, 0.0, ttfb_ms),)))
    ttfb = by_phase(telemetry)[names.SPAN_HTTP_TTFB]
    assert ttfb.count == 5
    assert sum(1 for c in ttfb.bucket_counts if c) == 5, "each latency lands in its own bucket"


def test_success_gauge_follows_the_latest_attempt_and_failures_are_counted_by_error_type(
    telemetry: Telemetry, result_factory: ResultFactory
) -> None:
    telemetry.record(result_factory())
    (ok,) = points(telemetry, names.METRIC_PROBE_SUCCESS)
    assert ok.value == 1

    telemetry.record(result_factory(error=HTTPStatusError("status_503")))
    (failed,) = points(telemetry, names.METRIC_PROBE_SUCCESS)
    assert failed.value == 0
    totals = [
        p for p in points(telemetry, names.METRIC_PROBE_DURATION) if p.attributes["probe.phase"] == "total"
    ]
    outcomes = {p.attributes.get(names.ERROR_TYPE): p.count for p in totals}
    assert outcomes == {None: 1, "http_status": 1}


def test_http_and_dns_semconv_histograms(telemetry: Telemetry, result_factory: ResultFactory) -> None:
    telemetry.record(
        result_factory(
            attributes={
                names.HTTP_REQUEST_METHOD: "GET",
                names.HTTP_RESPONSE_STATUS_CODE: 503,
                names.SERVER_ADDRESS: "api.test",
                names.SERVER_PORT: 443,
                names.URL_FULL: "https://api.test/health",
            },
            phase_attributes={names.SPAN_DNS_LOOKUP: {names.DNS_QUESTION_NAME: "api.test"}},
            error=HTTPStatusError("status_503"),
        )
    )
    (http,) = points(telemetry, names.METRIC_HTTP_CLIENT_DURATION)
    assert http.attributes == {
        names.HTTP_REQUEST_METHOD: "GET",
        names.HTTP_RESPONSE_STATUS_CODE: 503,
        names.SERVER_ADDRESS: "api.test",
        names.SERVER_PORT: 443,
        names.ERROR_TYPE: "http_status",
    }
    assert http.sum == pytest.approx(0.025)
    (dns,) = points(telemetry, names.METRIC_DNS_LOOKUP_DURATION)
    assert dns.attributes == {names.DNS_QUESTION_NAME: "api.test"}
    assert dns.sum == pytest.approx(0.001)


def test_failed_dns_lookup_carries_error_type(telemetry: Telemetry, result_factory: ResultFactory) -> None:
    error = DNSError("nxdomain")
    telemetry.record(
        result_factory(
            kind="dns",
            phases=((names.SPAN_DNS_LOOKUP, 0, 2),),
            failed_phase=names.SPAN_DNS_LOOKUP,
            error=error,
            attributes={names.DNS_QUESTION_NAME: "missing.test"},
        )
    )
    (dns,) = points(telemetry, names.METRIC_DNS_LOOKUP_DURATION)
    assert dns.attributes == {names.DNS_QUESTION_NAME: "missing.test", names.ERROR_TYPE: "dns_error"}
    assert points(telemetry, names.METRIC_HTTP_CLIENT_DURATION) == []


def test_certificate_and_icmp_gauges(telemetry: Telemetry, result_factory: ResultFactory) -> None:
    telemetry.record(result_factory(kind="tls", attributes={names.PROBE_TLS_CERT_REMAINING: 86400.0 * 30}))
    telemetry.record(
        result_factory(
            kind="icmp",
            target="gw",
            phases=((names.SPAN_ICMP_ECHO, 0, 1),),
            attributes={names.PROBE_ICMP_LOSS_RATIO: 0.25, names.PROBE_ICMP_RTT_AVG: 0.0012},
        )
    )
    (cert,) = points(telemetry, names.METRIC_TLS_CERT_REMAINING)
    assert cert.value == 86400.0 * 30 and cert.attributes[names.PROBE_KIND] == "tls"
    (loss,) = points(telemetry, names.PROBE_ICMP_LOSS_RATIO)
    assert loss.value == 0.25 and loss.attributes[names.PROBE_TARGET] == "gw"
    (rtt,) = points(telemetry, names.PROBE_ICMP_RTT_AVG)
    assert rtt.value == 0.0012
    assert points(telemetry, names.PROBE_ICMP_RTT_MAX) == []
