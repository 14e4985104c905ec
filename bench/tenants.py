"""Tenants (issue 15): thousands of hanging targets of one tenant beside a few healthy ones of another.

One prober process (this one: the real Scheduler, HTTPProbe and Telemetry, metrics aggregated but
not exported) probes `--big` targets of tenant `big` against a lab HTTP server that never answers
(`?hang=1`) and `--small` targets of tenant `small` against a healthy lab HTTP server; both
servers run in a child process (`--serve`), so their work does not share the prober's loop.

Each run is measured twice:
- before: no `tenants:` section, the one global bound (`concurrency`) shared by every target;
- after: `tenants: {big: {concurrency, rate, weight 1}, small: {weight 4}}`, the circuit on.

Reported per mode, over the measured window (after `--warmup`, which lets the hanging targets
fill the bound and the circuit open): the small tenant's start lateness p50/p99/max (from each
result's start against the target's own grid: jitter is 0), its runs started out of those due
and its success ratio (successful runs / runs due: a skipped run is not a success), the big
tenant's attempts started, throttled, skipped and shed, the prober's CPU and the machine's load
(load average, CPU pressure). A control runs beside the probes: something due every 5 ms on a fixed
grid (`grid_*`), whose lateness is what the loop and the machine give any start, scheduler or not;
and the longest GC pass. Medians over `--runs`.

    .venv/bin/python bench/tenants.py [--runs 3] [--big 3000] [--small 10] [--duration 45] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

from _common import PYTHON, REPO, median, pct, stop

from otelprobe.config import load_text
from otelprobe.probes.base import ProbeContext
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.scheduling.runtime import default_probe_factory, settle_long_lived
from otelprobe.scheduling.scheduler import Scheduler
from otelprobe.scheduling.tenancy import tenancy_of
from otelprobe.telemetry.pipeline import Telemetry

GOAL_LATENESS_MS = 20.0


async def serve() -> None:
    """Child process: the hanging and the healthy lab servers; prints their ports, runs until killed."""
    from otelprobe.lab.servers.http import HTTPFaultServer

    hanging, healthy = HTTPFaultServer(max_hang_s=600), HTTPFaultServer()
    await hanging.start()
    await healthy.start()
    print(json.dumps({"hanging": hanging.port, "healthy": healthy.port}), flush=True)
    await asyncio.Event().wait()


class SmallSink:
    """Telemetry, plus each small target's start lateness and outcome in the measured window."""

    def __init__(self, telemetry: Telemetry, scheduler_ref: list[Scheduler], interval_s: float) -> None:
        self.telemetry = telemetry
        self.scheduler_ref = scheduler_ref
        self.interval_s = interval_s
        self.measuring = False
        self.phase: dict[str, float] = {}
        self.small: list[tuple[float, float, bool]] = []
        """(due, lateness, success) of every small run's first attempt (monotonic seconds)."""
        self.big_attempts = 0

    def record(self, result: ProbeResult, link: TraceRef | None) -> TraceRef | None:
        ref = self.telemetry.record(result, link)
        if not result.target.startswith("small"):
            self.big_attempts += self.measuring
            return ref
        if result.attempt == 1:
            # Jitter is 0: run k is due at phase + k x interval; the start's distance past the
            # last grid point is its lateness (less than an interval, or it would be skipped).
            start_s = result.start_ns / 1e9
            lateness = (start_s - self.phase[result.target]) % self.interval_s
            self.small.append((start_s - lateness, lateness, result.success))
        return ref

    def window(self, start: float, end: float) -> tuple[int, list[float], int]:
        """Runs due in [start, end): how many (on the grid), the lateness of those started, successes."""
        due = sum(
            math.ceil((end - phase) / self.interval_s) - math.ceil((start - phase) / self.interval_s)
            for phase in self.phase.values()
        )
        mine = [(late, ok) for when, late, ok in self.small if start <= when < end]
        return due, [late for late, _ in mine], sum(ok for _, ok in mine)


def config_text(args: argparse.Namespace, ports: dict[str, int], tenants: bool) -> str:
    lines = [f"concurrency: {args.concurrency}"]
    if tenants:
        lines += [
            "tenants:",
            f"  big: {{concurrency: {args.big_concurrency}, rate: {args.big_rate}, weight: 1}}",
            "  small: {weight: 4}",
        ]
    lines.append("targets:")
    for i in range(args.big):
        lines.append(
            f"  - {{name: big-{i:05d}, kind: http, url: 'http://127.0.0.1:{ports['hanging']}/?hang=1',"
            f" interval: {args.big_interval}s, timeout: {args.timeout}s, jitter: 0s,"
            " labels: {tenant: big}}"
        )
    for i in range(args.small):
        lines.append(
            f"  - {{name: small-{i}, kind: http, url: 'http://127.0.0.1:{ports['healthy']}/',"
            f" interval: {args.small_interval}s, timeout: {min(1.0, 0.8 * args.small_interval):g}s,"
            " jitter: 0s, labels: {tenant: small}}"
        )
    return "\n".join(lines) + "\n"


class LoopLag:
    """A control beside the probes: how late this loop runs something due every 5 ms on a fixed grid
    (every grid point counted, so a 100 ms stall counts 20 late points, as it would for probes due
    then), and how long each GC pass holds the loop: what any probe start of this process suffers,
    whatever the scheduler does."""

    GRID_S = 0.005

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self.gc_ms: list[float] = []
        self._gc_start = 0.0
        self.full_gcs = 0
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_ms.append((time.perf_counter() - self._gc_start) * 1000)
            self.full_gcs += info["generation"] == 2

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.GRID_S
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            while due <= now:
                self.lags_ms.append((now - due) * 1000)
                due += self.GRID_S

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def cpu_pressure() -> float:
    """PSI `some avg60` of the CPU (% of time some task waited for a core), -1 when unavailable."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return -1.0
    return float(dict(part.split("=") for part in first.split()[1:])["avg60"])


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_run(args: argparse.Namespace, ports: dict[str, int], tenants: bool) -> dict[str, Any]:
    config = load_text(config_text(args, ports, tenants))
    telemetry = Telemetry(vantage="bench")
    ref: list[Scheduler] = []
    sink = SmallSink(telemetry, ref, args.small_interval)
    scheduler = Scheduler(
        sink,
        default_probe_factory,
        ProbeContext(vantage="bench"),
        concurrency=config.concurrency,
        tenancy=tenancy_of(config),
    )
    ref.append(scheduler)
    try:
        await scheduler.apply(config.targets)
        settle_long_lived()
        for name in scheduler.targets():
            if name.startswith("small"):
                when = scheduler.next_run_at(name)
                assert when is not None
                sink.phase[name] = when % args.small_interval
        await asyncio.sleep(args.warmup)
        gate = scheduler.gate
        big0 = dict(gate.snapshot()).get("big", {}) if gate else {}
        skipped0 = scheduler.stats.skipped_runs
        cpu0, load0 = cpu_now(), os.getloadavg()[0]
        lag = LoopLag()
        lag.start()
        sink.measuring = True
        started = time.monotonic()
        await asyncio.sleep(args.duration)
        ended = time.monotonic()
        sink.measuring = False
        cpu_s = cpu_now() - cpu0
        big1 = dict(gate.snapshot()).get("big", {}) if gate else {}
        skipped = scheduler.stats.skipped_runs - skipped0
        await lag.stop()
        tracked = len(gc.get_objects())
        await asyncio.sleep(1.5)  # the last small runs due in the window finish
        due, late_s, ok = sink.window(started, ended)
        window_s = ended - started
    finally:
        await scheduler.aclose(grace_s=1.0)
        await telemetry.shutdown()
    lateness_ms = [s * 1000 for s in late_s]
    return {
        "mode": "after" if tenants else "before",
        "window_s": round(window_s, 1),
        "small_due": due,
        "small_started": len(late_s),
        "small_success_ratio": round(ok / due, 4) if due else 0.0,
        "small_p50_ms": round(pct(lateness_ms, 50), 2),
        "small_p99_ms": round(pct(lateness_ms, 99), 2),
        "small_max_ms": round(max(lateness_ms, default=0.0), 2),
        "big_attempts": sink.big_attempts,
        "big_throttled": int(big1.get("throttled", 0) - big0.get("throttled", 0)),
        "big_skipped": int(big1.get("skipped", 0) - big0.get("skipped", 0)),
        "big_shed": int(big1.get("shed", 0) - big0.get("shed", 0)),
        "skipped_runs_all": skipped,
        "circuit_open": int(big1.get("circuit_open", 0)),
        "grid_p50_ms": round(pct(lag.lags_ms, 50), 2),
        "grid_p99_ms": round(pct(lag.lags_ms, 99), 2),
        "grid_max_ms": round(max(lag.lags_ms, default=0.0), 2),
        "gc_max_ms": round(max(lag.gc_ms, default=0.0), 2),
        "gc_full_passes": lag.full_gcs,
        "gc_tracked": tracked,
        "prober_cpu_pct": round(100 * cpu_s / window_s, 1),
        "load1": round((load0 + os.getloadavg()[0]) / 2, 2),
        "cpu_pressure_pct": cpu_pressure(),
    }


async def bench(args: argparse.Namespace) -> None:
    server = subprocess.Popen([PYTHON, __file__, "--serve"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())
        rows = []
        for run in range(args.runs):
            for tenants in (False, True):
                row = await one_run(args, ports, tenants)
                row["run"] = run + 1
                rows.append(row)
                print(json.dumps(row), flush=True)
        summary = {}
        for mode in ("before", "after"):
            mine = [r for r in rows if r["mode"] == mode]
            summary[mode] = {
                key: median([r[key] for r in mine])
                for key in mine[0]
                if key not in ("mode", "run") and isinstance(mine[0][key], int | float)
            }
        setting = {k: v for k, v in vars(args).items() if k not in ("json", "serve")}
        print(json.dumps({"summary": summary, "settings": setting}, indent=1), flush=True)
        after, before = summary["after"], summary["before"]
        print(
            f"after: small p99 start lateness {after['small_p99_ms']:.1f} ms (goal <= {GOAL_LATENESS_MS:g}),"
            f" success ratio {after['small_success_ratio']:.3f};"
            f" before: {before['small_p99_ms']:.1f} ms, {before['small_success_ratio']:.3f}"
        )
        if args.json:
            args.json.write_text(json.dumps({"runs": rows, "summary": summary, "settings": setting}) + "\n")
    finally:
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big", type=int, default=3000, help="hanging targets of tenant big")
    parser.add_argument("--small", type=int, default=10, help="healthy targets of tenant small")
    parser.add_argument("--big-interval", type=float, default=10.0)
    parser.add_argument("--small-interval", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=5.0, help="of the big tenant's probes")
    parser.add_argument("--concurrency", type=int, default=256, help="the global bound")
    parser.add_argument("--big-concurrency", type=int, default=200)
    parser.add_argument("--big-rate", type=float, default=100.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--duration", type=float, default=45.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
