"""Span building per probe: the upb-message path (before) against the wire-bytes path (now).

Times `SpanEncoder.encode` for an HTTPS-shaped attempt (root plus dns.lookup, tcp.connect,
tls.handshake, http.request, http.ttfb, http.transfer, with the attributes the HTTP probe records)
and the batch serialization the export worker does (512-span ExportTraceServiceRequests). The
previous implementation is read from git (`--old-rev`) into a temporary module, so both run in
one process, alternating, and the outputs are checked to decode to the same messages. Prints
medians over the rounds, in microseconds per probe. Takes about 10 s.

    .venv/bin/python bench/span_encoding.py [--rounds 9] [--probes 500]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otelprobe import names
from otelprobe.errors import ProbeError, ProbeTimeout
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.telemetry.batching import request_bytes
from otelprobe.telemetry.spans import SpanEncoder, any_value
from otelprobe.timing import AttributeValue, PhaseClock

REPO = Path(__file__).resolve().parent.parent
# The last commit with the upb-message span path.
OLD_REV = "b72e56d02d570870bd0117ba60a6f8594312cb46"
BATCH_SPANS = 512
MS = 1_000_000


def load_old(rev: str, directory: Path) -> tuple[ModuleType, ModuleType]:
    """spans.py and batching.py as they were at `rev`, imported under private names."""
    modules = []
    for name in ("spans", "batching"):
        source = subprocess.run(
            ["git", "show", f"{rev}:otelprobe/telemetry/{name}.py"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        path = directory / f"_old_{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(f"_old_{name}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    return modules[0], modules[1]


def https_result(index: int, error: ProbeError | None = None) -> ProbeResult:
    """An attempt shaped like HTTPProbe's over HTTPS (probes/http/probe.py, docs/spans.md)."""
    host = f"api-{index}.example.com"
    hop: dict[str, AttributeValue] = {names.PROBE_HTTP_HOP: 0}
    phases: list[tuple[str, float, float, dict[str, AttributeValue]]] = [
        (
            names.SPAN_DNS_LOOKUP,
            0.0,
            1.2,
            {names.DNS_QUESTION_NAME: host, names.DNS_ANSWERS: ("192.0.2.10", "2001:db8::10"), **hop},
        ),
        (
            names.SPAN_TCP_CONNECT,
            1.2,
            2.9,
            {
                names.NETWORK_PEER_ADDRESS: "192.0.2.10",
                names.NETWORK_PEER_PORT: 443,
                names.NETWORK_LOCAL_PORT: 40000 + index % 20000,
                **hop,
            },
        ),
        (names.SPAN_TLS_HANDSHAKE, 2.9, 7.4, dict(hop)),
        (names.SPAN_HTTP_REQUEST, 7.4, 7.5, dict(hop)),
        (names.SPAN_HTTP_TTFB, 7.5, 19.0, dict(hop)),
        (names.SPAN_HTTP_TRANSFER, 19.0, 21.0, dict(hop)),
    ]
    clock = PhaseClock()
    start = clock.now_ns()
    for name, begin_ms, end_ms, attrs in phases:
        failed = error is not None and name == names.SPAN_HTTP_TTFB
        clock.record(
            name, start + int(begin_ms * MS), start + int(end_ms * MS), error if failed else None, attrs
        )
        if failed:
            break
    attributes: dict[str, AttributeValue] = {
        names.HTTP_REQUEST_METHOD: "GET",
        names.URL_FULL: f"https://{host}/healthz",
        names.SERVER_ADDRESS: host,
        names.SERVER_PORT: 443,
        names.USER_AGENT_SYNTHETIC_TYPE: names.SYNTHETIC_TYPE_TEST,
        names.DNS_QUESTION_NAME: host,
        names.TLS_PROTOCOL_NAME: "tls",
        names.TLS_ESTABLISHED: True,
        names.TLS_PROTOCOL_VERSION: "1.3",
        names.TLS_CIPHER: "TLS_AES_256_GCM_SHA384",
        names.TLS_NEXT_PROTOCOL: "http/1.1",
        names.TLS_SERVER_SUBJECT: f"CN={host}",
        names.TLS_SERVER_ISSUER: "CN=R11,O=Let's Encrypt,C=US",
        names.TLS_SERVER_NOT_BEFORE: "2026-01-05T10:11:12+00:00",
        names.TLS_SERVER_NOT_AFTER: "2026-04-05T10:11:11+00:00",
        names.TLS_SERVER_HASH_SHA256: "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08",
        names.PROBE_TLS_CHAIN_NOT_AFTER: "2026-04-05T10:11:11+00:00",
        names.PROBE_TLS_CERT_REMAINING: 4_567_890.123,
    }
    if error is None:
        attributes |= {
            names.HTTP_RESPONSE_STATUS_CODE: 200,
            names.NETWORK_PROTOCOL_VERSION: "1.1",
            names.NETWORK_PEER_ADDRESS: "192.0.2.10",
            names.PROBE_BODY_BYTES: 1234,
        }
    return ProbeResult(
        kind="http",
        target=f"api-{index}",
        attempt=1,
        start_ns=start,
        end_ns=start + 21 * MS,
        anchor_wall_ns=clock.anchor_wall_ns,
        anchor_mono_ns=clock.anchor_mono_ns,
        phases=clock.sorted_phases(),
        error=error,
        attributes=attributes,
        trace_ref=TraceRef(random.getrandbits(128) or 1, random.getrandbits(64) or 1),
    )


def batches(spans: Sequence[Any]) -> list[Sequence[Any]]:
    return [spans[i : i + BATCH_SPANS] for i in range(0, len(spans), BATCH_SPANS)]


def run_old(
    old: tuple[ModuleType, ModuleType], results: Sequence[ProbeResult]
) -> tuple[float, float, list[bytes]]:
    spans_module, batching_module = old
    encoder = spans_module.SpanEncoder("eu-1")
    resource, scope = resource_and_scope()
    started = time.perf_counter()
    spans = [span for result in results for span in encoder.encode(result)[1]]
    encoded = time.perf_counter()
    bodies = [batching_module.build_request(b, resource, scope).SerializeToString() for b in batches(spans)]
    done = time.perf_counter()
    return encoded - started, done - encoded, bodies


def run_new(results: Sequence[ProbeResult]) -> tuple[float, float, list[bytes]]:
    encoder = SpanEncoder("eu-1")
    resource, scope = (m.SerializeToString() for m in resource_and_scope())
    started = time.perf_counter()
    spans = [span for result in results for span in encoder.encode(result)[1]]
    encoded = time.perf_counter()
    bodies = [request_bytes(b, resource, scope) for b in batches(spans)]
    done = time.perf_counter()
    return encoded - started, done - encoded, bodies


def resource_and_scope() -> tuple[Resource, InstrumentationScope]:
    attributes = {
        names.SERVICE_NAME: "otelprobe",
        names.SERVICE_INSTANCE_ID: "4d7c5e0a-1f7e-4c39-9d5b-1c9d2b1f8e11",
        names.SERVICE_VERSION: "0.1.0",
        names.OTELPROBE_VANTAGE: "eu-1",
    }
    resource = Resource(attributes=[KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()])
    return resource, InstrumentationScope(name="otelprobe", version="0.1.0")


def same_output(old: tuple[ModuleType, ModuleType], results: Sequence[ProbeResult]) -> bool:
    """Both paths, with the same random phase IDs, decode to equal requests."""
    random.seed(7)
    _, _, old_bodies = run_old(old, results)
    random.seed(7)
    _, _, new_bodies = run_new(results)
    return [ExportTraceServiceRequest.FromString(b) for b in old_bodies] == [
        ExportTraceServiceRequest.FromString(b) for b in new_bodies
    ]


def measure(
    label: str, results: Sequence[ProbeResult], rounds: int, old: tuple[ModuleType, ModuleType]
) -> None:
    runs: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    paths: dict[str, Callable[[], tuple[float, float, list[bytes]]]] = {
        "old": lambda: run_old(old, results),
        "new": lambda: run_new(results),
    }
    for index in range(rounds):
        order = ("old", "new") if index % 2 == 0 else ("new", "old")
        for name in order:
            encode_s, batch_s, _ = paths[name]()
            runs[name].append((encode_s, batch_s))
    per_probe = 1e6 / len(results)
    print(f"{label}: {len(results)} probes x {rounds} rounds, median us per probe")
    medians = {}
    for name, samples in runs.items():
        encode = statistics.median(s[0] for s in samples) * per_probe
        batch = statistics.median(s[1] for s in samples) * per_probe
        total = statistics.median(s[0] + s[1] for s in samples) * per_probe
        medians[name] = total
        print(f"  {name}: encode {encode:6.2f}  batch serialize {batch:5.2f}  total {total:6.2f}")
    print(f"  new/old total: {medians['new'] / medians['old']:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--probes", type=int, default=500)
    parser.add_argument("--old-rev", default=OLD_REV)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        old = load_old(args.old_rev, Path(tmp))
    ok = [https_result(i) for i in range(args.probes)]
    timeout = ProbeTimeout("deadline_exceeded_in_http_ttfb", "deadline exceeded in http.ttfb")
    failed = [https_result(i, timeout) for i in range(args.probes)]
    if not (same_output(old, ok) and same_output(old, failed)):
        print("old and new requests differ", file=sys.stderr)
        return 1
    measure("HTTPS success", ok, args.rounds, old)
    measure("HTTPS timeout in http.ttfb", failed, args.rounds, old)
    return 0


if __name__ == "__main__":
    sys.exit(main())
