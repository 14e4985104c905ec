"""`otelprobe demo` runs the whole loop on loopback: lab faults, real probes, OTLP export, report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from otelprobe.telemetry.otlp_json import read_otlp_json


def test_demo_shows_each_injected_fault_in_its_phase(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "otelprobe.cli", "demo", "--duration", "3", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "received over OTLP:" in out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.split()[:1]
        and line.split()[0] in {"shop", "search", "checkout", "catalog", "payments"}
        and "(" in line
    }
    assert set(rows) == {"shop", "search", "checkout", "catalog", "payments"}
    # columns: target ok lookup connect handshake request ttfb transfer ...
    lookup, handshake, ttfb = 2, 4, 6
    assert float(rows["search"][handshake]) > 70 > float(rows["shop"][handshake])
    assert float(rows["checkout"][ttfb]) > 140 > float(rows["shop"][ttfb])
    assert float(rows["catalog"][lookup]) > 55 > float(rows["shop"][lookup])
    ok, total = (int(x) for x in rows["payments"][1].split("/"))
    assert total > 0 and ok < total  # half of its responses are 503
    # The same traces were also written as OTLP JSON lines.
    recording = read_otlp_json(tmp_path / "traces.jsonl")
    assert not recording.problems
    names = {
        span.name
        for request in recording.traces
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    }
    assert {"probe http", "dns.lookup", "tcp.connect", "tls.handshake", "http.ttfb"} <= names
