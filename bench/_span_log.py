"""The spans a prober exported, as the timing benches need them: one JSON line per span, written by
the OTLP sink process (bench/_otlp_sink.py --spans-out), read back as one ProbeResult per trace.

A line keeps what bench/timing_error_workers.py compares with the wire: the span's name and
times, whether it failed, the client port `tcp.connect` records (`network.local.port`), whether
that connect attempt was abandoned, the target and the worker (`service.instance.id`).
OTLP times are epoch nanoseconds; a span's duration is exact (each end is the same monotonic
stamp plus the same offset, telemetry/spans.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelprobe import names
from otelprobe.attribution.otlp_decode import views_from_request
from otelprobe.results import ProbeResult
from otelprobe.timing import Phase

_KEPT = frozenset({names.NETWORK_LOCAL_PORT, names.PROBE_CONNECT_ABANDONED, names.PROBE_TARGET})


def span_lines(request: ExportTraceServiceRequest) -> Iterator[str]:
    """One line per span of an OTLP trace export request (decoded by otelprobe's one span decoder).

    Raises:
        MalformedSpan: a span whose trace or span ID has the wrong size.
    """
    for view in views_from_request(request, _KEPT):
        port = view.attributes.get(names.NETWORK_LOCAL_PORT)
        yield json.dumps(
            [
                view.trace_id,
                view.name,
                view.start_ns,
                view.end_ns,
                view.error,
                port if isinstance(port, int) else None,
                bool(view.attributes.get(names.PROBE_CONNECT_ABANDONED, False)),
                str(view.attributes.get(names.PROBE_TARGET, "")),
                str(view.resource.get(names.SERVICE_INSTANCE_ID, "")),
                not view.parent_span_id,
            ]
        )


@dataclass(frozen=True, slots=True)
class ExportedProbe:
    """One exported trace: the probe's phases on the epoch clock, its root span's outcome."""

    result: ProbeResult
    failed: bool
    instance: str


def read_probes(lines: Iterable[str]) -> list[ExportedProbe]:
    """Span lines -> one probe per trace that has its root span (phases in start order)."""
    by_trace: dict[str, list[list[object]]] = defaultdict(list)
    for line in lines:
        if line.strip():
            fields = json.loads(line)
            by_trace[str(fields[0])].append(fields)
    probes: list[ExportedProbe] = []
    for spans in by_trace.values():
        root = next((s for s in spans if s[9]), None)
        if root is None:
            continue
        phases = tuple(_phase(s) for s in sorted(spans, key=lambda s: int(str(s[2]))) if not s[9])
        kind = str(root[1]).removeprefix("probe ")
        result = ProbeResult(kind, str(root[7]), 1, int(str(root[2])), int(str(root[3])), 0, 0, phases)
        probes.append(ExportedProbe(result, bool(root[4]), str(root[8])))
    return probes


def _phase(fields: list[object]) -> Phase:
    attributes: dict[str, int | bool] = {}
    if isinstance(fields[5], int):
        attributes[names.NETWORK_LOCAL_PORT] = fields[5]
    if fields[6]:
        attributes[names.PROBE_CONNECT_ABANDONED] = True
    error = "error" if fields[4] else None
    return Phase(str(fields[1]), int(str(fields[2])), int(str(fields[3])), error, None, attributes)
