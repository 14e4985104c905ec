"""A dead, then a slow Collector between a real prober and Jaeger.

The prober writes every span twice: to the Collector (OTLP/gRPC) and to a local file, the ground
truth. While the Collector is dead the prober keeps its schedule, its memory stays bounded, and
the spans it cannot send are lost and counted in `otelprobe.export.dropped` (read from its
Prometheus endpoint; reason `queue_full` or `export_failed`). Only traces from around the outage
are missing in Jaeger, and traces flow again within a few seconds of the Collector's return (the
gRPC channel retries its connection at least once a second; at gRPC's default back-off it came
back ~10 s late). While the Collector is merely stalled (SIGSTOP) for less than the queue holds
and the exporter waits, nothing is lost: every trace of that time reaches Jaeger."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from otelprobe.attribution.records import read_records
from tests.support.e2e_stack import (
    CONFIG_DIR,
    Binaries,
    Collector,
    Jaeger,
    accepting_listener,
    collector_overlay,
    endpoint,
    free_port,
    prober_config,
    start_collector,
    start_jaeger,
    start_prober,
    wait_for,
)

pytestmark = pytest.mark.timeout(420)
SERVICE = "otelprobe-e2e-outage"
INTERVAL_S = 0.25
TARGETS = 4
QUEUE = 128  # spans; 4 TCP targets every 250 ms make 32 spans/s
EXPORT_TIMEOUT_S = 5.0
DEAD_S = 15.0
STALL_S = 2.0  # 64 spans: within the queue, and shorter than the exporter's timeout
RECOVERY_S = 8.0  # Collector back -> traces flow: a batch mid-retry (<= export timeout), a reconnect (<= 1 s)


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_probers_ride_out_a_dead_and_a_stalled_collector(binaries: Binaries, tmp_path: Path) -> None:
    jaeger = await start_jaeger(binaries, tmp_path)
    otlp_grpc = endpoint()
    overlay = collector_overlay(otlp_grpc, jaeger)
    config_file = CONFIG_DIR / "collector-jaeger-sidecar.yaml"
    collector: Collector | None = await start_collector(binaries, tmp_path, "collector", config_file, overlay)
    # A listening socket for the TCP probes: this test's own, always up.
    listener = await accepting_listener()
    truth_file = tmp_path / "truth.jsonl"
    metrics_port = free_port()
    targets = [
        {"name": f"out-{i}", "kind": "tcp", "address": f"127.0.0.1:{listener.sockets[0].getsockname()[1]}"}
        for i in range(TARGETS)
    ]
    config = prober_config(
        otlp_grpc,
        targets,
        vantage="e2e-outage",
        service=SERVICE,
        interval=f"{int(INTERVAL_S * 1000)}ms",
        timeout="200ms",
        exporters=[
            {
                "type": "otlp_grpc",
                "endpoint": otlp_grpc,
                "insecure": True,
                "timeout": f"{EXPORT_TIMEOUT_S:g}s",
            },
            {"type": "file", "path": str(truth_file)},
            {"type": "prometheus", "host": "127.0.0.1", "port": metrics_port},
        ],
        extra_telemetry={
            "queue": {"max_queue_size": QUEUE, "max_export_batch_size": 32, "schedule_delay": "200ms"}
        },
    )
    prober = await start_prober(tmp_path, "prober", config)

    async def scrape() -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
        ):
            return await response.text()

    async def probes_run() -> float:
        return _sample(await scrape(), "probe_duration_seconds_count", probe_phase="total")

    try:
        await wait_for(lambda: _ready(jaeger), 60, "the first traces in Jaeger", 0.5)
        rss_before = _rss_kib(prober.process.pid)

        # --- dead: the Collector is gone for DEAD_S ---
        assert collector is not None
        await collector.stop()
        collector = None
        dead_start = time.time_ns()
        count_at_death = await probes_run()
        started = time.monotonic()
        rss_peak = rss_before
        while time.monotonic() - started < DEAD_S:
            rss_peak = max(rss_peak, _rss_kib(prober.process.pid))
            await asyncio.sleep(0.5)
        dead_elapsed = time.monotonic() - started
        probed_while_dead = await probes_run() - count_at_death
        dropped = _sample(await scrape(), "otelprobe_export_dropped_total")
        collector = await start_collector(binaries, tmp_path, "collector-again", config_file, overlay)
        dead_end = time.time_ns()

        # The schedule held: at least 80 % of the probes due ran while nothing could be exported.
        due = dead_elapsed / INTERVAL_S * TARGETS
        assert probed_while_dead >= 0.8 * due, (probed_while_dead, due)
        assert dropped > 0, "a full export queue drops and counts"
        assert rss_peak - rss_before < 40 * 1024, f"RSS grew {rss_peak - rss_before} KiB during the outage"

        # Recovered: new traces flow again.
        after = time.time_ns()
        await wait_for(lambda: _has_trace_after(jaeger, after), 60, "traces after the restart", 0.5)
        recovered = time.time_ns()
        assert recovered - dead_end < RECOVERY_S * 1e9, (
            f"traces resumed {(recovered - dead_end) / 1e9:.1f}s late"
        )

        # Batches that failed while the channel reconnected are over after the export timeout:
        # start the stall after that, so that its traces are told apart from the outage's.
        await asyncio.sleep(EXPORT_TIMEOUT_S + 2)

        # --- stalled: SIGSTOP for STALL_S, within the queue's bound ---
        dropped_before_stall = _sample(await scrape(), "otelprobe_export_dropped_total")
        stall_start = time.time_ns()
        collector.proc.pause()
        await asyncio.sleep(STALL_S)
        collector.proc.resume()
        stall_end = time.time_ns()
        await asyncio.sleep(3.0)
        assert _sample(await scrape(), "otelprobe_export_dropped_total") == dropped_before_stall
    finally:
        assert await prober.stop() == 0, prober.text()[-3000:]
        if collector is not None:
            await collector.stop()
        listener.close()

    try:
        truth, _ = read_records(truth_file)
        truth_starts = dict(zip(truth.trace_id, truth.start_ns, strict=True))
        # The probes themselves succeed (their target is always up); a rare deadline miss on a
        # loaded machine is no concern of this test.
        assert truth.success.mean() >= 0.95, truth.error_type.value_counts()

        async def in_jaeger() -> set[str]:
            return {t.trace_id for t in await jaeger.find_traces(SERVICE, limit=100000)}

        # Everything the final flush sent has landed once Jaeger's count stops moving.
        seen: set[str] = set()
        for _ in range(20):
            now = await in_jaeger()
            if now == seen:
                break
            seen = now
            await asyncio.sleep(1.0)
        lost = set(truth_starts) - seen
        assert lost, "a 15 s outage with a 128-span queue must lose something"
        margin = int((EXPORT_TIMEOUT_S + 2) * 1e9)  # a batch taken before the outage fails in it
        outside = sorted(
            (truth_starts[t] - dead_start) / 1e9
            for t in lost
            if not dead_start - margin <= truth_starts[t] <= recovered + int(2e9)
        )
        assert not outside, (
            f"{len(outside)} traces lost outside the outage, started at {outside[:8]} s from its start;"
            f" the Collector was back at {(dead_end - dead_start) / 1e9:.1f} s, traces flowed at"
            f" {(recovered - dead_start) / 1e9:.1f} s"
        )
        print(
            f"outage: {len(truth)} probes, {probed_while_dead:.0f} run while dead ({due:.0f} due),"
            f" {dropped:.0f} spans dropped and counted by then, {len(lost)} traces missing in Jaeger,"
            f" RSS +{(rss_peak - rss_before) / 1024:.1f} MiB; traces flowed again"
            f" {(recovered - dead_end) / 1e9:.1f} s after the Collector was back"
        )
        stalled = [t for t, start in truth_starts.items() if stall_start - 1e9 <= start <= stall_end + 1e9]
        missing = sorted((truth_starts[t] - stall_start) / 1e9 for t in set(stalled) - seen)
        assert stalled and not missing, (
            f"a stall within the queue's bound loses nothing; {len(missing)} of {len(stalled)} missing,"
            f" started at {missing[:5]}..{missing[-5:]} s from the stall; dead ended"
            f" {(dead_end - stall_start) / 1e9:.1f} s from it"
        )
    finally:
        await jaeger.stop()


async def _ready(jaeger: Jaeger) -> bool:
    return bool(await jaeger.find_traces(SERVICE, lookback_s=600))


async def _has_trace_after(jaeger: Jaeger, after_ns: int) -> bool:
    return any(t.root.start_ns > after_ns for t in await jaeger.find_traces(SERVICE, lookback_s=120))
