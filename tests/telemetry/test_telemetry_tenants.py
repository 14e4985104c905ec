"""`otelprobe.tenant` on the spans and metrics of a tenant's targets, and nowhere without tenants."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from otelprobe import names
from otelprobe.results import ProbeResult
from otelprobe.telemetry.pipeline import Telemetry

ResultFactory = Callable[..., ProbeResult]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    tel = Telemetry(vantage="eu-1", instance_id="prober-7", in_memory=True)
    yield tel
    tel.shutdown_sync(1.0)


def _series(tel: Telemetry, name: str) -> list[dict[str, Any]]:
    found = []
    for rm in tel.collect_metrics().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    data = getattr(metric, metric.WhichOneof("data"))
                    found += [
                        {kv.key: kv.value.string_value for kv in p.attributes} for p in data.data_points
                    ]
    return found


def test_every_span_and_series_of_a_tenant_target_carries_its_tenant(
    telemetry: Telemetry, result_factory: ResultFactory
) -> None:
    telemetry.set_target_tenants({"api": "payments"})
    telemetry.record(result_factory(target="api"))
    telemetry.record(result_factory(target="other"))
    assert telemetry.span_exporter is not None
    spans = telemetry.span_exporter.get_finished_spans()
    api = [s for s in spans if s.attributes[names.PROBE_TARGET] == "api"]
    other = [s for s in spans if s.attributes[names.PROBE_TARGET] == "other"]
    assert len(api) > 1 and all(s.attributes[names.OTELPROBE_TENANT] == "payments" for s in api)
    assert other and all(names.OTELPROBE_TENANT not in s.attributes for s in other)
    durations = _series(telemetry, names.METRIC_PROBE_DURATION)
    assert {d.get(names.OTELPROBE_TENANT) for d in durations if d[names.PROBE_TARGET] == "api"} == {
        "payments"
    }
    assert all(names.OTELPROBE_TENANT not in d for d in durations if d[names.PROBE_TARGET] == "other")


def test_without_tenants_nothing_changes(telemetry: Telemetry, result_factory: ResultFactory) -> None:
    telemetry.set_target_tenants({"api": "payments"})
    telemetry.set_target_tenants({})
    telemetry.record(result_factory(target="api"))
    assert telemetry.span_exporter is not None
    assert all(
        names.OTELPROBE_TENANT not in s.attributes for s in telemetry.span_exporter.get_finished_spans()
    )
    assert all(names.OTELPROBE_TENANT not in d for d in _series(telemetry, names.METRIC_PROBE_DURATION))


def test_the_schedulers_tenant_counters_are_exported(telemetry: Telemetry) -> None:
    values = {
        "started": 5,
        "delayed": 3,
        "throttled": 2,
        "skipped": 1,
        "shed": 0,
        "in_flight": 2,
        "limit": 4,
        "circuit_open": 0,
    }
    telemetry.observe_tenants(lambda: [("payments", values)])
    for what in values:
        (series,) = _series(telemetry, f"otelprobe.tenant.{what}")
        assert series == {names.OTELPROBE_TENANT: "payments"}
