"""Labelling reads the probers' files through the one reader (attribution/otlp_files.py).

A fresh small recording is made from a shipped one (data/lab/eval-402, labelled when it was
recorded, before labelling went through the one reader): its first lines with the lab.fault.*
attributes taken off and a bad line put in the middle. Labelling that again, from a plain and from
a gzip file, must give back the shipped lines byte for byte, and name the bad line.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from otelprobe import names
from otelprobe.attribution.otlp_files import ReaderStats, iter_span_views, iter_trace_lines
from otelprobe.lab.dataset.recording import IncidentWindow, label_recording, read_labels

RECORDING = Path(__file__).resolve().parents[2] / "data" / "lab" / "eval-402"
LINES = 40
"""Lines of the shipped recording in the slice (~12 kB and ~15 spans each)."""
BAD_AT = 21
"""The line number the bad line gets in the probers' file."""
LAB_KEYS = frozenset(
    {names.LAB_FAULT_CAUSE, names.LAB_FAULT_SCOPE, names.LAB_FAULT_INCIDENT, names.LAB_FAULT_CAUSES}
)


def _windows() -> list[IncidentWindow]:
    return [
        IncidentWindow(
            label["incident"],
            label["cause"],
            label["scope"],
            label["start_unix_nano"],
            label["end_unix_nano"],
            frozenset((target, vantage) for target, vantage in label["affected"]),
        )
        for label in read_labels(RECORDING / "labels.jsonl")
    ]


def _unlabelled(shipped: Path) -> list[str]:
    """The shipped lines with the lab.fault.* attributes taken off every span."""
    stats = ReaderStats()
    lines: list[str] = []
    for line in iter_trace_lines(shipped, stats):
        for span in line.span_dicts:
            span["attributes"] = [a for a in span["attributes"] if a["key"] not in LAB_KEYS]
        lines.append(json.dumps(line.request, separators=(",", ":")))
    assert (stats.requests, stats.bad_lines, stats.bad_spans) == (LINES, 0, 0)
    return lines


@dataclass(frozen=True)
class Slice:
    directory: Path
    """Holds the probers' file, eu.jsonl and eu.jsonl.gz (the same lines)."""
    shipped: list[str]
    roots: frozenset[str]


@pytest.fixture(scope="module")
def slice_(tmp_path_factory: pytest.TempPathFactory) -> Slice:
    directory = tmp_path_factory.mktemp("eval-402-slice")
    with gzip.open(RECORDING / "traces.jsonl.gz", "rt", encoding="utf-8") as fh:
        shipped_lines = [next(fh).rstrip("\n") for _ in range(LINES)]
    shipped = directory / "shipped.jsonl"
    shipped.write_text("\n".join(shipped_lines) + "\n")
    views = list(iter_span_views(shipped))
    roots = frozenset(v.trace_id for v in views if not v.parent_span_id)
    # Labelling sees a trace's times on its root: every labelled trace here has its root here.
    assert {v.trace_id for v in views if names.LAB_FAULT_CAUSE in v.attributes} <= roots
    raw_lines = _unlabelled(shipped)
    raw_lines.insert(BAD_AT - 1, raw_lines[BAD_AT - 1][: len(raw_lines[BAD_AT - 1]) // 2])  # cut short
    text = "\n".join(raw_lines) + "\n"
    (directory / "eu.jsonl").write_text(text)
    (directory / "eu.jsonl.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
    return Slice(directory, shipped_lines, roots)


@pytest.mark.parametrize("raw_name", ["eu.jsonl", "eu.jsonl.gz"])
@pytest.mark.parametrize("out_name", ["traces.jsonl", "traces.jsonl.gz"])
def test_relabelling_a_shipped_slice_gives_back_its_lines_and_names_the_bad_line(
    slice_: Slice, raw_name: str, out_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = slice_.directory / raw_name
    out = tmp_path / out_name
    with caplog.at_level(logging.WARNING):
        stats = label_recording([raw], _windows(), out)
    data = out.read_bytes()
    text = (gzip.decompress(data) if out_name.endswith(".gz") else data).decode()
    assert text.splitlines() == slice_.shipped
    assert sum(names.LAB_FAULT_CAUSE in line for line in slice_.shipped) > 5  # labels were given back

    assert stats.bad_lines == 1 and stats.reader.bad_spans == 0
    assert stats.reader.problems[0].startswith(f"{raw}:{BAD_AT}: not JSON")
    assert f"{raw}:{BAD_AT}" in caplog.text
    assert stats.traces == len(slice_.roots) and 0 < stats.labeled_traces < stats.traces
    assert stats.spans == sum(1 for _ in iter_span_views(out))


def test_plain_and_gzip_outputs_hold_the_same_lines(slice_: Slice, tmp_path: Path) -> None:
    directory = slice_.directory
    label_recording([directory / "eu.jsonl"], _windows(), tmp_path / "a" / "traces.jsonl")
    label_recording([directory / "eu.jsonl.gz"], _windows(), tmp_path / "b" / "traces.jsonl.gz")
    plain = (tmp_path / "a" / "traces.jsonl").read_bytes()
    assert gzip.decompress((tmp_path / "b" / "traces.jsonl.gz").read_bytes()) == plain


def test_a_malformed_span_is_kept_unlabelled_and_named(tmp_path: Path) -> None:
    trace_id = "ab" * 16
    spans: list[dict[str, Any]] = [
        {
            "traceId": trace_id,
            "spanId": "01" * 8,
            "name": "probe tcp",
            "startTimeUnixNano": "1000000000",
            "endTimeUnixNano": "2000000000",
            "attributes": [{"key": names.PROBE_TARGET, "value": {"stringValue": "db"}}],
        },
        {
            "traceId": trace_id,
            "spanId": "02" * 8,
            "parentSpanId": "01" * 8,
            "name": "tcp.connect",
        },  # no times
    ]
    resource = {"attributes": [{"key": names.OTELPROBE_VANTAGE, "value": {"stringValue": "eu"}}]}
    request = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}
    raw = tmp_path / "eu.jsonl"
    raw.write_text(json.dumps(request) + "\n")
    window = IncidentWindow(7, "backend_slow", "target", 0, 3_000_000_000, frozenset({("db", "eu")}))
    stats = label_recording([raw], [window], tmp_path / "traces.jsonl")
    assert (stats.traces, stats.labeled_traces, stats.spans, stats.reader.bad_spans) == (1, 1, 1, 1)
    assert stats.reader.problems[0].startswith(f"{raw}:1: span skipped")
    (written,) = (tmp_path / "traces.jsonl").read_text().splitlines()
    root, phase = json.loads(written)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert {a["key"] for a in root["attributes"]} >= {names.LAB_FAULT_CAUSE, names.LAB_FAULT_INCIDENT}
    assert phase == spans[1]
