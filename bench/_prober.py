"""One otelprobe prober process for the benchmarks: the real Scheduler, HTTPProbe and Telemetry.

Started by cost.py and scale.py, which read this process's CPU from /proc/<pid>/stat. It probes
`--targets` copies of one URL, each target on `--interval`, so the scheduler itself produces
targets / interval probes per second, spread over the interval as in production. Spans and metrics
go over OTLP to the sink process. Protocol on stdout (JSON lines): {"event": "warm"} when the
warm-up is over, {"event": "end"} when the measured window is over, then {"event": "summary", ...}
with what happened in the window. The parent reads the CPU counters when it sees each marker.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
import time
from pathlib import Path

from otelprobe.config.telemetry import TelemetryConfig
from otelprobe.net.kernel_time import hold_rx_timestamping
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.probes.http.probe import HTTPProbe
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.scheduling.runtime import settle_long_lived
from otelprobe.scheduling.scheduler import Scheduler
from otelprobe.targets import parse_shard, worker_of
from otelprobe.telemetry.pipeline import Telemetry


class WindowSink:
    """Records into Telemetry and remembers the outcome of each result finished in the window."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.measuring = False
        self.durations: list[float] = []
        self.failures: dict[str, int] = {}
        self.total = 0
        self.negative_phases: dict[str, int] = {}

    def record(self, result: ProbeResult, link: TraceRef | None) -> TraceRef | None:
        ref = self.telemetry.record(result, link)
        self.total += 1
        for phase in result.phases:
            if phase.end_ns < phase.start_ns:
                self.negative_phases[phase.name] = self.negative_phases.get(phase.name, 0) + 1
        if self.measuring:
            self.durations.append(result.duration_s)
            if result.error is not None:
                key = f"{result.error.error_type}/{result.error.detail}"
                self.failures[key] = self.failures.get(key, 0) + 1
        return ref


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def main(args: argparse.Namespace) -> None:
    exporters: list[dict[str, object]] = []
    if args.exporter == "prometheus":
        # Experiment: metrics aggregated (scrapable) but no span export.
        exporters.append({"type": "prometheus", "port": 0})
    elif args.exporter != "none":
        exporter: dict[str, object] = {
            "type": args.exporter,
            "endpoint": args.endpoint,
            "compression": args.compression,
        }
        if args.exporter == "otlp_grpc":
            exporter["insecure"] = True
        exporters.append(exporter)
    telemetry_config = TelemetryConfig.model_validate(
        {"exporters": exporters, "metric_export_interval": f"{args.metric_interval}s"}
    )
    telemetry = Telemetry(telemetry_config, vantage="bench")
    sink = WindowSink(telemetry)
    tls = {"ca_file": args.ca} if args.ca else {}
    configs = [
        HTTPProbeConfig.model_validate(
            {
                "name": f"target-{i:05d}",
                "url": args.url,
                "interval": f"{args.interval}s",
                "timeout": f"{args.timeout}s",
                "tls": tls,
                "http_version": "1.1",
            }
        )
        for i in range(args.targets)
    ]
    if args.worker:
        # One of `otelprobe run --workers N`'s processes: its share, by the same hashing.
        worker = parse_shard(args.worker)
        configs = [c for c in configs if worker_of(c.name, worker.count) == worker.index]
    scheduler = Scheduler(
        sink,
        lambda config, ctx: HTTPProbe(config, ctx),  # type: ignore[arg-type]
        ProbeContext(vantage="bench"),
        concurrency=args.concurrency,
    )
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold, 50, 100)
    hold_rx_timestamping(wait_s=0.1)  # as the runtime does
    t_apply = time.monotonic()
    await scheduler.apply(configs)
    apply_s = time.monotonic() - t_apply
    settle_long_lived()
    await asyncio.sleep(args.warmup)
    stats = scheduler.stats
    if args.reset_lateness:
        stats.lateness.reset()
    attempts0, skipped0 = stats.attempts, stats.skipped_runs
    sink.measuring = True
    started = time.monotonic()
    emit("warm", attempts=attempts0)
    await asyncio.sleep(args.duration)
    sink.measuring = False
    window_s = time.monotonic() - started
    emit("end", attempts=stats.attempts)
    lateness = stats.lateness
    summary = {
        "window_s": window_s,
        "apply_s": apply_s,
        "completed": len(sink.durations),
        "failures": sink.failures,
        "negative_phases": sink.negative_phases,
        "durations": sink.durations,
        "attempts": stats.attempts - attempts0,
        "skipped_runs": stats.skipped_runs - skipped0,
        "lateness_count": lateness.count,
        "lateness_p50_s": lateness.percentile(50),
        "lateness_p99_s": lateness.percentile(99),
        "lateness_max_s": lateness.max_s,
        "vm_hwm_kib": vm_kib("VmHWM"),
        "vm_rss_kib": vm_kib("VmRSS"),
    }
    await scheduler.aclose(grace_s=args.timeout)
    flushed = await telemetry.flush(10.0)
    summary["exported_spans"] = telemetry.exported
    summary["dropped_spans"] = telemetry.dropped
    summary["flushed"] = flushed
    await telemetry.shutdown()
    emit("summary", **summary)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--ca", default=None)
    p.add_argument("--targets", type=int, required=True)
    p.add_argument("--interval", type=float, required=True)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument(
        "--exporter", choices=["otlp_http", "otlp_grpc", "none", "prometheus"], default="otlp_http"
    )
    p.add_argument("--endpoint", default="")
    p.add_argument("--compression", choices=["gzip", "none"], default="gzip")
    p.add_argument("--metric-interval", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--reset-lateness", action="store_true")
    p.add_argument("--worker", metavar="I/N", help="probe only worker I of N's share of the targets")
    p.add_argument("--switch-interval", type=float, default=0.0, help="experiment: sys.setswitchinterval")
    p.add_argument("--gc-threshold", type=int, default=0, help="experiment: this gen-0 GC threshold")
    return p.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="prober: %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(parse()))
