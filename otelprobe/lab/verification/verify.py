"""`otelprobe lab verify`: how exact the lab's faults and the prober's phase spans are, against the wire.

Two measurements. Fault accuracy: each delay fault achieved vs requested, from the raw socket
clients of `lab/servers/measure.py`. Timing error: real HTTPS probes (`HTTPProbe`) against a lab
target running in its own process, at 1 and at several hundred concurrent probes, each span
compared with the same connection's phases in a packet capture (`lab/verification/capture.py`,
`lab/verification/wire.py`; matched by the client port the `tcp.connect` span records and the
SYN's time, since loopback reuses a client port within seconds).
bench/timing_error.py drives it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from otelprobe import names
from otelprobe.lab.servers.measure import Accuracy, measure_accuracy
from otelprobe.lab.verification.capture import PacketCapture
from otelprobe.lab.verification.target import TARGET_NAME, TargetSpec
from otelprobe.lab.verification.wire import WireConnection, connection_at, wire_connections
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.probes.http.probe import HTTPProbe
from otelprobe.results import ProbeResult
from otelprobe.settings.common import ResolverConfig, TLSClientConfig
from otelprobe.timing import Phase

_STAGGER_S: Final = 0.2

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


def quantile(values: Sequence[float], q: float) -> float:
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
                quantile(absolute, 0.99),
                statistics.fmean(signed),
                statistics.median(wire / 1e6 for _, wire in matched),
            )
        )
    return out


def match(
    results: Sequence[ProbeResult],
    connections: Mapping[int, Sequence[WireConnection]],
    clock_offset_ns: int = 0,
) -> dict[str, list[tuple[int, int]]]:
    """Pair each probe's phase spans with the wire phases of its own connection: the one on the
    client port its `tcp.connect` span records whose SYN left when that span began (a port can
    carry several connections of one capture). `clock_offset_ns`: the spans' clock minus the
    capture's (0 for in-process results, which are on CLOCK_MONOTONIC; epoch minus monotonic for
    exported spans)."""
    pairs: dict[str, list[tuple[int, int]]] = {}
    for result in results:
        # The connection the attempt used: with several addresses raced, the one that won.
        connect = next((p for p in result.phases if p.name == names.SPAN_TCP_CONNECT and _used(p)), None)
        port = connect.attributes.get(names.NETWORK_LOCAL_PORT) if connect else None
        if connect is None or not isinstance(port, int):
            continue
        wire = connection_at(connections.get(port, ()), connect.start_ns - clock_offset_ns)
        if wire is None:
            continue
        truth = wire.as_dict()
        for phase in result.phases:
            measured = truth.get(phase.name)
            if measured is not None and _used(phase):
                pairs.setdefault(phase.name, []).append((phase.duration_ns, measured))
    return pairs


def _used(phase: Phase) -> bool:
    """Neither failed nor a connect attempt abandoned because another address won."""
    return not phase.failed and names.PROBE_CONNECT_ABANDONED not in phase.attributes


@dataclass(frozen=True, slots=True)
class LabTarget:
    """A running target: HTTPS on 127.0.0.1:`port`, DNS for `www.lab.test` on `dns_port`."""

    port: int
    dns_port: int
    ca_path: Path

    def url(self, *, by_name: bool = False) -> str:
        return f"https://{TARGET_NAME if by_name else '127.0.0.1'}:{self.port}/"


@contextlib.asynccontextmanager
async def lab_target(spec: TargetSpec) -> AsyncIterator[LabTarget]:
    """Run the target process until the block ends."""
    with tempfile.TemporaryDirectory(prefix="otelprobe-verify-") as tmp:
        ca_path = Path(tmp, "ca.pem")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "otelprobe.lab.verification.target",
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
            tls_port, dns_port = (int(part) for part in line.split())
            yield LabTarget(tls_port, dns_port, ca_path)
        finally:
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10.0)
            except TimeoutError:
                process.kill()
                await process.wait()


async def probe_rounds(
    target: LabTarget,
    concurrency: int,
    probes: int,
    *,
    by_name: bool = False,
    burst: bool = False,
    timeout_s: float = 10.0,
) -> list[ProbeResult]:
    """`probes` HTTPS probes of `target` with `concurrency` in flight.

    steady (default): `concurrency` workers probe back to back, their starts spread over
    `_STAGGER_S`, as a scheduler spreads targets over their interval. burst: rounds of
    `concurrency` probes started at once, the worst case for the loop's wake-up lag.
    `by_name` resolves `www.lab.test` through the target's DNS server (a `dns.lookup` phase).
    """
    config = HTTPProbeConfig(
        name="verify",
        url=target.url(by_name=by_name),
        tls=TLSClientConfig(ca_file=str(target.ca_path)),
        resolver=ResolverConfig(server=f"127.0.0.1:{target.dns_port}") if by_name else ResolverConfig(),
        ip="ip4",
        timeout_s=timeout_s,
        propagate_trace_context=False,
    )
    context = ProbeContext(vantage="verify")
    probers = [HTTPProbe(config, context) for _ in range(concurrency)]
    results: list[ProbeResult] = []
    remaining = max(1, probes)
    if burst:
        while remaining > 0:
            batch = probers[: min(concurrency, remaining)]
            for batch_results in await asyncio.gather(*(p.run() for p in batch)):
                results.extend(batch_results)
            remaining -= len(batch)
        return results

    async def worker(index: int, prober: HTTPProbe) -> None:
        nonlocal remaining
        await asyncio.sleep(_STAGGER_S * index / concurrency)
        while remaining > 0:
            remaining -= 1
            results.extend(await prober.run())

    await asyncio.gather(*(worker(i, p) for i, p in enumerate(probers)))
    return results


async def timing_error(
    target: LabTarget, concurrency: int, probes: int, *, by_name: bool = False, burst: bool = False
) -> TimingRun:
    """Probe a running target under capture and compare each span with the wire."""
    async with PacketCapture(target.port) as capture:
        results = await probe_rounds(target, concurrency, probes, by_name=by_name, burst=burst)
    pairs = match(results, wire_connections(capture.result.segments, target.port))
    matched = len(pairs.get(names.SPAN_TCP_CONNECT, []))
    failed = sum(1 for r in results if not r.success)
    return TimingRun(concurrency, len(results), matched, failed, capture.result.drops, summarize(pairs))


async def verify(
    concurrencies: Sequence[int] = (1, 300),
    probes: int = 300,
    spec: TargetSpec | None = None,
    *,
    burst: bool = False,
) -> list[TimingRun]:
    """Timing error at each concurrency (at least `probes` probes each) against one target."""
    spec = spec or TargetSpec()
    runs: list[TimingRun] = []
    async with lab_target(spec) as target:
        await probe_rounds(target, 1, 3)  # warm up both processes
        for concurrency in concurrencies:
            runs.append(await timing_error(target, concurrency, max(probes, concurrency), burst=burst))
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
