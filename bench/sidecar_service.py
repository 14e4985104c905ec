"""The sidecar as deployed, on one core: a real `otelprobe sidecar` process pinned to one CPU, fed
over OTLP/HTTP at a fixed span rate by a sender pinned to the other (issue 9: "ingest >= 20,000
probe spans/s on one core with windows, detection and attribution running, and attribution
latency p99 <= 1 s at that load").

Everything the service does is in the measurement: the aiohttp receiver (gzip off, protobuf
bodies of ~7,700 spans, a Collector batch), ID checks, the queue, trace joining, the windower,
features, SLOs, incidents, attribution with SHAP evidence in the window thread, the JSON-lines
file, and slo.violation spans, log records and metrics exported over OTLP/HTTP to a local sink
(bench/_otlp_sink.py, on the sender's CPU). Attribution latency is the sidecar's own
(`otelprobe_sidecar_attribution_latency_seconds`: window close -> record written and handed to
the exporters), read from /metrics before and after the measured phase; CPU from /proc.

The requests are sidecar_ingest.py's (train-101's 18 series copied to 10,008, trace ids fresh):
`--faulted-share` of the copies keep the recording's faults, the others replay their series'
healthy probes, so the share sets how many series violate at once. The peer path of the decode
step is measured in this process on the same requests (sidecar_ingest.decode_rates).

    .venv/bin/python bench/sidecar_ingest.py --generate /tmp/sc_2pct.bin --seconds 80 --faulted-share 0.02
    .venv/bin/python bench/sidecar_service.py --requests /tmp/sc_2pct.bin [--rate 20000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

from bench._common import OTLPSink, cpu_s, free_port, stop  # noqa: E402
from bench.sidecar_ingest import decode_rates, peer_walk, read_requests  # noqa: E402

PROTOBUF = {"Content-Type": "application/x-protobuf"}
LATENCY = "otelprobe_sidecar_attribution_latency_seconds"
WARM_S = 30.0  # event time fed as fast as accepted before measuring: baselines warm in 3 windows
SETTLE_S = 25.0  # then wall seconds at the offered rate before measuring (the fast part's slots close)
DRAIN_S = 25.0  # after the last request: the allowed lateness (10 s) and the last slots' work


def _pin(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})


def start_sidecar(tmp: Path, sink: OTLPSink, cpu: int) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    http_port, api_port = free_port(), free_port()
    jsonl = tmp / "attributions.jsonl"
    config = {
        # max_body: the merged requests are 2-5 MB (a Collector batch of ~7,700 spans, uncompressed).
        "receiver": {
            "host": "127.0.0.1",
            "grpc_port": None,
            "http_port": http_port,
            "max_queue": 64,
            "max_body": 16 * 2**20,
        },
        "api": {"host": "127.0.0.1", "port": api_port},
        "model": str(REPO / "models" / "default"),
        "window": "2s",
        "limits": {"max_series": 10_000},
        "export": {"endpoint": sink.endpoint("otlp_http"), "protocol": "http/protobuf"},
        "output": {"jsonl": str(jsonl)},
        "learning": {"enabled": False},
    }
    path = tmp / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = (tmp / "sidecar.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "otelprobe.cli", "sidecar", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        preexec_fn=lambda: _pin(cpu),
    )
    return proc, http_port, api_port, jsonl


def histogram(text: str) -> dict[str, float]:
    """The latency histogram's cumulative buckets (by `le`) and its _count, from a /metrics page."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(f"{LATENCY}_bucket"):
            found[line.split('le="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{LATENCY}_count"):
            found["count"] = float(line.rsplit(" ", 1)[1])
    return found


def between(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """The phase's records by latency bucket: the share out within each bound, and the bound
    below which 50 % and 99 % of them fall (bucket resolution)."""
    count = after.get("count", 0.0) - before.get("count", 0.0)
    bounds = [b for b in after if b != "count"]
    shares = {b: (after[b] - before.get(b, 0.0)) / count if count else None for b in bounds}

    def bound_for(q: float) -> str | None:
        return next((b for b in bounds if (shares[b] or 0.0) >= q), None) if count else None

    return {
        "records": int(count),
        "share_within": shares,
        "p50_at_most": bound_for(0.5),
        "p99_at_most": bound_for(0.99),
    }


async def get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        return await response.text()


async def send(session: aiohttp.ClientSession, url: str, body: bytes, stats: dict[str, int]) -> None:
    """One request, retried after the sidecar's Retry-After while it says 503 (as an exporter would)."""
    for _ in range(100):
        async with session.post(url, data=body, headers=PROTOBUF) as response:
            await response.read()
            if response.status == 200:
                return
            stats[f"http_{response.status}"] = stats.get(f"http_{response.status}", 0) + 1
            if response.status != 503:
                return
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    stats["gave_up"] = stats.get("gave_up", 0) + 1


def _spans(body: bytes) -> list[Span]:
    request = ExportTraceServiceRequest.FromString(body)
    return [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


def spans_of(body: bytes) -> int:
    """Spans in a request (counted on the sender's CPU: no dict per span, as peer_walk makes)."""
    return len(_spans(body))


def _start_ns(body: bytes) -> int:
    return min(span.start_time_unix_nano for span in _spans(body))


async def at_rate(
    session: aiohttp.ClientSession,
    url: str,
    bodies: Iterator[bytes],
    rate: float,
    seconds: float,
    stats: dict[str, int],
) -> tuple[int, int, float]:
    """Requests sent on a schedule of `rate` spans/s for `seconds`; (spans, requests, max lag s)."""
    started = time.perf_counter()
    spans = requests = 0
    max_lag_s = 0.0
    pending: set[asyncio.Task[None]] = set()
    for body in bodies:
        if time.perf_counter() - started >= seconds:
            break
        due = started + spans / rate
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        else:
            max_lag_s = max(max_lag_s, now - due)
        task = asyncio.create_task(send(session, url, body, stats))
        pending.add(task)
        task.add_done_callback(pending.discard)
        spans += spans_of(body)
        requests += 1
        if len(pending) > 8:  # the sender does not pile up beyond a Collector's few consumers
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.gather(*pending)
    return spans, requests, max_lag_s


async def feed(args: argparse.Namespace, http_port: int, api_port: int, pid: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{http_port}/v1/traces"
    api = f"http://127.0.0.1:{api_port}"
    bodies: Iterator[bytes] = read_requests(args.requests)
    stats: dict[str, int] = {}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # Warm-up: WARM_S of event time fed as fast as the sidecar takes it, a request at a time;
        # then SETTLE_S at the offered rate, so that every slot of the fast part has closed (the
        # lateness is 10 s of event time) before the measured phase begins.
        first_ns: int | None = None
        for body in bodies:
            await send(session, url, body, stats)
            start_ns = _start_ns(body)
            first_ns = start_ns if first_ns is None else first_ns
            if start_ns - first_ns >= WARM_S * 1e9:
                break
        await at_rate(session, url, bodies, args.rate, SETTLE_S, stats)
        before = histogram(await get(session, f"{api}/metrics"))
        cpu_before, started = cpu_s(pid), time.perf_counter()
        spans, requests, max_lag_s = await at_rate(session, url, bodies, args.rate, args.seconds, stats)
        fed_s = time.perf_counter() - started
        cpu_fed = cpu_s(pid) - cpu_before
        await asyncio.sleep(DRAIN_S)  # the slots still open close by the idle watermark
        after = histogram(await get(session, f"{api}/metrics"))
        health = json.loads(await get(session, f"{api}/healthz"))
    return {
        "offered_spans_per_s": args.rate,
        "spans": spans,
        "requests": requests,
        "fed_s": round(fed_s, 2),
        "spans_per_s": round(spans / fed_s),
        "max_sender_lag_s": round(max_lag_s, 2),
        "kept_up": max_lag_s < 1.0 and not stats.get("http_503") and not stats.get("gave_up"),
        "sidecar_cpu_s": round(cpu_fed, 2),
        "sidecar_core_share": round(cpu_fed / fed_s, 3),
        "spans_per_sidecar_cpu_s": round(spans / cpu_fed) if cpu_fed else None,
        "answers": stats,
        "latency": between(before, after),
        "healthz_latency_recent": health.get("attribution_latency"),
        "windows_closed": health.get("windows_closed"),
        "series": health.get("series"),
        "intake": health.get("intake"),
        "rss_mib": round(psutil.Process(pid).memory_info().rss / 2**20),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=Path, required=True, help="built by sidecar_ingest.py --generate")
    parser.add_argument("--rate", type=float, default=20_000.0, help="offered spans/s")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured phase, wall seconds")
    parser.add_argument("--sidecar-cpu", type=int, default=1)
    parser.add_argument("--sender-cpu", type=int, default=0)
    args = parser.parse_args()
    _pin(args.sender_cpu)
    sample: list[bytes] = []
    sample_spans = 0
    for body in read_requests(args.requests):
        sample.append(body)
        sample_spans += peer_walk(body)
        if sample_spans > 200_000:
            break
    decode = {k: round(v) for k, v in decode_rates(sample, sample_spans).items()}
    del sample
    print(json.dumps({"decode_spans_per_cpu_s": decode}), flush=True)
    with tempfile.TemporaryDirectory(prefix="sidecar-service-") as tmp_dir, OTLPSink() as sink:
        tmp = Path(tmp_dir)
        proc, http_port, api_port, _ = start_sidecar(tmp, sink, args.sidecar_cpu)
        try:
            deadline = time.monotonic() + 60
            while b"sidecar listening" not in (tmp / "sidecar.log").read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit((tmp / "sidecar.log").read_text()[-3000:])
                time.sleep(0.2)
            result = asyncio.run(feed(args, http_port, api_port, proc.pid))
            result["exported_to_sink"] = sink.counts()
        finally:
            stop(proc, timeout_s=60)
            if os.environ.get("KEEP_LOG"):
                import shutil

                shutil.copy(tmp / "sidecar.log", os.environ["KEEP_LOG"])
    print(json.dumps(result, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
