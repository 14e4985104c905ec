"""End-to-end latency: from a probe's end to its trace being queryable in Jaeger.

A real `otelprobe run` prober (TCP probes of a loopback listener) -> the built Collector running
collector-config/collector-jaeger-sidecar.yaml -> Jaeger v2 (in-memory). This script polls
Jaeger's api_v3 (`/api/v3/traces`, by service, recent start times only) every `--poll` seconds
and notes when each trace first appears; latency = that moment - the root span's end. The poll
period bounds the resolution (half of it on average is added).

What the figure is made of: the prober's batch delay (`--schedule-delay`, otelprobe's default is
5s), the Collector's batch processor (`timeout: 1s` in the committed file), Jaeger's own batch
processor (200 ms here) and the write into its store.

    .venv/bin/python bench/e2e_latency.py [--targets 10] [--seconds 40] [--schedule-delay 200ms]

Needs the binaries (`make otel`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.support

from tests.support.e2e_stack import (
    CONFIG_DIR,
    accepting_listener,
    collector_overlay,
    endpoint,
    locate_binaries,
    prober_config,
    start_collector,
    start_jaeger,
    start_prober,
)

SERVICE = "otelprobe-bench-latency"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(targets: int, seconds: float, interval: str, schedule_delay: str, poll_s: float) -> None:
    binaries = locate_binaries()
    tmp = Path(tempfile.mkdtemp(prefix="otelprobe-e2e-latency-"))
    jaeger = await start_jaeger(binaries, tmp)
    otlp_grpc = endpoint()
    overlay = collector_overlay(otlp_grpc, jaeger)
    collector = await start_collector(
        binaries, tmp, "collector", CONFIG_DIR / "collector-jaeger-sidecar.yaml", overlay
    )
    listener = await accepting_listener()
    config = prober_config(
        otlp_grpc,
        [
            {
                "name": f"lat-{i}",
                "kind": "tcp",
                "address": f"127.0.0.1:{listener.sockets[0].getsockname()[1]}",
            }
            for i in range(targets)
        ],
        vantage="bench",
        service=SERVICE,
        interval=interval,
        timeout="500ms",
        extra_telemetry={"queue": {"schedule_delay": schedule_delay}},
    )
    prober = await start_prober(tmp, "prober", config)
    first_seen: dict[str, float] = {}
    root_end: dict[str, float] = {}
    at_first_poll: set[str] = set()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            now = time.time()
            for trace in await jaeger.find_traces(SERVICE, lookback_s=30):
                if trace.trace_id not in first_seen:
                    first_seen[trace.trace_id] = now
                    root_end[trace.trace_id] = trace.root.end_ns / 1e9
            if not at_first_poll:
                at_first_poll = set(first_seen) or {""}
            await asyncio.sleep(poll_s)
    finally:
        await prober.stop()
        await collector.stop()
        await jaeger.stop()
        listener.close()
    # Traces already there at the first poll have no meaningful first-seen time.
    latencies = [first_seen[t] - root_end[t] for t in first_seen if t not in at_first_poll]
    print(f"probes: {len(latencies)} ({targets} TCP targets every {interval}, {seconds:g} s)")
    print(
        f"prober schedule_delay {schedule_delay}, Collector batch 1s, Jaeger batch 200ms, poll {poll_s:g} s"
    )
    print(
        f"probe end -> queryable in Jaeger: p50 {percentile(latencies, 0.5):.2f} s, "
        f"p99 {percentile(latencies, 0.99):.2f} s, mean {statistics.fmean(latencies):.2f} s, "
        f"max {max(latencies):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--schedule-delay", default="200ms")
    parser.add_argument("--poll", type=float, default=0.1)
    args = parser.parse_args()
    asyncio.run(run(args.targets, args.seconds, args.interval, args.schedule_delay, args.poll))


if __name__ == "__main__":
    main()
