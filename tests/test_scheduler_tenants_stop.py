"""A stop with tenants: runs waiting at the fair gate are dropped at once, as runs waiting for the
plain semaphore are; the capacity that in-flight probes free during the grace starts nobody.
Real HTTP probes against a lab server that hangs."""

from __future__ import annotations

import asyncio
import time

from otelprobe.config import load_text
from otelprobe.lab.servers.http import HTTPFaultServer
from otelprobe.telemetry.pipeline import Telemetry
from tests.support.tenant_scheduler import tenant_scheduler

TARGETS = 12
CONCURRENCY = 2


def _config(port: int) -> str:
    lines = ["concurrency: 2", "tenants:", "  fleet: {weight: 1}", "targets:"]
    for i in range(TARGETS):
        lines.append(
            f"  - {{name: t-{i}, kind: http, url: 'http://127.0.0.1:{port}/?hang=1&t={i}',"
            " interval: 2s, timeout: 1500ms, jitter: 0s, labels: {tenant: fleet}}"
        )
    return "\n".join(lines) + "\n"


async def test_a_stop_starts_none_of_the_runs_queued_at_the_gate() -> None:
    server = HTTPFaultServer(max_hang_s=30)
    await server.start()
    telemetry = Telemetry(vantage="test", in_memory=True)
    config = load_text(_config(server.port))
    scheduler = tenant_scheduler(config, telemetry)
    try:
        await scheduler.apply(config.targets)
        gate = scheduler.gate
        assert gate is not None
        fleet = gate.tenants["fleet"]
        # First runs spread over the interval: two in flight (hanging until their 1.5 s timeout)
        # and the next ones queue at the gate.
        deadline = time.monotonic() + 5
        while fleet.waiting < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        queued, attempts, skipped = fleet.waiting, scheduler.stats.attempts, scheduler.stats.skipped_runs
        assert queued >= 3 and attempts == CONCURRENCY
        started = time.monotonic()
        # The grace outlasts the in-flight probes: before, each slot they freed started a queued run.
        await scheduler.aclose(grace_s=3.0)
        took = time.monotonic() - started
    finally:
        await scheduler.aclose()
        await telemetry.shutdown()
        await server.aclose()
    assert scheduler.stats.attempts == fleet.started == CONCURRENCY
    assert server.statuses[0] == CONCURRENCY  # the hanging server saw only the two in flight
    assert scheduler.stats.skipped_runs - skipped >= queued  # dropped, counted as not started
    assert scheduler.stats.skipped_runs == fleet.skipped
    assert took < 2.5, took  # the in-flight probes' timeout, not the grace, nor more probes
