"""CPU cost per 1000 HTTPS probes and the highest sustained probe rate: otelprobe vs blackbox_exporter.

Both probe the same private nginx (HTTPS on 127.0.0.1, HTTP/1.1, 1-byte body, certificate from a
throwaway CA that both verify against) with a fresh connection and full TLS handshake per probe.

- otelprobe: bench/_prober.py, a process running the real Scheduler + HTTPProbe + Telemetry;
  `rate x 2 s` targets on a 2 s interval make the scheduler itself start `rate` probes per second.
  Every probe's root + phase spans (and the metrics) go over OTLP (HTTP by default) to
  otelprobe's OTLPReceiver running in a separate process.
- blackbox_exporter: Debian's binary; this script scrapes /probe?module=https_2xx open-loop at
  the same rate over keep-alive connections, as Prometheus would.

CPU is utime+stime from /proc/<pid>/stat of the prober process (all threads) or of the
blackbox_exporter process, over a measured window after a warm-up; the load driver, nginx and
the OTLP sink are not counted. Runs of the two tools alternate so that they share machine noise.

    .venv/bin/python bench/cost.py [--quick] [--runs 3] [--rates 50,100,200] [--exporter otlp_grpc]
        [--workers 1,2]   # otelprobe as 1 and as 2 processes (`otelprobe run --workers N`)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from _common import (
    BENCH_DIR,
    BLACKBOX,
    PYTHON,
    REPO,
    Nginx,
    OTLPSink,
    cpu_s,
    free_port,
    make_certs,
    median,
    pct,
    require_tools,
    stop,
    wait_port,
)

INTERVAL_S = 2.0
TIMEOUT_S = 2.0
MAX_P99_S = 0.1
"""A rate counts as sustained when >= 95 % of the requested probes completed, >= 99 % of them
succeeded, and the p99 of probe latency (and, for otelprobe, of start lateness) stays under this."""


@dataclass
class Point:
    tool: str
    rate: float
    run: int
    window_s: float
    completed: int
    succeeded: int
    cpu_s: float
    p50_ms: float
    p99_ms: float
    lateness_p99_ms: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def achieved(self) -> float:
        return self.completed / self.window_s

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu_s / max(self.completed, 1)

    @property
    def sustained(self) -> bool:
        return (
            self.achieved >= 0.95 * self.rate
            and self.succeeded >= 0.99 * self.completed
            and self.p99_ms <= MAX_P99_S * 1000
            and self.lateness_p99_ms <= MAX_P99_S * 1000
        )


def otelprobe_tool(workers: int) -> str:
    """The tool's name in points and tables: "otelprobe" for one process, "otelprobe-wN" for N."""
    return "otelprobe" if workers == 1 else f"otelprobe-w{workers}"


def _read_prober(
    proc: subprocess.Popen[str],
    out: dict[str, Any],
    on_warm: Callable[[int], None] | None,
) -> None:
    """Read one prober's protocol lines; take its CPU counters as soon as each marker arrives."""
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] in ("warm", "end"):
            out[event["event"]] = cpu_s(proc.pid)
            if event["event"] == "warm" and on_warm is not None:
                on_warm(proc.pid)
        elif event["event"] == "summary":
            out["summary"] = event


def run_otelprobe(
    url: str,
    ca: Path,
    sink: OTLPSink,
    exporter: str,
    rate: float,
    window_s: float,
    run: int,
    profile: Path | None = None,
    metric_interval_s: float = 5.0,
    native: bool = False,
    workers: int = 1,
    checkout: Path | None = None,
) -> Point:
    """One point of otelprobe: one prober process, or `workers` of them each probing its
    `targets.worker_of` share (what `otelprobe run --workers N` runs; the idle supervisor is not
    counted). CPU is summed over the processes, latencies pooled, start lateness the worst p99.
    `checkout`: run that checkout's prober and otelprobe package instead (a before/after A/B)."""
    targets = max(1, round(rate * INTERVAL_S))
    cmd = [
        PYTHON,
        str((checkout / "bench" if checkout else BENCH_DIR) / "_prober.py"),
        f"--url={url}",
        f"--ca={ca}",
        f"--targets={targets}",
        f"--interval={INTERVAL_S}",
        f"--timeout={TIMEOUT_S}",
        f"--warmup={INTERVAL_S + 1}",
        f"--duration={window_s}",
        f"--exporter={exporter}",
        f"--endpoint={sink.endpoint(exporter)}",
        "--reset-lateness",
        f"--metric-interval={metric_interval_s}",
    ]
    cmds = [cmd] if workers == 1 else [[*cmd, f"--worker={i}/{workers}"] for i in range(workers)]

    def start_profile(pid: int) -> None:
        # Sampled from outside (its CPU is not the prober's); collapsed stacks, per thread.
        assert profile is not None
        out = profile.with_name(f"{profile.stem}-{rate:.0f}-{run}-{pid}{profile.suffix}")
        subprocess.Popen(
            [
                str(Path(PYTHON).parent / "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--threads",
                "-r",
                "100",
                "-d",
                str(int(window_s)),
                "-o",
                str(out),
                *(["--native"] if native else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    spans_before = sink.counts()["spans"]
    env = None
    if checkout is not None:
        # PYTHONPATH comes before the venv's editable install of this checkout.
        env = {**os.environ, "PYTHONPATH": str(checkout)}
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, text=True, cwd=checkout or REPO, env=env) for c in cmds
    ]
    outs: list[dict[str, Any]] = [{} for _ in procs]
    readers = [
        threading.Thread(target=_read_prober, args=(proc, out, start_profile if profile else None))
        for proc, out in zip(procs, outs, strict=True)
    ]
    try:
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(window_s + 120)
        for proc in procs:
            proc.wait(30)
    finally:
        for proc in procs:
            stop(proc)
    summaries: list[dict[str, Any]] = [out["summary"] for out in outs if "summary" in out]
    if len(summaries) != len(procs) or any(proc.returncode != 0 for proc in procs):
        raise RuntimeError(f"an otelprobe prober failed (exits {[proc.returncode for proc in procs]})")
    time.sleep(0.2)
    durations = [float(d) for summary in summaries for d in summary["durations"]]
    failures: dict[str, int] = {}
    for summary in summaries:
        for key, count in summary["failures"].items():
            failures[key] = failures.get(key, 0) + count
    completed = len(durations)
    return Point(
        tool=otelprobe_tool(workers) + ("@baseline" if checkout else ""),
        rate=rate,
        run=run,
        window_s=median([float(summary["window_s"]) for summary in summaries]),
        completed=completed,
        succeeded=completed - sum(failures.values()),
        cpu_s=sum(float(out["end"]) - float(out["warm"]) for out in outs),
        p50_ms=1000 * pct(durations, 50),
        p99_ms=1000 * pct(durations, 99),
        lateness_p99_ms=1000 * max(float(summary["lateness_p99_s"]) for summary in summaries),
        extra={
            "failures": failures,
            "spans_received": sink.counts()["spans"] - spans_before,
            "spans_exported": sum(summary["exported_spans"] for summary in summaries),
            "spans_dropped": sum(summary["dropped_spans"] for summary in summaries),
            "negative_phases": [summary.get("negative_phases", {}) for summary in summaries],
            "skipped_runs": sum(summary["skipped_runs"] for summary in summaries),
            **(
                {"completed_per_worker": [len(summary["durations"]) for summary in summaries]}
                if workers > 1
                else {}
            ),
        },
    )


BLACKBOX_CONFIG = """
modules:
  https_2xx:
    prober: http
    timeout: {timeout}s
    http:
      method: GET
      valid_status_codes: []
      fail_if_not_ssl: true
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      tls_config:
        ca_file: {ca}
"""


class Blackbox:
    """Debian's blackbox_exporter on 127.0.0.1 with one https_2xx module (fresh connection per probe)."""

    def __init__(self, directory: Path, ca: Path) -> None:
        self.port = free_port()
        self.config = directory / "blackbox.yml"
        self.config.write_text(BLACKBOX_CONFIG.format(timeout=TIMEOUT_S, ca=ca))
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Blackbox:
        self.proc = subprocess.Popen(
            [
                BLACKBOX,
                f"--config.file={self.config}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.proc)


def _parse_probe(text: str) -> tuple[bool, float]:
    success, duration = False, 0.0
    for line in text.splitlines():
        if line.startswith("probe_success "):
            success = line.split()[1] == "1"
        elif line.startswith("probe_duration_seconds "):
            duration = float(line.split()[1])
    return success, duration


async def drive_blackbox(
    bb: Blackbox, target: str, rate: float, warmup_s: float, window_s: float, run: int
) -> Point:
    """Open-loop scrapes at `rate`/s for warmup + window (bounded count, bounded in-flight)."""
    assert bb.proc is not None
    url = f"http://127.0.0.1:{bb.port}/probe"
    params = {"module": "https_2xx", "target": target}
    total = int(rate * (warmup_s + window_s))
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.1
    w0, w1 = t0 + warmup_s, t0 + warmup_s + window_s
    cpu: dict[str, float] = {}
    loop.call_at(w0, lambda: cpu.__setitem__("warm", cpu_s(bb.proc.pid)))  # type: ignore[union-attr]
    loop.call_at(w1, lambda: cpu.__setitem__("end", cpu_s(bb.proc.pid)))  # type: ignore[union-attr]
    latencies: list[float] = []
    probe_durations: list[float] = []
    succeeded = 0
    errors: dict[str, int] = {}
    in_flight = 0
    not_started = 0
    connector = aiohttp.TCPConnector(limit=1000, force_close=False)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S + 3)

    async def scrape(session: aiohttp.ClientSession) -> None:
        nonlocal succeeded, in_flight
        start = loop.time()
        try:
            async with session.get(url, params=params) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            name = type(exc).__name__
            errors[name] = errors.get(name, 0) + 1
            return
        finally:
            in_flight -= 1
        end = loop.time()
        if w0 <= end < w1:
            ok, duration = _parse_probe(text)
            latencies.append(end - start)
            probe_durations.append(duration)
            succeeded += ok

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        for i in range(total):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= 1000:
                not_started += 1
                continue
            in_flight += 1
            tasks.append(asyncio.ensure_future(scrape(session)))
        await asyncio.sleep(max(0.0, w1 - loop.time()) + 0.05)
        await asyncio.wait(tasks, timeout=TIMEOUT_S + 4) if tasks else None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return Point(
        tool="blackbox_exporter",
        rate=rate,
        run=run,
        window_s=window_s,
        completed=len(latencies),
        succeeded=succeeded,
        cpu_s=cpu["end"] - cpu["warm"],
        p50_ms=1000 * pct(latencies, 50),
        p99_ms=1000 * pct(latencies, 99),
        extra={
            "probe_duration_p50_ms": 1000 * pct(probe_durations, 50),
            "probe_duration_p99_ms": 1000 * pct(probe_durations, 99),
            "errors": errors,
            "not_started": not_started,
        },
    )


def summarise(points: list[Point]) -> dict[str, object]:
    """Medians per (tool, rate), the otelprobe/blackbox CPU ratio per rate, and the max sustained rate."""
    table: dict[str, dict[float, dict[str, float | bool]]] = {}
    for tool in sorted({p.tool for p in points}):
        for rate in sorted({p.rate for p in points if p.tool == tool}):
            runs = [p for p in points if p.tool == tool and p.rate == rate]
            table.setdefault(tool, {})[rate] = {
                "runs": len(runs),
                "cpu_s_per_1000": median([p.cpu_per_1000 for p in runs]),
                "achieved_per_s": median([p.achieved for p in runs]),
                "p50_ms": median([p.p50_ms for p in runs]),
                "p99_ms": median([p.p99_ms for p in runs]),
                "lateness_p99_ms": median([p.lateness_p99_ms for p in runs]),
                "success_pct": median([100 * p.succeeded / max(p.completed, 1) for p in runs]),
                # Sustained when most runs at this rate met the criteria.
                "sustained": sum(p.sustained for p in runs) * 2 > len(runs),
            }
    blackbox = table.get("blackbox_exporter", {})
    ratios = {
        tool: {
            rate: rows[rate]["cpu_s_per_1000"] / blackbox[rate]["cpu_s_per_1000"]
            for rate in rows
            if rate in blackbox
        }
        for tool, rows in table.items()
        if tool.startswith("otelprobe")
    }
    max_sustained = {
        tool: max((rate for rate, row in rows.items() if row["sustained"]), default=0.0)
        for tool, rows in table.items()
    }
    return {"table": table, "cpu_ratio_otelprobe_over_blackbox": ratios, "max_sustained_per_s": max_sustained}


def print_report(summary: dict[str, object]) -> None:
    table = summary["table"]
    assert isinstance(table, dict)
    print(
        f"{'tool':18} {'rate/s':>7} {'runs':>4} {'achieved/s':>10} {'CPU-s/1000':>10} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'late99 ms':>9} {'ok %':>6} sustained"
    )
    for tool, rows in table.items():
        for rate, row in rows.items():
            print(
                f"{tool:18} {rate:7.0f} {row['runs']:4d} {row['achieved_per_s']:10.1f} "
                f"{row['cpu_s_per_1000']:10.3f} {row['p50_ms']:7.2f} {row['p99_ms']:7.2f} "
                f"{row['lateness_p99_ms']:9.2f} {row['success_pct']:6.1f} {row['sustained']}"
            )
    ratios = summary["cpu_ratio_otelprobe_over_blackbox"]
    assert isinstance(ratios, dict)
    for tool, by_rate in ratios.items():
        for rate, ratio in by_rate.items():
            print(f"CPU per probe {tool}/blackbox at {rate:.0f}/s: {ratio:.2f}")
    print(f"max sustained probes/s (of the rates tried): {summary['max_sustained_per_s']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 run, rates 50,100, 4 s windows, no search")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rates", default="50,100,200", help="rates compared over --runs runs each")
    parser.add_argument(
        "--search",
        default="300,400,600,800",
        help="higher rates tried once each (per tool, until one is not sustained)",
    )
    parser.add_argument("--window", type=float, default=10.0, help="measured seconds per point")
    parser.add_argument("--exporter", choices=["otlp_http", "otlp_grpc"], default="otlp_http")
    parser.add_argument("--json", type=Path, help="write every point and the summary here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the prober over each window into PROFILE-<rate>-<run> (collapsed)",
    )
    parser.add_argument("--native", action="store_true", help="with --profile: include native (C) frames")
    parser.add_argument(
        "--metric-interval", type=float, default=5.0, help="the prober's metric export period (s)"
    )
    parser.add_argument("--only", choices=["otelprobe", "blackbox"], help="measure one tool only")
    parser.add_argument(
        "--workers",
        default="1",
        help="otelprobe process counts measured side by side, e.g. 1,2 (N: the processes of "
        "`otelprobe run --workers N`, each probing its share)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also measure this checkout's otelprobe (e.g. a git worktree of an older commit) "
        "at each worker count, alternated with the current one: tools named ...@baseline",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rates, args.search, args.window = 1, "50,100", "", 4.0
    require_tools()
    rates = [float(r) for r in args.rates.split(",") if r]
    search = [float(r) for r in args.search.split(",") if r]
    worker_counts = {otelprobe_tool(int(n)): int(n) for n in args.workers.split(",") if n}
    checkouts: dict[str, Path | None] = dict.fromkeys(worker_counts)
    if args.baseline is not None:
        for name, n in list(worker_counts.items()):
            worker_counts[name + "@baseline"] = n
            checkouts[name + "@baseline"] = args.baseline.resolve()
    tools = [*worker_counts, "blackbox_exporter"]
    points: list[Point] = []

    def show(p: Point) -> None:
        print(
            f"  {p.tool:18} rate {p.rate:5.0f} run {p.run}: {p.achieved:6.1f}/s, "
            f"{p.cpu_per_1000:.3f} CPU-s/1000, p50 {p.p50_ms:.2f} ms, p99 {p.p99_ms:.2f} ms, "
            f"late p99 {p.lateness_p99_ms:.2f} ms, ok {p.succeeded}/{p.completed} {p.extra}",
            flush=True,
        )

    with tempfile.TemporaryDirectory(prefix="otelprobe-cost-") as tmp:
        directory = Path(tmp)
        certs = make_certs(directory)
        with Nginx(directory, certs) as nginx, OTLPSink() as sink, Blackbox(directory, certs.ca) as bb:

            def measure(tool: str, rate: float, run: int) -> Point:
                if tool in worker_counts:
                    point = run_otelprobe(
                        nginx.https_url,
                        certs.ca,
                        sink,
                        args.exporter,
                        rate,
                        args.window,
                        run,
                        args.profile,
                        args.metric_interval,
                        args.native,
                        worker_counts[tool],
                        checkouts[tool],
                    )
                else:
                    point = asyncio.run(
                        drive_blackbox(bb, nginx.https_url, rate, INTERVAL_S + 1, args.window, run)
                    )
                points.append(point)
                show(point)
                return point

            for run in range(args.runs):
                for rate in rates:
                    # Alternate the order between runs, so that the tools share machine noise.
                    for tool in tools if run % 2 == 0 else tools[::-1]:
                        if args.only is None or tool.startswith(args.only):
                            measure(tool, rate, run)
            for tool in tools:
                if args.only is not None and not tool.startswith(args.only):
                    continue
                for rate in search:
                    if not measure(tool, rate, 0).sustained:
                        break
    summary = summarise(points)
    print_report(summary)
    if args.json:
        args.json.write_text(
            json.dumps({"points": [asdict(p) for p in points], "summary": summary}, indent=1)
        )


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH_DIR))
    main()
