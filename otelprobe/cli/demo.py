"""`otelprobe demo`: the whole loop on embedded defaults, on loopback, with no Collector.

Lab fault servers (DNS, HTTP, TLS) stand in for a small shop; four of its five targets carry one
known fault each. The real runtime (config file -> scheduler -> probes -> telemetry) probes them and
exports every trace over OTLP/HTTP to an in-process OTLP receiver, which decodes the protobuf; the demo
then prints each target's last waterfall and the per-phase medians of the probe records read from the
received spans (attribution/records.py), beside the fault that was injected.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import yaml

from otelprobe.results import ProbeResult, TraceRef

if TYPE_CHECKING:
    from otelprobe.attribution.records import ProbeRecord
    from otelprobe.config.models import Config
    from otelprobe.runtime import TelemetrySink
    from otelprobe.sidecar.receiver import OTLPReceiver


@dataclass(frozen=True, slots=True)
class DemoTarget:
    name: str
    url_template: str  # {port} of the server it points at is filled in at start
    server: str
    injected: str  # the fault, as a person would say it
    cause: str  # DESIGN §5 root-cause class of that fault


TARGETS: Final = (
    DemoTarget("shop", "https://shop.lab.test:{port}/", "tls", "none (healthy baseline)", "-"),
    DemoTarget("search", "https://search.lab.test:{port}/", "tls_slow", "TLS handshake +80 ms", "tls_slow"),
    DemoTarget(
        "checkout", "http://checkout.lab.test:{port}/", "http_slow", "backend TTFB +150 ms", "backend_slow"
    ),
    DemoTarget("catalog", "http://catalog.lab.test:{port}/", "http", "DNS answers +60 ms", "dns_latency"),
    DemoTarget(
        "payments", "http://payments.lab.test:{port}/", "http_5xx", "50% of responses 503", "http_error"
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=8.0, help="seconds to probe (default 8)")
    parser.add_argument("--interval", default="500ms", help="probe interval of every target (default 500ms)")
    parser.add_argument("--out", type=Path, help="also write the received traces here as OTLP JSON lines")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args.duration, args.interval, args.out))


class _LatestResults:
    """Wraps the runtime's telemetry sink to keep each target's latest result for the waterfall."""

    def __init__(self, inner: TelemetrySink) -> None:
        self.inner = inner
        self.latest: dict[str, ProbeResult] = {}

    def record(self, result: ProbeResult, link: TraceRef | None) -> TraceRef | None:
        self.latest[result.target] = result
        return self.inner.record(result, link)

    async def shutdown(self) -> None:
        await self.inner.shutdown()


async def _demo(duration_s: float, interval: str, out: Path | None) -> int:
    from otelprobe.lab.certs import LabCA
    from otelprobe.lab.faults import HTTP5xx, TLSDelay, TTFBDelay
    from otelprobe.lab.servers.dns import DNSFault, DNSFaultServer
    from otelprobe.lab.servers.http import HTTPFaultServer
    from otelprobe.lab.servers.tls import TLSFront
    from otelprobe.runtime import Runtime, default_sink
    from otelprobe.sidecar.receiver import OTLPReceiver

    hosts = ("localhost", "127.0.0.1", *(f"{t.name}.lab.test" for t in TARGETS))
    ca = LabCA(hosts=hosts)
    zone = {t.name: {"A": ["127.0.0.1"]} for t in TARGETS}
    http = HTTPFaultServer(body_size=16 * 1024, seed=1)
    http_slow = HTTPFaultServer(body_size=16 * 1024, seed=2)
    http_5xx = HTTPFaultServer(body_size=16 * 1024, seed=3)
    async with (
        http,
        http_slow,
        http_5xx,
        DNSFaultServer(zone=zone) as dns_server,
        OTLPReceiver(grpc_port=None) as receiver,
    ):
        http_slow.apply(TTFBDelay.model_validate({"delay": "150ms"}))
        http_5xx.apply(HTTP5xx(rate=0.5, status=503))
        dns_server.set_fault("catalog", DNSFault.delayed(0.060))
        tls = TLSFront(ca, upstream=("127.0.0.1", http.port), seed=4)
        tls_slow = TLSFront(ca, upstream=("127.0.0.1", http.port), seed=5)
        async with tls, tls_slow:
            tls_slow.apply(TLSDelay.model_validate({"delay": "80ms"}))
            ports = {"http": http.port, "http_slow": http_slow.port, "http_5xx": http_5xx.port}
            ports |= {"tls": tls.port, "tls_slow": tls_slow.port}
            with tempfile.TemporaryDirectory(prefix="otelprobe-demo-") as tmp:
                config_path = _write_config(Path(tmp), ca, ports, dns_server.port, receiver, interval, out)
                print(f"otelprobe demo: {len(TARGETS)} lab targets on 127.0.0.1, config {config_path.name}:")
                print(config_path.read_text())
                print(
                    f"probing for {duration_s:g} s; traces go over OTLP/HTTP to {receiver.http_endpoint} ..."
                )
                sinks: list[_LatestResults] = []

                def sink_factory(config: Config) -> TelemetrySink:
                    sinks.append(_LatestResults(default_sink(config)))
                    return sinks[-1]

                runtime = Runtime(config_path, sink_factory=sink_factory, vantage="demo")
                serving = asyncio.create_task(runtime.serve())
                await asyncio.sleep(duration_s)
                runtime.request_stop()
                await serving
    _print_report(sinks[-1].latest if sinks else {}, receiver)
    return 0 if receiver.stats.spans > 0 else 1


def _write_config(
    tmp: Path,
    ca: object,
    ports: dict[str, int],
    dns_port: int,
    receiver: OTLPReceiver,
    interval: str,
    out: Path | None,
) -> Path:
    from otelprobe.lab.certs import LabCA

    assert isinstance(ca, LabCA)
    ca_file = ca.write_pem_files(tmp / "certs")["ca"]
    exporters: list[dict[str, object]] = [{"type": "otlp_http", "endpoint": receiver.http_endpoint}]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        exporters.append({"type": "file", "path": str(out / "traces.jsonl")})
    config = {
        "vantage": "demo",
        "defaults": {
            "interval": interval,
            "timeout": "400ms",
            "resolver": {"server": f"127.0.0.1:{dns_port}"},
        },
        "telemetry": {"exporters": exporters, "queue": {"schedule_delay": "200ms"}},
        "targets": [
            {
                "name": t.name,
                "kind": "http",
                "url": t.url_template.format(port=ports[t.server]),
                **({"tls": {"ca_file": str(ca_file)}} if t.url_template.startswith("https") else {}),
            }
            for t in TARGETS
        ],
    }
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# The report's phase columns: header, ProbeRecord field.
_PHASE_COLUMNS: Final = (
    ("lookup", "dns_s"),
    ("connect", "connect_s"),
    ("handshake", "tls_s"),
    ("request", "request_s"),
    ("ttfb", "ttfb_s"),
    ("transfer", "transfer_s"),
)


def _print_report(latest: dict[str, ProbeResult], receiver: OTLPReceiver) -> None:
    from otelprobe.cli.waterfall import render

    color = sys.stdout.isatty()
    print("\nlast probe of each target (phases measured at the socket):\n")
    for target in TARGETS:
        if target.name in latest:
            print(render(latest[target.name], color=color))
            print(f"     injected fault: {target.injected}\n")
    # Per-phase medians, from the records of what the OTLP receiver decoded (not from memory).
    records = receiver.drain_records()
    by_target: dict[str, list[ProbeRecord]] = defaultdict(list)
    for record in records:
        by_target[record.target].append(record)
    print(f"received over OTLP: {receiver.record_stats.spans} spans in {len(records)} probe traces")
    print(f"\nmedian phase durations in ms, from the received spans\n{'target':<10}{'ok':>6}", end="")
    print("".join(f"{header:>11}" for header, _ in _PHASE_COLUMNS), f"  {'injected (cause)'}")
    for target in TARGETS:
        attempts = by_target.get(target.name, [])
        ok = sum(r.success for r in attempts)
        row = f"{target.name:<10}{(f'{ok}/{len(attempts)}'):>6}"
        for _, column in _PHASE_COLUMNS:
            values = [v for r in attempts if not math.isnan(v := getattr(r, column))]
            row += f"{statistics.median(values) * 1e3:>11.2f}" if values else f"{'-':>11}"
        print(row, f"  {target.injected} ({target.cause})")
