"""Scale: 10,000 HTTP targets on a 30 s interval for 2 minutes in one otelprobe process.

The target is a private nginx on 127.0.0.1 (plain HTTP, 1-byte body, one worker); the prober is
bench/_prober.py (the real Scheduler + HTTPProbe + Telemetry, spans and metrics over OTLP/HTTP to
otelprobe's OTLPReceiver in another process). Reported: p99 (and p50, max) lateness of probe
starts versus schedule from `Scheduler.stats.lateness` over the whole run, including start-up;
peak RSS (VmHWM of the prober process); CPU of the prober process over the run.
Goals (issue 2): p99 lateness <= 20 ms, RSS <= 300 MB.

    .venv/bin/python bench/scale.py [--quick] [--targets 10000] [--interval 30] [--duration 120]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

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
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
            assert proc.stdout is not None
            cpu: dict[str, float] = {}
            summary: dict[str, object] = {}
            try:
                for line in proc.stdout:
                    event = json.loads(line)
                    if event["event"] in ("warm", "end"):
                        cpu[event["event"]] = cpu_s(proc.pid)
                    elif event["event"] == "summary":
                        summary = event
                proc.wait(60)
            finally:
                stop(proc)
            spans = sink.counts()["spans"]
    if not summary:
        raise SystemExit(f"the prober failed (exit {proc.returncode})")
    durations = [float(d) for d in summary.pop("durations")]  # type: ignore[attr-defined]
    completed = len(durations)
    cpu_run = cpu["end"] - cpu["warm"]
    result = {
        "targets": args.targets,
        "interval_s": args.interval,
        "duration_s": summary["window_s"],
        "scheduler_apply_s": summary["apply_s"],
        "probes_completed": completed,
        "probes_per_s": completed / float(summary["window_s"]),  # type: ignore[arg-type]
        "failures": summary["failures"],
        "skipped_runs": summary["skipped_runs"],
        "lateness_samples": summary["lateness_count"],
        "lateness_p50_ms": 1000 * float(summary["lateness_p50_s"]),  # type: ignore[arg-type]
        "lateness_p99_ms": 1000 * float(summary["lateness_p99_s"]),  # type: ignore[arg-type]
        "lateness_max_ms": 1000 * float(summary["lateness_max_s"]),  # type: ignore[arg-type]
        "probe_duration_p50_ms": 1000 * pct(durations, 50),
        "probe_duration_p99_ms": 1000 * pct(durations, 99),
        "peak_rss_mb": int(summary["vm_hwm_kib"]) / 1024,  # type: ignore[call-overload]
        "cpu_s": cpu_run,
        "cpu_pct_of_one_core": 100 * cpu_run / float(summary["window_s"]),  # type: ignore[arg-type]
        "cpu_s_per_1000_probes": 1000 * cpu_run / max(completed, 1),
        "spans_exported": summary["exported_spans"],
        "spans_dropped": summary["dropped_spans"],
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


if __name__ == "__main__":
    main()
