"""Two tenants on real HTTP probes: hundreds of targets on a hanging server, a few on a healthy one.

The scheduler runs with a global bound well below what the hanging tenant asks for. The small
tenant must keep every run and every success while the big one is throttled and shed; checked
on the scheduler's counters, on the spans, and on what each lab server saw (wall-clock lateness
is left to bench/tenants.py: the box is shared).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from otelprobe.config import load_text
from otelprobe.lab.servers.http import HTTPFaultServer
from otelprobe.scheduling.runtime import default_probe_factory
from otelprobe.scheduling.scheduler import Scheduler
from otelprobe.scheduling.tenancy import tenancy_of
from otelprobe.scheduling.tenant_circuit import CircuitState
from otelprobe.telemetry.pipeline import Telemetry
from tests.support.tenant_scheduler import tenant_scheduler

BIG_TARGETS = 200
SMALL_TARGETS = 3
RUN_S = 4.0


@pytest.fixture
async def servers() -> AsyncIterator[tuple[HTTPFaultServer, HTTPFaultServer]]:
    hanging, healthy = HTTPFaultServer(max_hang_s=30), HTTPFaultServer()
    await hanging.start()
    await healthy.start()
    try:
        yield hanging, healthy
    finally:
        await hanging.aclose()
        await healthy.aclose()


def _config(hanging: HTTPFaultServer, healthy: HTTPFaultServer) -> str:
    lines = [
        "concurrency: 24",
        "scheduler:",
        "  circuit: {min_attempts: 20, window: 10s, open_for: 30s, shed_to: 0.25}",
        "tenants:",
        "  big: {concurrency: 16, rate: 200, weight: 1}",
        "  small: {weight: 4}",
        "targets:",
    ]
    for i in range(BIG_TARGETS):
        lines.append(
            f"  - {{name: big-{i}, kind: http, url: 'http://127.0.0.1:{hanging.port}/?hang=1&t={i}',"
            " interval: 1s, timeout: 400ms, jitter: 0s, labels: {tenant: big}}"
        )
    for i in range(SMALL_TARGETS):
        lines.append(
            f"  - {{name: small-{i}, kind: http, url: 'http://127.0.0.1:{healthy.port}/?t={i}',"
            " interval: 500ms, timeout: 200ms, jitter: 0s, labels: {tenant: small}}"
        )
    return "\n".join(lines) + "\n"


async def test_a_hanging_tenant_is_throttled_and_shed_while_the_small_one_keeps_every_run(
    servers: tuple[HTTPFaultServer, HTTPFaultServer],
) -> None:
    hanging, healthy = servers
    config = load_text(_config(hanging, healthy))
    telemetry = Telemetry(vantage="test", in_memory=True)
    scheduler = tenant_scheduler(config, telemetry)
    try:
        await scheduler.apply(config.targets)
        await asyncio.sleep(RUN_S)
    finally:
        await scheduler.aclose(grace_s=1.0)
        await telemetry.shutdown()
    metrics = _metric_points(telemetry)
    gate = scheduler.gate
    assert gate is not None
    big, small = gate.tenants["big"], gate.tenants["small"]

    # The small tenant: no attempt ever waited at the gate (big holds at most 16 of the 24 slots),
    # none was throttled or shed, every attempt succeeded and the healthy server saw each one. A
    # skip could only come from a stall of this shared machine longer than interval - timeout
    # (the previous run still going), so a few are tolerated.
    expected_runs = SMALL_TARGETS * RUN_S / 0.5
    assert small.started >= 0.7 * expected_runs, (small.started, expected_runs)
    assert (small.delayed, small.throttled, small.shed) == (0, 0, 0)
    assert small.skipped <= 1 + 0.05 * small.started
    assert healthy.statuses[200] == small.started
    spans: list[Any] = telemetry.span_exporter.get_finished_spans() if telemetry.span_exporter else []
    small_roots = [
        s for s in spans if s.name == "probe http" and s.attributes["probe.target"].startswith("small")
    ]
    assert small_roots and all(s.attributes["probe.success"] for s in small_roots)

    # The big tenant: held to its quota, then its circuit opened and shed its load.
    assert big.throttled > 0
    assert big.skipped + big.shed > BIG_TARGETS  # most of its runs could not start in time
    assert big.circuit.opened >= 1 and big.circuit.state is not CircuitState.CLOSED
    assert big.shed > 0
    # The hanging server saw no more requests than the tenant was allowed to start.
    assert 0 < hanging.statuses[0] <= big.started
    assert big.started < 16 * RUN_S / 0.4 + 16  # concurrency 16, each slot held ~400 ms
    assert scheduler.stats.skipped_runs == big.skipped + big.shed

    # Telemetry: the tenant on every span and every probe metric of its targets, and its counters.
    assert spans and all(s.attributes.get("otelprobe.tenant") in ("big", "small") for s in spans)
    phases = [s for s in spans if not s.name.startswith("probe ")]
    assert phases and all(
        s.attributes["otelprobe.tenant"] == s.attributes["probe.target"].split("-")[0] for s in phases
    )
    durations = metrics["probe.duration"]
    assert durations and all(attrs["otelprobe.tenant"] in ("big", "small") for attrs, _ in durations)
    counters = {name: dict((a["otelprobe.tenant"], v) for a, v in points) for name, points in metrics.items()}
    assert counters["otelprobe.tenant.shed"]["big"] == big.shed > 0
    assert counters["otelprobe.tenant.throttled"]["small"] == 0
    assert counters["otelprobe.tenant.started"]["small"] == small.started
    assert counters["otelprobe.tenant.circuit_open"] == {"big": 1, "small": 0}
    assert counters["otelprobe.tenant.limit"]["big"] == 4  # 16 x shed_to 0.25


def _metric_points(telemetry: Telemetry) -> dict[str, list[tuple[dict[str, Any], float]]]:
    """name -> [(attributes, value or histogram count)] from the OTLP request the exporters would send."""
    out: dict[str, list[tuple[dict[str, Any], float]]] = {}
    for rm in telemetry.collect_metrics().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                for point in getattr(metric, kind).data_points:
                    attrs = {kv.key: kv.value.string_value for kv in point.attributes}
                    value = point.count if kind == "histogram" else (point.as_int or point.as_double)
                    out.setdefault(metric.name, []).append((attrs, value))
    return out


async def test_without_tenants_every_target_shares_one_bound(
    servers: tuple[HTTPFaultServer, HTTPFaultServer],
) -> None:
    hanging, healthy = servers
    text = _config(hanging, healthy)
    config = load_text(text.split("scheduler:")[0] + "targets:" + text.split("targets:")[1])
    assert config.tenants is None and tenancy_of(config) is None
    scheduler = Scheduler(Telemetry(vantage="test"), default_probe_factory, concurrency=config.concurrency)
    try:
        await scheduler.apply(config.targets)
        assert scheduler.gate is None
        await asyncio.sleep(1.5)
    finally:
        await scheduler.aclose(grace_s=1.0)
    # The semaphore alone: the hanging targets fill the bound, and the small ones wait behind them.
    assert hanging.statuses[0] > 0
    assert scheduler.stats.lateness.max_s > 0.1
