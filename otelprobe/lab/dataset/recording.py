"""A lab recording's files: the probers' configs going in, and the truth written onto the spans
coming out.

lab/dataset/runner.py writes one config per vantage (`prober_config`), lets each prober write OTLP JSON
lines, and afterwards `label_recording` merges those files into the recording, adding
`lab.fault.cause` / `lab.fault.scope` to every span of every probe that overlapped a fault on its
(target, vantage). Reading spans back goes through the one reader (attribution/records.py and
its file layer): `iter_spans` for span-level checks, `attribution.records.read_records` for
analysis; `read_labels` reads the incidents.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from otelprobe import names
from otelprobe.attribution.otlp_files import ReaderStats, iter_span_batches
from otelprobe.attribution.records import iter_records
from otelprobe.lab.emulation.topology import LAB_ZONE, TargetSide
from otelprobe.lab.scenario import Scenario
from otelprobe.lab.servers.http import LAB_BODY_LINE


@dataclass(frozen=True, slots=True)
class IncidentWindow:
    """When an incident was really on (epoch ns, as injected) and which pairs it reached."""

    id: int
    cause: str
    scope: str
    start_ns: int
    end_ns: int
    pairs: frozenset[tuple[str, str]]


@dataclass(slots=True)
class LabelStats:
    traces: int = 0
    labeled_traces: int = 0
    spans: int = 0
    traces_per_incident: dict[int, int] = field(default_factory=dict)
    bad_lines: int = 0
    """Lines of the probers' files that are not JSON: left out of the recording."""


def prober_config(
    scenario: Scenario, vantage: str, side: TargetSide, ca_file: Path, traces_file: Path
) -> dict[str, Any]:
    """The `otelprobe run` config of one vantage: every target, through this vantage's resolver,
    exported as OTLP JSON lines into `traces_file`."""
    probe = scenario.probe
    resolver = {"server": side.resolver_address(vantage), "timeout": probe.timeout_s}
    targets: list[dict[str, Any]] = []
    for spec in scenario.targets:
        host = f"{spec.name}.{LAB_ZONE}"
        target: dict[str, Any] = {"name": spec.name, "kind": spec.kind}
        if spec.kind == "dns":
            target.update(
                kind="dns",
                server=side.resolver_address(vantage),
                query_name=host,
                expect={"min_answers": 1, "answer_regex": [re.escape(side.host) + "$"]},
            )
        else:
            port = side.endpoint(spec.name, vantage)
            target["resolver"] = resolver
            tls = {"ca_file": str(ca_file)}
            if spec.uses_http:
                target.update(
                    kind="http",
                    url=f"{'https' if spec.uses_tls else 'http'}://{host}:{port}/",
                    http_version="1.1",
                    expect={"body_regex": [re.escape(LAB_BODY_LINE.decode().strip())]},
                )
                if spec.uses_tls:
                    target["tls"] = tls
            elif spec.kind == "tls":
                target.update(address=f"{host}:{port}", tls=tls)
            else:
                target["address"] = f"{host}:{port}"
                if spec.uses_tls:
                    target["tls"] = tls
        targets.append(target)
    return {
        "vantage": vantage,
        "concurrency": probe.concurrency,
        "defaults": {
            "interval": probe.interval_s,
            "timeout": probe.timeout_s,
            "ip": "ip4",
            "retries": {"count": 0},
        },
        "telemetry": {
            "exporters": [{"type": "file", "path": str(traces_file), "max_size": "4GiB", "max_backups": 0}],
            "queue": {"max_queue_size": 200_000, "max_export_batch_size": 2048, "schedule_delay": "500ms"},
            "metric_export_interval": "1h",
        },
        "targets": targets,
    }


def _string(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _open_out(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        # mtime=0: the same recording compresses to the same bytes.
        return io.TextIOWrapper(gzip.GzipFile(path, "wb", mtime=0), encoding="utf-8")
    return path.open("w", encoding="utf-8")


def _span_lines(paths: Sequence[Path], stats: LabelStats) -> Iterator[dict[str, Any]]:
    """Every trace request in `paths` as a JSON tree, to be rewritten with labels; metric lines
    (the file exporter writes both) are skipped, lines that are not JSON counted and skipped."""
    for path in paths:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    request = json.loads(line)
                except ValueError:
                    stats.bad_lines += 1
                    continue
                if isinstance(request, dict) and "resourceSpans" in request:
                    yield request


def _root_windows(paths: Sequence[Path]) -> dict[str, tuple[str, str, int, int]]:
    """traceId -> (target, vantage, start ns, end ns) of each probe attempt, from its record."""
    return {r.trace_id: (r.target, r.vantage, r.start_ns, r.end_ns) for r in iter_records(paths)}


def label_recording(
    raw_files: Sequence[Path], windows: Sequence[IncidentWindow], out_path: Path
) -> LabelStats:
    """Merge the probers' files into `out_path` (gzip if it ends in .gz) with the truth on the spans.

    A probe attempt is labeled when its root span overlaps an incident's window and its (target,
    vantage) is among the incident's pairs; every span of its trace gets `lab.fault.cause`,
    `lab.fault.scope` and `lab.fault.incident`. Where incidents overlap, the one that started
    first names the cause, and `lab.fault.causes` lists all of them.
    """
    stats = LabelStats()
    raw_files = [path for path in raw_files if path.exists()]  # a vantage that wrote nothing
    ordered = sorted(windows, key=lambda w: (w.start_ns, w.id))
    labels: dict[str, list[dict[str, Any]]] = {}
    for trace_id, (target, vantage, start, end) in _root_windows(raw_files).items():
        stats.traces += 1
        hits = [w for w in ordered if (target, vantage) in w.pairs and start < w.end_ns and end > w.start_ns]
        if not hits:
            continue
        stats.labeled_traces += 1
        for hit in hits:
            stats.traces_per_incident[hit.id] = stats.traces_per_incident.get(hit.id, 0) + 1
        first = hits[0]
        attrs = [
            _string(names.LAB_FAULT_CAUSE, first.cause),
            _string(names.LAB_FAULT_SCOPE, first.scope),
            {"key": names.LAB_FAULT_INCIDENT, "value": {"intValue": str(first.id)}},
        ]
        if len(hits) > 1:
            values = [{"stringValue": w.cause} for w in hits]
            attrs.append({"key": names.LAB_FAULT_CAUSES, "value": {"arrayValue": {"values": values}}})
        labels[trace_id] = attrs
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with _open_out(out_path) as out:
        for request in _span_lines(raw_files, stats):
            for resource_spans in request["resourceSpans"]:
                for scope_spans in resource_spans.get("scopeSpans", ()):
                    for span in scope_spans.get("spans", ()):
                        stats.spans += 1
                        extra = labels.get(span["traceId"])
                        if extra is not None:
                            span.setdefault("attributes", []).extend(extra)
            out.write(json.dumps(request, separators=(",", ":")) + "\n")
    return stats


def open_text(path: Path) -> IO[str]:
    """Open a recording file for reading, gzip or not."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def read_labels(path: str | Path) -> list[dict[str, Any]]:
    """The incidents of a labels.jsonl file."""
    with open_text(Path(path)) as fh:
        return [json.loads(line) for line in fh if line.strip()]


@dataclass(frozen=True, slots=True)
class RecordedSpan:
    """One span of a recording, flattened for analysis."""

    trace_id: str
    name: str
    vantage: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    is_root: bool

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def iter_spans(path: str | Path, stats: ReaderStats | None = None) -> Iterator[RecordedSpan]:
    """Every span of a recording (traces.jsonl or traces.jsonl.gz), attributes decoded (arrays as
    tuples); bad lines are counted in `stats` and skipped.

    Raises:
        OSError: the file cannot be opened.
    """
    stats = stats if stats is not None else ReaderStats()
    for views in iter_span_batches(path, stats):
        for view in views:
            yield RecordedSpan(
                trace_id=view.trace_id,
                name=view.name,
                vantage=str(view.resource.get(names.OTELPROBE_VANTAGE, "")),
                start_ns=view.start_ns,
                end_ns=view.end_ns,
                attributes=dict(view.attributes),
                is_root=not view.parent_span_id,
            )
