"""Long runs and faults of `otelprobe run` (issue 11): soak, Collector outage, reload storm, fd exhaustion.

    python bench/long_run.py soak      [--duration 150] [--full] [--rate 200]
    python bench/long_run.py outage    [--duration 150] [--full]   # the Collector down for 40 % of the run
    python bench/long_run.py reload    [--duration 60]             # the config rewritten 10 times a second
    python bench/long_run.py fds       [--duration 90]             # RLIMIT_NOFILE squeezed for a third of it

The prober is the real `Runtime` of `otelprobe run` in this process (so the scheduler's lateness,
the asyncio task count and the telemetry counters can be read directly); the targets are
`otelprobe lab serve` in a child process (HTTP, HTTPS, TLS, DNS, a refused port) plus a 503
path, ICMP echo to 127.0.0.1, and a gRPC health server and a WebSocket echo in another child
(every probe kind; some targets always fail); spans and metrics go over OTLP/HTTP to a counting sink in
another child process. Every `--sample` seconds one JSON line: RSS, open fds, asyncio tasks,
probes, lateness p50/p99 of the samples since the last line, spans exported/dropped. At the end a
summary line with least-squares slopes (per minute, after the first fifth of the run). Short
defaults (<= 3 min) for a shared machine; `--full` runs the issue's lengths (soak 1 h, outage 10
min down). Everything listens on 127.0.0.1; child processes are stopped by their own pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, REPO, free_port, pct, stop

from otelprobe.results import ProbeResult, TraceRef
from otelprobe.scheduling.runtime import Runtime, TelemetrySink, default_sink
from otelprobe.telemetry.pipeline import Telemetry

FULL = {"soak": 3600.0, "outage": 900.0, "reload": 60.0, "fds": 300.0}
SHORT = {"soak": 150.0, "outage": 150.0, "reload": 60.0, "fds": 90.0}
INTERVAL_S = 5.0

SINK = r"""
import asyncio, json, sys, time
from aiohttp import web
port, mode = int(sys.argv[1]), sys.argv[2]
first = None
async def receive(request):
    global first
    await request.read()
    if first is None:
        first = time.time()
        print(json.dumps({"first_request_at": first}), flush=True)
    if mode == "503":
        return web.Response(status=503, headers={"Retry-After": "2"})
    return web.Response(status=200, content_type="application/x-protobuf")
app = web.Application()
app.router.add_post("/v1/traces", receive)
app.router.add_post("/v1/metrics", receive)
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
"""


SIDE_SERVERS = r"""
import asyncio, json, sys
import grpc
from aiohttp import web
from grpc_health.v1 import _async as health_aio, health_pb2_grpc
async def echo(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        await ws.send_str(message.data)
    return ws
async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    app = web.Application()
    app.router.add_get("/ws", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ws_port = site._server.sockets[0].getsockname()[1]
    found = {"gRPC": f"127.0.0.1:{grpc_port}", "WebSocket": f"ws://127.0.0.1:{ws_port}/ws"}
    print(json.dumps(found), flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""
"""The kinds `otelprobe lab serve` has no server for: a grpcio health server and an aiohttp
WebSocket echo, in one child process."""


def die_with_parent() -> None:
    """In a child, before exec: SIGTERM it when this bench dies, however it dies (killed, Ctrl-C)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@contextlib.contextmanager
def lab_servers() -> Iterator[dict[str, str]]:
    """`otelprobe lab serve` in a child process: the URLs it prints."""
    proc = subprocess.Popen(
        [PYTHON, "-m", "otelprobe.cli", "lab", "serve"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        preexec_fn=die_with_parent,
    )
    try:
        assert proc.stdout is not None
        found: dict[str, str] = {}
        for line in proc.stdout:
            key, _, value = line.partition(":")
            found[key.strip()] = value.strip().split()[0] if value.strip() else ""
            if line.startswith("Ctrl-C"):
                break
        side = subprocess.Popen(
            [PYTHON, "-c", SIDE_SERVERS], stdout=subprocess.PIPE, text=True, preexec_fn=die_with_parent
        )
        try:
            assert side.stdout is not None
            found.update(json.loads(side.stdout.readline()))
            yield found
        finally:
            stop(side)
    finally:
        stop(proc)


class Sink:
    """The Collector stand-in, started and stopped at will on one port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.started_at = 0.0

    def start(self, mode: str = "ok") -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-c", SINK, str(self.port), mode],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,
        )
        self.started_at = time.time()

    def first_request_at(self) -> float | None:
        assert self.proc is not None and self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        line = self.proc.stdout.readline()
        return float(json.loads(line)["first_request_at"]) if line else None

    def kill(self) -> None:
        stop(self.proc)
        self.proc = None


def write_config(path: Path, labs: dict[str, str], otlp_port: int, rate: float, generation: int = 0) -> int:
    """A config of rate * INTERVAL_S targets over every kind, some failing; returns the count."""
    http = labs["HTTP"].rstrip("/")
    https = labs["HTTPS"].rstrip("/")
    kinds = [
        ("http", f"url: {http}/"),
        ("http", f"url: '{http}/?status=503'"),  # fails: http_status
        ("http", f"url: {https}/, tls: {{ca_file: {labs['CA (for --ca)']}}}"),
        ("tcp", f"address: '{labs['refused port'].removeprefix('tcp://')}'"),  # fails: connect_refused
        ("tls", f"address: '{labs['TLS'].removeprefix('tls://')}', tls: {{verify: false}}"),
        ("dns", f"server: '{labs['DNS'].removeprefix('dns://').split('/')[0]}', query_name: www.lab.test"),
        ("icmp", "host: 127.0.0.1, count: 2, packet_interval: 50ms"),
        ("grpc", f"address: '{labs['gRPC']}'"),
        ("grpc", f"address: '{labs['gRPC']}', service: no.such.Service"),  # fails: the service is unknown
        ("websocket", f"url: '{labs['WebSocket']}'"),
    ]
    count = max(len(kinds), int(rate * INTERVAL_S))
    lines = [
        "vantage: bench",
        "concurrency: 512",
        "telemetry:",
        "  metric_export_interval: 10s",
        "  queue: {max_queue_size: 8192, max_export_batch_size: 512, schedule_delay: 1s}",
        f"  exporters: [{{type: otlp_http, endpoint: 'http://127.0.0.1:{otlp_port}', timeout: 2s}}]",
        f"defaults: {{interval: {INTERVAL_S}s, timeout: 2s, failure_threshold: 3}}",
        "targets:",
    ]
    for index in range(count):
        kind, fields = kinds[index % len(kinds)]
        lines.append(f"  - {{name: t{index}-g{generation if index == 0 else 0}, kind: {kind}, {fields}}}")
    path.write_text("\n".join(lines) + "\n")
    return count


class CountingSink:
    """The telemetry sink, counting error.type/detail of the failed probes as they pass."""

    def __init__(self, inner: TelemetrySink) -> None:
        self.inner = inner
        self.errors: dict[str, int] = {}

    def record(self, result: ProbeResult, link: TraceRef | None) -> TraceRef | None:
        if result.error is not None:
            key = f"{result.error.error_type}/{result.error.detail}"
            self.errors[key] = self.errors.get(key, 0) + 1
        return self.inner.record(result, link)

    async def shutdown(self) -> None:
        await self.inner.shutdown()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var if var else 0.0


@dataclass
class Recorder:
    runtime: Runtime
    telemetry: list[TelemetrySink]
    started: float = field(default_factory=time.monotonic)
    rows: list[dict[str, Any]] = field(default_factory=list)
    _seen_lateness: int = 0

    def sample(self, phase: str) -> dict[str, Any]:
        stats = self.runtime.scheduler.stats
        samples = stats.lateness.samples()
        total = stats.lateness.count if hasattr(stats.lateness, "count") else len(samples)
        fresh = samples[-max(0, min(len(samples), total - self._seen_lateness)) :] if samples else []
        self._seen_lateness = total
        sink = self.telemetry[0] if self.telemetry else None
        telemetry = sink.inner if isinstance(sink, CountingSink) else None
        row = {
            "t": round(time.monotonic() - self.started, 1),
            "phase": phase,
            "rss_mib": round(rss_mib(), 1),
            "fds": open_fds(),
            "tasks": len(asyncio.all_tasks()),
            "runs": stats.runs,
            "failed_runs": stats.failed_runs,
            "skipped_runs": stats.skipped_runs,
            "probe_exceptions": stats.probe_exceptions,
            "late_p50_ms": round(pct(fresh, 50) * 1e3, 2),
            "late_p99_ms": round(pct(fresh, 99) * 1e3, 2),
            "targets": len(self.runtime.scheduler._targets),
            "exported": telemetry.exported if isinstance(telemetry, Telemetry) else 0,
            "dropped": telemetry.dropped if isinstance(telemetry, Telemetry) else 0,
            "failed_export": sum(b.failed for b in telemetry.span_batchers)
            if isinstance(telemetry, Telemetry)
            else 0,
        }
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    def slopes(self, skip_fraction: float = 0.2) -> dict[str, float]:
        if not self.rows:
            return {}
        start = self.rows[-1]["t"] * skip_fraction
        kept = [r for r in self.rows if r["t"] >= start]
        return {
            f"{key}_per_min": round(slope_per_min([(r["t"], r[key]) for r in kept]), 3)
            for key in ("rss_mib", "fds", "tasks")
        }


async def run_scenario(args: argparse.Namespace) -> dict[str, Any]:
    duration = args.duration or (FULL if args.full else SHORT)[args.scenario]
    otlp_port = free_port()
    sink = Sink(otlp_port)
    summary: dict[str, Any] = {"scenario": args.scenario, "duration_s": duration, "rate": args.rate}
    with lab_servers() as labs, tempfile.TemporaryDirectory(prefix="otelprobe-long-run-") as work:
        config = Path(work) / "probes.yaml"
        summary["targets"] = write_config(config, labs, otlp_port, args.rate)
        sink.start()
        telemetry: list[TelemetrySink] = []

        def sink_factory(cfg: Any) -> TelemetrySink:
            made = CountingSink(default_sink(cfg))
            telemetry.append(made)
            return made

        runtime = Runtime(config, sink_factory=sink_factory, grace_s=3.0)
        serving = asyncio.create_task(runtime.serve())
        await asyncio.sleep(1.0)
        recorder = Recorder(runtime, telemetry)
        try:
            await SCENARIOS[args.scenario](args, duration, recorder, sink, config, labs, otlp_port, summary)
        finally:
            runtime.request_stop()
            await asyncio.wait_for(serving, 30)
            sink.kill()
    summary.update(recorder.slopes())
    rows = recorder.rows
    summary["rss_mib_first_last_max"] = [
        rows[0]["rss_mib"],
        rows[-1]["rss_mib"],
        max(r["rss_mib"] for r in rows),
    ]
    summary["fds_first_last_max"] = [rows[0]["fds"], rows[-1]["fds"], max(r["fds"] for r in rows)]
    summary["tasks_first_last_max"] = [rows[0]["tasks"], rows[-1]["tasks"], max(r["tasks"] for r in rows)]
    summary["probe_exceptions"] = rows[-1]["probe_exceptions"]
    summary["skipped_runs"] = rows[-1]["skipped_runs"]
    summary["runs"] = rows[-1]["runs"]
    return summary


async def _sample_for(recorder: Recorder, seconds: float, every: float, phase: str) -> list[dict[str, Any]]:
    rows = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(every, left))
        rows.append(recorder.sample(phase))
    return rows


async def soak(args: argparse.Namespace, duration: float, recorder: Recorder, *_: Any) -> None:
    await _sample_for(recorder, duration, args.sample or (60 if args.full else 10), "soak")


async def outage(
    args: argparse.Namespace, duration: float, recorder: Recorder, sink: Sink, *rest: Any
) -> None:
    summary: dict[str, Any] = rest[-1]
    every = args.sample or (30 if args.full else 5)
    down_s = 600.0 if args.full else 0.4 * duration
    before = await _sample_for(recorder, 0.2 * duration, every, "before")
    sink.kill()
    down_at = time.time()
    during = await _sample_for(recorder, down_s, every, "collector down")
    sink.start()
    up_at = time.time()
    after = await _sample_for(recorder, duration - 0.2 * duration - down_s, every, "after")
    first = sink.first_request_at()
    summary["outage_s"] = round(up_at - down_at, 1)
    summary["export_resumed_after_s"] = round(first - up_at, 2) if first else None
    for name, rows in (("before", before), ("during", during), ("after", after)):
        summary[f"late_p99_ms_{name}"] = max((r["late_p99_ms"] for r in rows), default=0.0)
        summary[f"rss_mib_max_{name}"] = max((r["rss_mib"] for r in rows), default=0.0)
    summary["dropped_spans"] = after[-1]["dropped"] if after else None
    summary["spans_lost_to_failed_exports"] = after[-1]["failed_export"] if after else None


async def reload_storm(
    args: argparse.Namespace,
    duration: float,
    recorder: Recorder,
    sink: Sink,
    config: Path,
    labs: dict[str, str],
    otlp_port: int,
    summary: dict[str, Any],
) -> None:
    recorder.sample("before")
    deadline = time.monotonic() + duration
    generation = 0
    expected = 0
    next_sample = time.monotonic() + (args.sample or 5)
    while time.monotonic() < deadline:
        generation += 1
        expected = write_config(config, labs, otlp_port, args.rate, generation)
        recorder.runtime.request_reload()
        await asyncio.sleep(0.1)
        if time.monotonic() >= next_sample:
            recorder.sample("storm")
            next_sample += args.sample or 5
    await asyncio.sleep(2.5)  # the last rewrite applied (the file is polled each second)
    settled = recorder.sample("after")
    await asyncio.sleep(2 * INTERVAL_S)
    row = recorder.sample("after")
    summary["rewrites"] = generation
    summary["reloads_applied"] = recorder.runtime.reloads
    summary["reloads_rejected"] = recorder.runtime.rejected_reloads
    summary["targets_expected"] = expected
    summary["targets_scheduled"] = row["targets"]
    # Each target once per interval: a duplicate schedule would show as about 2.
    runs = row["runs"] - settled["runs"]
    summary["runs_per_target_per_interval_after"] = round(runs / expected / 2, 3) if expected else None
    names = set(recorder.runtime.scheduler._targets)
    summary["current_generation_scheduled"] = f"t0-g{generation}" in names


async def fd_exhaustion(args: argparse.Namespace, duration: float, recorder: Recorder, *rest: Any) -> None:
    summary: dict[str, Any] = rest[-1]
    every = args.sample or 5
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = await _sample_for(recorder, duration / 3, every, "before")
    squeezed = open_fds() + args.headroom
    counting = recorder.telemetry[0]
    assert isinstance(counting, CountingSink)
    errors_before = dict(counting.errors)
    resource.setrlimit(resource.RLIMIT_NOFILE, (squeezed, hard))
    failures_at = recorder.runtime.scheduler.stats.failed_runs
    try:
        during = await _sample_for(recorder, duration / 3, every, f"nofile={squeezed}")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    after = await _sample_for(recorder, duration / 3, every, "restored")
    summary["nofile_squeezed_to"] = squeezed

    def failure_rate(rows: list[dict[str, Any]]) -> float:
        runs = rows[-1]["runs"] - rows[0]["runs"]
        failed = rows[-1]["failed_runs"] - rows[0]["failed_runs"]
        return round(failed / runs, 3) if runs else 0.0

    summary["failed_run_share_before_during_after"] = [
        failure_rate(before),
        failure_rate(during),
        failure_rate(after),
    ]
    summary["failed_runs_while_squeezed"] = during[-1]["failed_runs"] - failures_at
    new_errors = {k: v - errors_before.get(k, 0) for k, v in counting.errors.items()}
    summary["errors_while_squeezed_and_after"] = {k: v for k, v in sorted(new_errors.items()) if v}
    summary["process_alive"] = True


SCENARIOS: dict[str, Any] = {"soak": soak, "outage": outage, "reload": reload_storm, "fds": fd_exhaustion}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--duration", type=float, help="seconds (default: short, or the issue's with --full)")
    parser.add_argument(
        "--full", action="store_true", help="the issue's lengths (soak 1 h, outage 10 min down)"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="probes per second (default 200)")
    parser.add_argument("--sample", type=float, help="seconds between samples")
    parser.add_argument(
        "--headroom", type=int, default=4, help="fds: descriptors left free above those open (default 4)"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("otelprobe.scheduling.health").setLevel(logging.ERROR)  # a line per target DOWN/UP
    summary = asyncio.run(run_scenario(args))
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
