"""A lab recording's files: the probers' configs going in, and the truth written onto the spans
coming out.

lab/dataset/runner.py writes one config per vantage (`prober_config`), lets each prober write OTLP JSON
lines, and afterwards `label_recording` merges those files into the recording, adding
`lab.fault.cause` / `lab.fault.scope` to every span of every probe that overlapped a fault on its
(target, vantage). Labelling reads the probers' files through the one reader
(attribution/otlp_files.py: gzip, bad lines counted with file:line) and writes each line back with
the labels added. Reading a recording: `attribution.records.read_records` for analysis,
`attribution.otlp_files.iter_span_views` for span-level checks; `read_labels` reads the incidents.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from otelprobe import names
from otelprobe.attribution.otlp_files import ReaderStats, iter_trace_lines
from otelprobe.attribution.records import iter_records
from otelprobe.lab.emulation.topology import LAB_ZONE, TargetSide
from otelprobe.lab.scenario import Scenario
from otelprobe.lab.servers.http import LAB_BODY_LINE

_logger = logging.getLogger(__name__)
_NO_ATTRIBUTES: Final[frozenset[str]] = frozenset()


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
    """Spans written (malformed ones, kept unlabelled, are counted in `reader.bad_spans`)."""
    traces_per_incident: dict[int, int] = field(default_factory=dict)
    reader: ReaderStats = field(default_factory=ReaderStats)
    """What reading the probers' files skipped, with file:line: bad lines are left out of the
    recording; malformed spans are kept, unlabelled."""

    @property
    def bad_lines(self) -> int:
        return self.reader.bad_lines


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
        # Metric lines (the file exporter writes both) are left out; so are bad lines (counted).
        for line in iter_trace_lines(raw_files, stats.reader, keys=_NO_ATTRIBUTES):
            for span, view in zip(line.span_dicts, line.views, strict=True):
                stats.spans += 1
                extra = labels.get(view.trace_id)
                if extra is not None:
                    span.setdefault("attributes", []).extend(extra)
            out.write(json.dumps(line.request, separators=(",", ":")) + "\n")
    if stats.reader.problem_count:
        _logger.warning(
            "%s: %d bad lines and %d malformed spans in the probers' files, e.g. %s",
            out_path,
            stats.reader.bad_lines,
            stats.reader.bad_spans,
            "; ".join(stats.reader.problems[:3]),
        )
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
