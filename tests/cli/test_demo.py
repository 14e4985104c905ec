"""`otelprobe demo` runs the whole loop on loopback: lab targets, a real prober process, the sidecar
receiving its spans over OTLP, a fault injected, detected, attributed to the right cause, cleared
and closed — and leaves recordings a Collector can load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from otelprobe.attribution.otlp_files import ReaderStats, iter_span_views, iter_trace_lines
from tests.support.demo_story import assert_story_told


@pytest.mark.slow  # the whole demo: train or load, probe, inject, detect, close (~1 min)
@pytest.mark.timeout(150)
def test_demo_detects_the_injected_fault_ranks_its_cause_first_and_closes(
    tmp_path: Path, trained_model: Path
) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "otelprobe.cli",
            "demo",
            "--fault",
            "http_5xx",
            "--model",
            str(trained_model),
            "--out",
            str(tmp_path),
            "--healthy",
            "12",
        ],
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    out = completed.stdout
    assert completed.returncode == 0, out + completed.stderr
    assert_story_told(out, "http_error")

    # The §6 records, one JSON line each; over the injected target's, http_error has the highest
    # mean score and is ranked first in at least half.
    records = [json.loads(line) for line in (tmp_path / "attributions.jsonl").read_text().splitlines()]
    payments = [r for r in records if r["target"] == "payments"]
    firsts = [r["causes"][0]["cause"] for r in payments]
    totals: dict[str, float] = {}
    for record in payments:
        for entry in record["causes"]:
            totals[entry["cause"]] = totals.get(entry["cause"], 0.0) + entry["score"]
    assert payments and max(totals, key=lambda cause: totals[cause]) == "http_error", totals
    assert firsts.count("http_error") * 2 >= len(firsts), firsts
    assert abs(sum(c["score"] for c in payments[0]["causes"]) - 1) < 1e-3

    # The probe spans as OTLP JSON lines (the Collector's file format), whole probe traces.
    stats = ReaderStats()
    span_names = {view.name for view in iter_span_views(tmp_path / "traces.jsonl", stats)}
    assert not stats.problems and not stats.bad_lines, stats.summary()
    assert {"probe http", "dns.lookup", "tcp.connect", "tls.handshake", "http.ttfb"} <= span_names

    # The sidecar's own slo.violation spans, as its OTLP exporter sent them, linked to probe spans.
    sidecar_stats = ReaderStats()
    violations = [
        span
        for line in iter_trace_lines(tmp_path / "sidecar.jsonl", sidecar_stats)
        for span, view in zip(line.span_dicts, line.views, strict=True)
        if view.name == "slo.violation"
    ]
    assert not sidecar_stats.problems, sidecar_stats.problems
    assert violations and all(span.get("links") for span in violations)
