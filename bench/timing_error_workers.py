"""Timing error of the HTTP probe's phase spans against the wire, through `otelprobe run --workers N`
at a steady probe rate (issue 13, "Exact first bytes at any load": "at the max sustained rate with
workers"). bench/timing_error.py measures the same in one process, with in-process probes.

The product path, as a user runs it: `otelprobe run --workers N CONFIG` (the supervisor and N
worker processes) probes `rate x interval` HTTPS targets on `--interval`, each resolving
`www.lab.test` through the lab target's DNS server and fetching over a fresh TLS connection
(`otelprobe/lab/verification/target.py`: the same injected DNS / TLS / TTFB delays and trickled
body as bench/timing_error.py). Spans go over OTLP/HTTP to the bench's sink process
(bench/_otlp_sink.py --spans-out, bench/_span_log.py). Truth: a packet capture on lo
(`lab/verification/capture.py`, kernel stamps), opened after a warm-up for `--seconds`; each
exported trace whose root span lies inside the capture is matched to its connection by the client
port its `tcp.connect` span records (`network.local.port`) and, since loopback reuses TIME_WAIT
ports within seconds, by the SYN time (`verify.match` with `wire.connection_at`, as `lab verify` does).
dns.lookup is not captured (UDP): it is reported against the injected delay.
`--server nginx` serves the same TTFB delay and trickled body from nginx + its echo module (no DNS,
no TLS delay), for rates the lab target (one Python process) cannot serve.

A rate counts as sustained when >= 95 % of the requested probes started in the window, >= 99 % of
them succeeded and the p99 probe duration is within 100 ms of the injected delays' sum (the
cost bench's 100 ms p99 bound, over the delays the target adds on purpose).

    sudo .venv/bin/python bench/timing_error_workers.py --workers 1 2 --rates 50 100 --seconds 10 \\
        [--repetitions 3] [--interval 2] [--server lab|nginx] [--no-dns] [--json out.json]
        [--dump-worst N]   # the N probes furthest off the wire: spans and segments on one clock
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from _common import (
    CLK_TCK,
    NGINX,
    PYTHON,
    REPO,
    Certs,
    OTLPSink,
    free_port,
    make_certs,
    nginx_conf,
    pct,
    wait_port,
)
from _span_log import ExportedProbe, read_probes

from otelprobe import names
from otelprobe.lab.verification import verify
from otelprobe.lab.verification.capture import SYN, PacketCapture, Segment
from otelprobe.lab.verification.target import TargetSpec
from otelprobe.lab.verification.wire import WireConnection, connection_at, wire_connections, wire_phases
from otelprobe.results import ProbeResult

ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
MAX_EXTRA_P99_S = 0.1
_MARGIN_NS = 20_000_000
"""A probe counts when its root span starts this long after the capture began (its SYN is in)."""


@dataclass
class RunResult:
    workers: int
    rate: float
    run: int
    window_s: float
    started: int
    """Probes whose root span started inside the capture window."""
    failed: int
    in_capture: int
    """Successful probes started and finished inside the capture (the ones compared)."""
    matched: int
    """...of which the wire has a connection at the client port their tcp.connect recorded."""
    capture_drops: int
    p50_ms: float
    p99_ms: float
    per_worker: dict[str, int]
    cpu_cores: dict[str, float]
    """Share of one core each process used over the window: workers, lab target, capture, sink."""
    phases: dict[str, tuple[float, float, int, float]] = field(default_factory=dict)
    """phase -> (mean |span - wire| ms, p99 ms, samples, mean signed ms: > 0 the span is longer)."""
    export_errors: int = 0
    reused_ports: int = 0
    """Client ports the capture saw more than one connection on (matched by SYN time)."""
    port_only_worst_p99_ms: float = 0.0
    """The worst phase's p99 had each probe been paired with its port's last connection."""
    ttfb_off_1ms: int = 0
    """Compared probes whose http.ttfb is off the wire by more than 1 ms..."""
    ttfb_off_first_byte_edge: int = 0
    """...of which the first-byte edge alone moved (transfer off by the opposite, within 0.2 ms)."""

    @property
    def achieved(self) -> float:
        return self.started / self.window_s

    def sustained(self, nominal_s: float) -> bool:
        return (
            self.achieved >= 0.95 * self.rate
            and self.failed <= 0.01 * max(self.started, 1)
            and self.p99_ms <= (nominal_s + MAX_EXTRA_P99_S) * 1e3
        )


@dataclass(frozen=True, slots=True)
class Served:
    """The HTTPS server the probes fetch from: its port, URL, CA, DNS server if any, processes."""

    port: int
    url: str
    ca_path: Path
    dns_port: int | None
    pids: list[int]


@contextlib.asynccontextmanager
async def lab_server(spec: TargetSpec, by_name: bool) -> AsyncIterator[Served]:
    """The lab verification target (one Python process: DNS, TLS front, HTTP server)."""
    async with verify.lab_target(spec) as target:
        pids = [p for p in children(os.getpid()) if "otelprobe.lab.verification.target" in cmdline(p)]
        dns_port = target.dns_port if by_name else None
        yield Served(target.port, target.url(by_name=by_name), target.ca_path, dns_port, pids)


def echo_nginx_conf(directory: Path, port: int, certs: Certs, spec: TargetSpec) -> str:
    """nginx + the echo module serving the lab target's TTFB delay and trickled body (no DNS, no
    TLS delay): sleep `ttfb`, then each chunk flushed on its own, `chunk / rate` apart. TLS 1.3
    without session tickets, as the lab target, so the wire's TLS and TTFB edges stay unambiguous."""
    chunk = spec.trickle_chunk_bytes if spec.trickle_bytes_per_s else spec.body_bytes
    chunks = max(1, spec.body_bytes // chunk)
    gap_s = chunk / spec.trickle_bytes_per_s if spec.trickle_bytes_per_s else 0.0
    body = []
    for i in range(chunks):
        if i and gap_s:
            body.append(f"echo_sleep {gap_s:.3f};")
        body.append(f"echo -n {'x' * chunk};")
        body.append("echo_flush;")
    ttfb = f"echo_sleep {spec.ttfb_s:.3f};" if spec.ttfb_s else ""
    server = f"""
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {certs.cert};
        ssl_certificate_key {certs.key};
        ssl_protocols TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
        ssl_conf_command NumTickets 0;
        location / {{ {ttfb} {" ".join(body)} }}"""
    return nginx_conf(directory, server, preamble=f"load_module {ECHO_MODULE};")


@contextlib.asynccontextmanager
async def nginx_server(spec: TargetSpec, tmp: Path) -> AsyncIterator[Served]:
    """nginx (C, one worker process) in place of the lab target, for rates the lab target cannot serve."""
    directory = Path(tempfile.mkdtemp(prefix="nginx-", dir=tmp))
    (directory / "tmp").mkdir()
    certs = make_certs(directory)
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(echo_nginx_conf(directory, port, certs, spec))
    process = await asyncio.create_subprocess_exec(
        NGINX, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")
    )
    try:
        await asyncio.to_thread(wait_port, port)
        yield Served(
            port, f"https://127.0.0.1:{port}/", certs.ca, None, [process.pid, *children(process.pid)]
        )
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGQUIT)  # nginx's graceful stop; the master takes its worker
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


def config_text(served: Served, rate: float, interval_s: float, endpoint: str) -> str:
    """`rate x interval` copies of the target, each on `interval`: the scheduler starts `rate`/s."""
    count = max(1, round(rate * interval_s))
    target_fields: dict[str, Any] = {
        "kind": "http",
        "url": served.url,
        "tls": {"ca_file": str(served.ca_path)},
        "ip": "ip4",
    }
    if served.dns_port is not None:
        target_fields["resolver"] = {"server": f"127.0.0.1:{served.dns_port}"}
    config = {
        "vantage": "bench",
        "defaults": {"interval": f"{int(interval_s * 1000)}ms", "timeout": f"{int(interval_s * 1000)}ms"},
        "telemetry": {
            "exporters": [{"type": "otlp_http", "endpoint": endpoint, "timeout": "10s"}],
            # Room for every span of a window: a dropped span would be a probe left unmatched.
            "queue": {"max_queue_size": 65536, "max_export_batch_size": 2048, "schedule_delay": "500ms"},
            "metric_export_interval": "60s",
        },
        "targets": [{"name": f"lab-{i:05d}", **target_fields} for i in range(count)],
    }
    return yaml.safe_dump(config, sort_keys=False)


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        path = task / "children"
        if path.exists():
            found.extend(int(p) for p in path.read_text().split())
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def processes(prober: int, sink: int, server: list[int]) -> dict[str, list[int]]:
    """The processes whose CPU the run reports, by role (found through /proc, our own children)."""
    workers = children(prober)  # --workers 1 is one process, no supervisor
    roles: dict[str, list[int]] = {
        "workers": workers or [prober],
        "supervisor": [prober] if workers else [],
        "server": server,
        "capture": [p for p in children(os.getpid()) if "otelprobe.lab.verification.capture" in cmdline(p)],
        "sink": [sink],
    }
    return roles


def ticks(roles: dict[str, list[int]]) -> dict[str, int]:
    return {role: sum(cpu_ticks(pid) for pid in pids) for role, pids in roles.items()}


async def stop_prober(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(60):
            return await process.wait()
    except TimeoutError:
        process.kill()
        return await process.wait()


async def one_run(
    spec: TargetSpec, workers: int, rate: float, args: argparse.Namespace, run: int, tmp: Path
) -> RunResult:
    spans_path = tmp / f"spans-{workers}-{rate:g}-{run}.jsonl"
    log_path = tmp / f"run-{workers}-{rate:g}-{run}.log"
    config_path = tmp / f"probes-{workers}-{rate:g}-{run}.yaml"
    with OTLPSink(spans_out=spans_path) as sink:
        assert sink.proc is not None
        server = nginx_server(spec, tmp) if args.server == "nginx" else lab_server(spec, not args.no_dns)
        async with server as target:
            config_path.write_text(config_text(target, rate, args.interval, sink.endpoint("otlp_http")))
            with log_path.open("wb") as log:
                prober = await asyncio.create_subprocess_exec(
                    PYTHON,
                    "-m",
                    "otelprobe.cli",
                    "run",
                    "--workers",
                    str(workers),
                    str(config_path),
                    stdout=log,
                    stderr=log,
                    cwd=REPO,
                )
            try:
                await asyncio.sleep(args.warmup)
                if prober.returncode is not None:
                    raise RuntimeError(f"otelprobe run exited: {log_path.read_text()[-2000:]}")
                async with PacketCapture(target.port) as capture:
                    roles = processes(prober.pid, sink.proc.pid, target.pids)
                    before = ticks(roles)
                    t0_wall, t0 = time.time_ns(), time.monotonic()
                    epoch_offset_ns = time.time_ns() - time.monotonic_ns()
                    await asyncio.sleep(args.seconds)
                    t1_wall, t1 = time.time_ns(), time.monotonic()
                    after = ticks(roles)
            finally:
                code = await stop_prober(prober)
        sink.counts()  # answered once the sink has handled every request sent before it
    log_text = log_path.read_text(errors="replace")
    if code != 0:
        print(f"  note: otelprobe run exited {code}: {log_text[-1500:]}", file=sys.stderr)
    probes = read_probes(spans_path.read_text().splitlines())
    window_s = t1 - t0
    cpu = {role: (after[role] - before[role]) / CLK_TCK / window_s for role in roles}
    result = compare(
        probes, capture.result, target.port, t0_wall, t1_wall, spec, epoch_offset_ns, args.dump_worst
    )
    result.update(
        workers=workers,
        rate=rate,
        run=run,
        window_s=window_s,
        cpu_cores=cpu,
        export_errors=log_text.count("export of traces"),
    )
    spans_path.unlink()
    return RunResult(**result)


def own_connections(
    results: Sequence[ProbeResult], segments: Sequence[Segment], server_port: int, epoch_offset_ns: int
) -> tuple[list[tuple[ProbeResult, dict[int, dict[str, int | None]]]], int]:
    """Each probe with the wire phases of its own connection (wire.connection_at: the one on its
    client port whose SYN left when its tcp.connect began; span epoch time - `epoch_offset_ns` =
    the capture's CLOCK_MONOTONIC), and how many client ports carried more than one connection."""
    connections = wire_connections(segments, server_port)
    out: list[tuple[ProbeResult, dict[int, dict[str, int | None]]]] = []
    for result in results:
        truth: dict[int, dict[str, int | None]] = {}
        for phase in result.phases:
            local = phase.attributes.get(names.NETWORK_LOCAL_PORT)
            if phase.name != names.SPAN_TCP_CONNECT or not isinstance(local, int):
                continue
            wire = connection_at(connections.get(local, ()), phase.start_ns - epoch_offset_ns)
            if wire is not None:
                truth[local] = wire.as_dict()
        out.append((result, truth))
    return out, sum(len(on_port) > 1 for on_port in connections.values())


def worst_probes(
    own: Sequence[tuple[ProbeResult, dict[int, dict[str, int | None]]]],
    segments: Sequence[Segment],
    server_port: int,
    epoch_offset_ns: int,
    count: int,
) -> str:
    """The `count` probes furthest off the wire in any phase: their spans and their connection's
    segments on one clock (ms from the SYN), to see which edge moved."""
    scored: list[tuple[int, ProbeResult, int]] = []
    for result, truth in own:
        for port, wire in truth.items():
            worst = max(
                (abs(p.duration_ns - (wire.get(p.name) or p.duration_ns)) for p in result.phases), default=0
            )
            scored.append((worst, result, port))
    lines: list[str] = []
    for worst, result, port in sorted(scored, key=lambda s: -s[0])[:count]:
        connect = next(p for p in result.phases if p.attributes.get(names.NETWORK_LOCAL_PORT) == port)
        at = connect.start_ns - epoch_offset_ns
        group = [
            s for s in segments if port in (s.src_port, s.dst_port) and abs(s.ts_ns - at) < 3_000_000_000
        ]
        syn = min((s.ts_ns for s in group if s.flags & SYN and s.dst_port == server_port), default=at)
        lines.append(f"port {port}: worst error {worst / 1e6:.3f} ms; spans (ms from the SYN):")
        for p in result.phases:
            lines.append(
                f"    {p.name:14} {(p.start_ns - epoch_offset_ns - syn) / 1e6:9.3f} "
                f"{(p.end_ns - epoch_offset_ns - syn) / 1e6:9.3f}"
            )
        for s in sorted(group, key=lambda s: s.ts_ns):
            way = "->" if s.dst_port == server_port else "<-"
            lines.append(
                f"    {(s.ts_ns - syn) / 1e6:9.3f} {way} flags {s.flags:#04x} {s.payload_bytes:5d} B "
                f"first {s.first_byte:#04x}"
            )
    return "\n".join(lines)


def compare(
    probes: Sequence[ExportedProbe],
    capture: Any,
    server_port: int,
    t0_wall: int,
    t1_wall: int,
    spec: TargetSpec,
    epoch_offset_ns: int,
    dump_worst: int = 0,
) -> dict[str, Any]:
    """Per phase |span - wire| of the probes inside the capture window, and the window's counts."""
    started = [p for p in probes if t0_wall + _MARGIN_NS <= p.result.start_ns < t1_wall]
    ok = [p for p in started if not p.failed]
    inside = [p.result for p in ok if p.result.end_ns <= t1_wall]
    own, reused_ports = own_connections(inside, capture.segments, server_port, epoch_offset_ns)
    # What pairing by the port alone (each port's last connection) would give, for comparison.
    last_by_port = {
        port: [WireConnection(None, w)] for port, w in wire_phases(capture.segments, server_port).items()
    }
    port_only = max((e.p99_abs_ms for e in verify.summarize(verify.match(inside, last_by_port))), default=0.0)
    if dump_worst:
        print(worst_probes(own, capture.segments, server_port, epoch_offset_ns, dump_worst))
    pairs = verify.match(inside, wire_connections(capture.segments, server_port), epoch_offset_ns)
    phases = {
        e.phase: (e.mean_abs_ms, e.p99_abs_ms, e.samples, e.mean_signed_ms) for e in verify.summarize(pairs)
    }
    dns = [
        abs(ph.duration_s - spec.dns_delay_s) * 1e3
        for r in inside
        for ph in r.phases
        if ph.name == names.SPAN_DNS_LOOKUP and not ph.failed
    ]
    if dns:
        phases["dns.lookup (vs injected)"] = (
            statistics.fmean(dns),
            verify.quantile(dns, 0.99),
            len(dns),
            0.0,
        )
    durations = [(p.result.end_ns - p.result.start_ns) / 1e6 for p in started]
    late_first_byte, off_by_1ms = 0, 0
    for r, own_truth in own:
        connect = next((ph for ph in r.phases if ph.name == names.SPAN_TCP_CONNECT), None)
        wire = own_truth.get(int(str(connect.attributes.get(names.NETWORK_LOCAL_PORT)))) if connect else None
        spans = {ph.name: ph.duration_ns for ph in r.phases}
        ttfb, transfer = names.SPAN_HTTP_TTFB, names.SPAN_HTTP_TRANSFER
        if not wire or wire.get(ttfb) is None or wire.get(transfer) is None or ttfb not in spans:
            continue
        ttfb_err = spans[ttfb] - int(str(wire[ttfb]))
        if abs(ttfb_err) > 1_000_000:
            off_by_1ms += 1
            # The first-byte edge moved: ttfb longer, transfer shorter by the same (their sum exact).
            if abs(spans.get(transfer, 0) - int(str(wire[transfer])) + ttfb_err) < 200_000:
                late_first_byte += 1
    per_worker: dict[str, int] = {}
    for p in started:
        per_worker[p.instance] = per_worker.get(p.instance, 0) + 1
    return {
        "started": len(started),
        "failed": len(started) - len(ok),
        "in_capture": len(inside),
        "matched": len(pairs.get(names.SPAN_TCP_CONNECT, [])),
        "capture_drops": capture.drops,
        "p50_ms": pct(durations, 50),
        "p99_ms": pct(durations, 99),
        "per_worker": per_worker,
        "phases": phases,
        "ttfb_off_1ms": off_by_1ms,
        "ttfb_off_first_byte_edge": late_first_byte,
        "reused_ports": reused_ports,
        "port_only_worst_p99_ms": port_only,
    }


def nominal_s(spec: TargetSpec, by_name: bool) -> float:
    transfer = spec.body_bytes / spec.trickle_bytes_per_s if spec.trickle_bytes_per_s else 0.0
    return (spec.dns_delay_s if by_name else 0.0) + spec.tls_delay_s + spec.ttfb_s + transfer


def show(r: RunResult, nominal: float) -> None:
    phases = ", ".join(f"{k} {v[0]:.3f}/{v[1]:.3f} ({v[3]:+.3f}) ms n={v[2]}" for k, v in r.phases.items())
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in r.cpu_cores.items())
    print(
        f"  w{r.workers} rate {r.rate:g} run {r.run}: started {r.achieved:.1f}/s, failed {r.failed}, "
        f"compared {r.in_capture}, matched {r.matched}, capture drops {r.capture_drops}, "
        f"duration p50/p99 {r.p50_ms:.0f}/{r.p99_ms:.0f} ms, sustained {r.sustained(nominal)}, "
        f"per worker {sorted(r.per_worker.values())}, CPU cores: {cpu}, export errors {r.export_errors}, "
        f"ttfb off > 1 ms {r.ttfb_off_1ms} (first-byte edge {r.ttfb_off_first_byte_edge}), "
        f"reused ports {r.reused_ports} (worst p99 by port alone {r.port_only_worst_p99_ms:.3f} ms)\n"
        f"    {phases}",
        flush=True,
    )


def table(runs: Sequence[RunResult], nominal: float) -> str:
    lines = [
        "| workers | rate/s | started/s | sustained | phase | samples | mean abs err ms | p99 abs err ms "
        "| mean signed ms |",
        "|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for key in sorted({(r.workers, r.rate) for r in runs}):
        group = [r for r in runs if (r.workers, r.rate) == key]
        achieved = statistics.median(r.achieved for r in group)
        sustained = f"{sum(r.sustained(nominal) for r in group)}/{len(group)}"
        phase_names = list(dict.fromkeys(p for r in group for p in r.phases))
        for phase in phase_names:
            per_run = [r.phases[phase] for r in group if phase in r.phases]
            mean = statistics.median(f[0] for f in per_run)
            p99 = statistics.median(f[1] for f in per_run)
            samples = int(statistics.median(f[2] for f in per_run))
            signed = statistics.median(f[3] for f in per_run)
            lines.append(
                f"| {key[0]} | {key[1]:g} | {achieved:.1f} | {sustained} | {phase} | {samples} | "
                f"{mean:.3f} | {p99:.3f} | {signed:+.3f} |"
            )
    lines.append("")
    for key in sorted({(r.workers, r.rate) for r in runs}):
        group = [r for r in runs if (r.workers, r.rate) == key]
        roles = list(group[0].cpu_cores)
        cpu = ", ".join(f"{k} {statistics.median(r.cpu_cores[k] for r in group):.2f}" for k in roles)
        lines.append(
            f"workers {key[0]}, rate {key[1]:g}: per run started {[r.started for r in group]}, "
            f"failed {[r.failed for r in group]}, compared {[r.in_capture for r in group]}, "
            f"matched {[r.matched for r in group]}, capture drops {[r.capture_drops for r in group]}, "
            f"reused ports {[r.reused_ports for r in group]} (worst phase p99 by port alone "
            f"{[round(r.port_only_worst_p99_ms, 3) for r in group]} ms), "
            f"duration p99 ms {[round(r.p99_ms) for r in group]}, "
            f"ttfb off > 1 ms {[r.ttfb_off_1ms for r in group]} "
            f"(first-byte edge {[r.ttfb_off_first_byte_edge for r in group]}); median CPU cores: {cpu}"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0])
    parser.add_argument("--seconds", type=float, default=15.0, help="capture window per run")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds before the capture opens")
    parser.add_argument("--interval", type=float, default=2.0, help="each target's interval (s)")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--dns-delay", type=float, default=0.02)
    parser.add_argument("--tls-delay", type=float, default=0.02)
    parser.add_argument("--ttfb", type=float, default=0.03)
    parser.add_argument("--trickle", type=int, default=65536, help="body bytes/s (0: no trickle)")
    parser.add_argument("--body", type=int, default=8192)
    parser.add_argument("--no-dns", action="store_true", help="probe https://127.0.0.1 (no dns.lookup)")
    parser.add_argument(
        "--server",
        choices=["lab", "nginx"],
        default="lab",
        help="lab: the lab verification target (Python); nginx: nginx + echo module serving the same "
        "TTFB delay and trickled body (no DNS, no TLS delay), for higher rates",
    )
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument(
        "--dump-worst", type=int, default=0, help="print the N probes furthest off the wire, with segments"
    )
    args = parser.parse_args()
    if args.server == "nginx":
        args.no_dns = True
    spec = TargetSpec(
        dns_delay_s=0.0 if args.no_dns else args.dns_delay,
        tls_delay_s=0.0 if args.server == "nginx" else args.tls_delay,
        ttfb_s=args.ttfb,
        trickle_bytes_per_s=args.trickle or None,
        body_bytes=args.body,
    )
    nominal = nominal_s(spec, not args.no_dns)
    print(
        f"# timing error through otelprobe run --workers, {args.server} server; {spec}; "
        f"nominal probe {nominal * 1e3:.0f} ms"
    )
    runs: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="otelprobe-timing-workers-") as tmp:
        for run in range(args.repetitions):
            for rate in args.rates:
                # Alternate the worker counts' order between runs, so that they share machine noise.
                for workers in args.workers if run % 2 == 0 else args.workers[::-1]:
                    load = Path("/proc/loadavg").read_text().split()[:3]
                    print(f"  (load average {' '.join(load)})", flush=True)
                    result = await one_run(spec, workers, rate, args, run, Path(tmp))
                    runs.append(result)
                    show(result, nominal)
    print(table(runs, nominal))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1))


if __name__ == "__main__":
    asyncio.run(main())
