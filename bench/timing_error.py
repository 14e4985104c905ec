"""Timing error of the HTTP probe's phase spans against the wire (issue 2, exactness item 1).

A lab target in its own process injects a DNS answer delay, a TLS handshake delay, a TTFB delay
and a trickled body (otelprobe/lab/verification/target.py). Real HTTPSProbes resolve `www.lab.test`
through the lab DNS server and fetch over a fresh connection each, `--concurrency` started at
once per round. Truth: a packet capture on lo with kernel timestamps (otelprobe/lab/verification/capture.py,
wire.py), matched to each probe by client port, for tcp.connect / tls.handshake / http.request /
http.ttfb / http.transfer. dns.lookup is not captured (UDP): it is reported as |span - injected
delay|, which also holds the DNS server's own overhead and sleep overshoot (~0.5-1.5 ms).
Each configuration runs `--repetitions` times; the table gives the median of the per-run figures.

    sudo .venv/bin/python bench/timing_error.py [--concurrency 1 50 300] [--probes 300] [--repetitions 3]
        [--user-space]   # baseline: kernel stamps off (phase edges at event-loop wake-ups)
        [--burst]        # rounds of probes started at once instead of steady, staggered starts
        [--busy-ms 20 --busy-every-ms 5]   # the loop also runs Python for 20 ms after every 5 ms idle
                                           # (a loop late by up to 20 ms without saturating the box)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import defaultdict

from otelprobe import names
from otelprobe.lab.verification import verify
from otelprobe.lab.verification.capture import PacketCapture
from otelprobe.lab.verification.target import TargetSpec
from otelprobe.lab.verification.wire import wire_connections
from otelprobe.net import connection as _net
from otelprobe.net import kernel_time as _kernel_time
from otelprobe.results import ProbeResult


def user_space_only() -> None:
    """Turn kernel stamps off, to measure what they buy (bench only, never in the product)."""
    setattr(_kernel_time, "enable_rx_timestamps", lambda sock: False)  # noqa: B010
    setattr(_net, "handshake_end_ns", lambda sock, syn_ns, fallback_ns: fallback_ns)  # noqa: B010


def dns_errors(results: list[ProbeResult], injected_s: float) -> list[float]:
    return [
        abs(p.duration_s - injected_s) * 1e3
        for r in results
        for p in r.phases
        if p.name == names.SPAN_DNS_LOOKUP and not p.failed
    ]


async def keep_loop_busy(busy_s: float, every_s: float) -> None:
    """Run Python code (the GIL held, as other probes' work holds it) for `busy_s`, then yield."""
    while True:
        end = time.perf_counter() + busy_s
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(every_s)


async def one_run(
    spec: TargetSpec, concurrency: int, probes: int, burst: bool, busy: tuple[float, float] = (0.0, 0.0)
) -> dict[str, tuple[float, float, int]]:
    """phase -> (mean abs error ms, p99 abs error ms, samples) for one run."""
    out: dict[str, tuple[float, float, int]] = {}
    async with verify.lab_target(spec) as target:
        await verify.probe_rounds(target, 1, 3, by_name=True)  # warm-up
        async with PacketCapture(target.port) as capture:
            busy_task = asyncio.create_task(keep_loop_busy(*busy)) if busy[0] > 0 else None
            try:
                results = await verify.probe_rounds(target, concurrency, probes, by_name=True, burst=burst)
            finally:
                if busy_task is not None:
                    busy_task.cancel()
    truth = wire_connections(capture.result.segments, target.port)
    for error in verify.summarize(verify.match(results, truth)):
        out[error.phase] = (error.mean_abs_ms, error.p99_abs_ms, error.samples)
    dns = dns_errors(results, spec.dns_delay_s)
    if dns:
        out[f"{names.SPAN_DNS_LOOKUP} (vs injected)"] = (
            statistics.fmean(dns),
            verify.quantile(dns, 0.99),
            len(dns),
        )
    failed = sum(not r.success for r in results)
    if failed or capture.result.drops:
        print(f"  note: {failed} failed probes, {capture.result.drops} capture drops")
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50, 300])
    parser.add_argument("--probes", type=int, default=300, help="probes per run (at least the concurrency)")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--dns-delay", type=float, default=0.02)
    parser.add_argument("--tls-delay", type=float, default=0.02)
    parser.add_argument("--ttfb", type=float, default=0.03)
    parser.add_argument("--trickle", type=int, default=65536, help="body bytes/s (0: no trickle)")
    parser.add_argument("--body", type=int, default=8192)
    parser.add_argument("--user-space", action="store_true")
    parser.add_argument("--burst", action="store_true", help="start each round of probes at once")
    parser.add_argument("--busy-ms", type=float, default=0.0, help="keep the loop busy this long...")
    parser.add_argument("--busy-every-ms", type=float, default=5.0, help="...after every this much idle")
    args = parser.parse_args()
    if args.user_space:
        user_space_only()
    spec = TargetSpec(
        dns_delay_s=args.dns_delay,
        tls_delay_s=args.tls_delay,
        ttfb_s=args.ttfb,
        trickle_bytes_per_s=args.trickle or None,
        body_bytes=args.body,
    )
    mode = "user-space marks" if args.user_space else "kernel stamps"
    mode += ", burst starts" if args.burst else ", steady starts"
    if args.busy_ms:
        mode += f", loop busy {args.busy_ms:g} ms after every {args.busy_every_ms:g} ms"
    print(f"# timing error ({mode}); {spec}")
    print(
        "| concurrency | phase | samples/run | mean abs err ms (median of runs) | p99 abs err ms (median) |"
    )
    print("|---:|---|---:|---:|---:|")
    for concurrency in args.concurrency:
        runs: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
        started = time.monotonic()
        for _ in range(args.repetitions):
            for phase, run in (
                await one_run(
                    spec,
                    concurrency,
                    max(args.probes, concurrency),
                    args.burst,
                    (args.busy_ms / 1e3, args.busy_every_ms / 1e3),
                )
            ).items():
                runs[phase].append(run)
        for phase, per_run in runs.items():
            mean = statistics.median(f[0] for f in per_run)
            p99 = statistics.median(f[1] for f in per_run)
            print(f"| {concurrency} | {phase} | {per_run[0][2]} | {mean:.3f} | {p99:.3f} |")
        print(f"  ({args.repetitions} runs in {time.monotonic() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
