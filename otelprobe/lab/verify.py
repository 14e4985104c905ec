"""`otelprobe lab verify`: how exact the lab's faults and the prober's phase spans are, against the wire.

Two measurements. Fault accuracy: each delay fault achieved vs requested, from the raw socket
clients of `lab/servers/measure.py`. Timing error: real HTTPS probes (`HTTPProbe`) against a lab
target running in its own process, at 1 and at several hundred concurrent probes, each span
compared with the same connection's phases in a packet capture (`lab/capture.py`, `lab/wire.py`;
matched by the client port the `tcp.connect` span records). bench/timing_error.py drives it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from otelprobe.config.common import TLSClientConfig
from otelprobe.lab._verify_target import TargetSpec
from otelprobe.lab.capture import PacketCapture
from otelprobe.lab.servers.measure import Accuracy, measure_accuracy
from otelprobe.lab.wire import wire_phases
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.probes.http.probe import HTTPProbe
from otelprobe.results import ProbeResult
from otelprobe.telemetry import names

PHASES: Final = (
    names.SPAN_TCP_CONNECT,
    names.SPAN_TLS_HANDSHAKE,
    names.SPAN_HTTP_REQUEST,
    names.SPAN_HTTP_TTFB,
    names.SPAN_HTTP_TRANSFER,
)


@dataclass(frozen=True, slots=True)
class PhaseError:
    """|span - wire| over the matched connections of one phase (milliseconds)."""

    phase: str
    samples: int
    mean_abs_ms: float
    p99_abs_ms: float
    mean_signed_ms: float
    """Positive: the span is longer than the wire."""
    wire_median_ms: float


@dataclass(frozen=True, slots=True)
class TimingRun:
    concurrency: int
    probes: int
    matched: int
    failed: int
    capture_drops: int
    errors: list[PhaseError] = field(default_factory=list)


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def summarize(pairs: dict[str, list[tuple[int, int]]]) -> list[PhaseError]:
    """Per phase, (span_ns, wire_ns) pairs -> error statistics."""
    out: list[PhaseError] = []
    for phase in PHASES:
        matched = pairs.get(phase, [])
        if not matched:
            continue
        signed = [(span - wire) / 1e6 for span, wire in matched]
        absolute = [abs(e) for e in signed]
        out.append(
            PhaseError(
                phase,
                len(matched),
                statistics.fmean(absolute),
                _quantile(absolute, 0.99),
                statistics.fmean(signed),
                statistics.median(wire / 1e6 for _, wire in matched),
            )
        )
    return out


def match(
    results: Sequence[ProbeResult], wire_by_port: dict[int, dict[str, int | None]]
) -> dict[str, list[tuple[int, int]]]:
    """Pair each probe's phase spans with the wire phases of its connection (by client port)."""
    pairs: dict[str, list[tuple[int, int]]] = {}
    for result in results:
        connect = next((p for p in result.phases if p.name == names.SPAN_TCP_CONNECT), None)
        port = connect.attributes.get(names.NETWORK_LOCAL_PORT) if connect else None
        wire = wire_by_port.get(port) if isinstance(port, int) else None
        if wire is None:
            continue
        for phase in result.phases:
            truth = wire.get(phase.name)
            if truth is not None and not phase.failed:
                pairs.setdefault(phase.name, []).append((phase.duration_ns, truth))
    return pairs


@contextlib.asynccontextmanager
async def lab_target(spec: TargetSpec) -> AsyncIterator[tuple[int, Path]]:
    """Run the target process; yields (TLS port on 127.0.0.1, path of the CA to trust)."""
    with tempfile.TemporaryDirectory(prefix="otelprobe-verify-") as tmp:
        ca_path = Path(tmp, "ca.pem")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "otelprobe.lab._verify_target",
            f"--ca={ca_path}",
            *spec.to_argv(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), 30.0)
            if not line.strip():
                raise RuntimeError("the lab target did not start")
            yield int(line), ca_path
        finally:
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10.0)
            except TimeoutError:
                process.kill()
                await process.wait()


async def probe_rounds(
    port: int, ca_path: Path, concurrency: int, probes: int, timeout_s: float = 10.0
) -> list[ProbeResult]:
    """`probes` HTTPS probes to 127.0.0.1:`port`, started `concurrency` at a time (all at once per round)."""
    config = HTTPProbeConfig(
        name="verify",
        url=f"https://127.0.0.1:{port}/",
        tls=TLSClientConfig(ca_file=str(ca_path)),
        timeout_s=timeout_s,
        propagate_trace_context=False,
    )
    context = ProbeContext(vantage="verify")
    probers = [HTTPProbe(config, context) for _ in range(concurrency)]
    results: list[ProbeResult] = []
    remaining = max(1, probes)
    while remaining > 0:
        batch = probers[: min(concurrency, remaining)]
        for batch_results in await asyncio.gather(*(p.run() for p in batch)):
            results.extend(batch_results)
        remaining -= len(batch)
    return results


async def timing_error(
    spec: TargetSpec, concurrency: int, probes: int, *, port: int, ca_path: Path
) -> TimingRun:
    """Probe a running target under capture and compare each span with the wire."""
    async with PacketCapture(port) as capture:
        results = await probe_rounds(port, ca_path, concurrency, probes)
    truth = {p: w.as_dict() for p, w in wire_phases(capture.result.segments, port).items()}
    pairs = match(results, truth)
    matched = len(pairs.get(names.SPAN_TCP_CONNECT, []))
    failed = sum(1 for r in results if not r.success)
    return TimingRun(concurrency, len(results), matched, failed, capture.result.drops, summarize(pairs))


async def verify(
    concurrencies: Sequence[int] = (1, 300), probes: int = 300, spec: TargetSpec | None = None
) -> list[TimingRun]:
    """Timing error at each concurrency (at least `probes` probes each) against one target."""
    spec = spec or TargetSpec()
    runs: list[TimingRun] = []
    async with lab_target(spec) as (port, ca_path):
        await probe_rounds(port, ca_path, 1, 3)  # warm up both processes
        for concurrency in concurrencies:
            count = max(probes, concurrency)
            runs.append(await timing_error(spec, concurrency, count, port=port, ca_path=ca_path))
    return runs


async def fault_accuracy(
    delays_s: Sequence[float] = (0.01, 0.05), samples: int = 20
) -> list[tuple[str, Accuracy]]:
    """Achieved vs requested TTFB and TLS handshake delays, from raw socket clients."""
    out: list[tuple[str, Accuracy]] = []
    for kind in ("ttfb_delay", "tls_delay"):
        for delay in delays_s:
            out.append((kind, await measure_accuracy(kind, delay, samples)))
    return out


def format_runs(runs: Sequence[TimingRun]) -> str:
    lines = [
        "| concurrency | phase | n | wire median ms | mean abs err ms | p99 abs err ms | mean signed ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for e in run.errors:
            lines.append(
                f"| {run.concurrency} | {e.phase} | {e.samples} | {e.wire_median_ms:.3f} | "
                f"{e.mean_abs_ms:.3f} | {e.p99_abs_ms:.3f} | {e.mean_signed_ms:+.3f} |"
            )
    notes = [
        f"concurrency {r.concurrency}: {r.probes} probes, {r.matched} matched to the capture, "
        f"{r.failed} failed, {r.capture_drops} packets dropped by the capture"
        for r in runs
    ]
    return "\n".join([*lines, "", *notes])


def format_accuracy(rows: Sequence[tuple[str, Accuracy]]) -> str:
    lines = [
        "| fault | requested ms | median achieved ms | median error ms | p90 error ms | max error ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, a in rows:
        lines.append(
            f"| {kind} | {a.requested_s * 1e3:.1f} | {a.median_s * 1e3:.3f} | "
            f"{a.median_error_s * 1e3:+.3f} | {a.p90_error_s * 1e3:+.3f} | {a.max_error_s * 1e3:+.3f} |"
        )
    return "\n".join(lines)
