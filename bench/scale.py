"""Scale: 10,000 HTTP targets on a 30 s interval for 2 minutes in one otelprobe process (or in
`--workers N` processes, each probing its `targets.worker_of` share, as `otelprobe run --workers N`).

The target is a private nginx on 127.0.0.1 (plain HTTP, 1-byte body, one worker); the prober is
bench/_prober.py (the real Scheduler + HTTPProbe + Telemetry, spans and metrics over OTLP/HTTP to
otelprobe's OTLPReceiver in another process). Reported: p99 (and p50, max) lateness of probe
starts versus schedule from `Scheduler.stats.lateness` over the whole run, including start-up;
peak RSS (VmHWM of the prober process); CPU of the prober process over the run. With workers:
the worst worker's lateness percentiles and peak RSS (the goals are per process), CPU summed.
Goals (issue 2): p99 lateness <= 20 ms, RSS <= 300 MB (per process).

    .venv/bin/python bench/scale.py [--quick] [--targets 10000] [--interval 30] [--duration 120]
        [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, PYTHON, REPO, Nginx, OTLPSink, cpu_s, make_certs, pct, stop

GOAL_LATENESS_MS = 20.0
GOAL_RSS_MB = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2000 targets on 10 s for 30 s")
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument(
        "--exporter", choices=["otlp_http", "otlp_grpc", "none", "prometheus"], default="otlp_http"
    )
    parser.add_argument("--metric-interval", type=float, default=10.0, help="metric export period (s)")
    parser.add_argument("--switch-interval", type=float, default=0.0, help="experiment: GIL switch interval")
    parser.add_argument(
        "--gc-threshold", type=int, default=0, help="experiment: gc.freeze() before set-up, gen-0 threshold N"
    )
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument(
        "--https", action="store_true", help="HTTPS targets (full handshake each, one CA for all)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="prober processes, each probing its share of the targets"
    )
    args = parser.parse_args()
    if args.quick:
        args.targets, args.interval, args.duration = 2000, 10.0, 30.0
    with tempfile.TemporaryDirectory(prefix="otelprobe-scale-") as tmp:
        directory = Path(tmp)
        certs = make_certs(directory)
        with Nginx(directory, certs) as nginx, OTLPSink() as sink:
            cmd = [
                PYTHON,
                str(BENCH_DIR / "_prober.py"),
                *(
                    [f"--url={nginx.https_url}", f"--ca={certs.ca}"]
                    if args.https
                    else [f"--url={nginx.http_url}"]
                ),
                f"--targets={args.targets}",
                f"--interval={args.interval}",
                "--timeout=5",
                "--warmup=0",
                f"--duration={args.duration}",
                f"--exporter={args.exporter}",
                f"--endpoint={sink.endpoint(args.exporter)}",
                f"--metric-interval={args.metric_interval}",
                *([f"--switch-interval={args.switch_interval}"] if args.switch_interval else []),
                *([f"--gc-threshold={args.gc_threshold}"] if args.gc_threshold else []),
            ]
            cmds = (
                [cmd]
                if args.workers == 1
                else [[*cmd, f"--worker={i}/{args.workers}"] for i in range(args.workers)]
            )
            procs = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True, cwd=REPO) for c in cmds]
            outs: list[dict[str, Any]] = [{} for _ in procs]
            readers = [threading.Thread(target=_read, args=(p, o)) for p, o in zip(procs, outs, strict=True)]
            try:
                for reader in readers:
                    reader.start()
                for reader in readers:
                    reader.join(args.duration + 600)
                for proc in procs:
                    proc.wait(60)
            finally:
                for proc in procs:
                    stop(proc)
            spans = sink.counts()["spans"]
    summaries = [o["summary"] for o in outs if "summary" in o]
    if len(summaries) != len(procs):
        raise SystemExit(f"a prober failed (exits {[p.returncode for p in procs]})")
    cpu_run = sum(o["end"] - o["warm"] for o in outs)
    window_s = max(float(s["window_s"]) for s in summaries)
    durations = [float(d) for s in summaries for d in s["durations"]]
    completed = len(durations)
    failures: dict[str, int] = {}
    for s in summaries:
        for key, count in s["failures"].items():
            failures[key] = failures.get(key, 0) + count
    result = {
        "targets": args.targets,
        "interval_s": args.interval,
        "workers": args.workers,
        "duration_s": window_s,
        "scheduler_apply_s": max(float(s["apply_s"]) for s in summaries),
        "probes_completed": completed,
        "probes_per_s": completed / window_s,
        "failures": failures,
        "skipped_runs": sum(int(s["skipped_runs"]) for s in summaries),
        "lateness_samples": sum(int(s["lateness_count"]) for s in summaries),
        # Per process, the worst worker's: each worker is its own scheduler.
        "lateness_p50_ms": 1000 * max(float(s["lateness_p50_s"]) for s in summaries),
        "lateness_p99_ms": 1000 * max(float(s["lateness_p99_s"]) for s in summaries),
        "lateness_max_ms": 1000 * max(float(s["lateness_max_s"]) for s in summaries),
        "lateness_p99_ms_per_worker": [round(1000 * float(s["lateness_p99_s"]), 2) for s in summaries],
        "probe_duration_p50_ms": 1000 * pct(durations, 50),
        "probe_duration_p99_ms": 1000 * pct(durations, 99),
        "peak_rss_mb": max(int(s["vm_hwm_kib"]) for s in summaries) / 1024,
        "peak_rss_mb_per_worker": [round(int(s["vm_hwm_kib"]) / 1024, 1) for s in summaries],
        "cpu_s": cpu_run,
        "cpu_pct_of_one_core": 100 * cpu_run / window_s,
        "cpu_s_per_1000_probes": 1000 * cpu_run / max(completed, 1),
        "spans_exported": sum(int(s["exported_spans"]) for s in summaries),
        "spans_dropped": sum(int(s["dropped_spans"]) for s in summaries),
        "spans_received_by_sink": spans,
    }
    for key, value in result.items():
        print(f"{key:24} {value:.2f}" if isinstance(value, float) else f"{key:24} {value}")
    ok_lateness = result["lateness_p99_ms"] <= GOAL_LATENESS_MS
    ok_rss = result["peak_rss_mb"] <= GOAL_RSS_MB
    print(f"goal p99 lateness <= {GOAL_LATENESS_MS:g} ms: {'met' if ok_lateness else 'MISSED'}")
    print(f"goal peak RSS <= {GOAL_RSS_MB:g} MB: {'met' if ok_rss else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


def _read(proc: subprocess.Popen[str], out: dict[str, Any]) -> None:
    """One prober's protocol lines; its CPU counters taken as each marker arrives."""
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] in ("warm", "end"):
            out[event["event"]] = cpu_s(proc.pid)
        elif event["event"] == "summary":
            out["summary"] = event


if __name__ == "__main__":
    main()
