"""Labeling a recording: which probe attempts get the truth, overlapping incidents, gzip output."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelprobe import names
from otelprobe.attribution.otlp_files import ReaderStats, iter_span_views
from otelprobe.causes import ROOT_CAUSES
from otelprobe.lab.dataset.recording import IncidentWindow, label_recording, read_labels
from otelprobe.telemetry.otlp_json import json_to_message

S = 1_000_000_000


def _attr(key: str, value: str) -> dict[str, object]:
    return {"key": key, "value": {"stringValue": value}}


def _trace(trace: int, target: str, start_s: float, end_s: float) -> list[dict[str, object]]:
    trace_id = f"{trace:032x}"
    root: dict[str, object] = {
        "traceId": trace_id,
        "spanId": f"{trace:016x}",
        "name": "probe http",
        "startTimeUnixNano": str(int(start_s * S)),
        "endTimeUnixNano": str(int(end_s * S)),
        "attributes": [_attr(names.PROBE_TARGET, target)],
    }
    child: dict[str, object] = {
        "traceId": trace_id,
        "spanId": f"{trace + 1000:016x}",
        "parentSpanId": f"{trace:016x}",
        "name": "tcp.connect",
        "startTimeUnixNano": str(int(start_s * S)),
        "endTimeUnixNano": str(int((start_s + 0.01) * S)),
    }
    return [root, child]


def _write(path: Path, vantage: str, traces: list[list[dict[str, object]]]) -> None:
    # Children and roots in different lines, as batches may split a trace.
    lines = []
    for spans in ([t[1] for t in traces], [t[0] for t in traces]):
        request = {
            "resourceSpans": [
                {
                    "resource": {"attributes": [_attr(names.OTELPROBE_VANTAGE, vantage)]},
                    "scopeSpans": [{"scope": {"name": "otelprobe"}, "spans": spans}],
                }
            ]
        }
        lines.append(json.dumps(request))
    lines.append(json.dumps({"resourceMetrics": []}))  # the file exporter writes metrics too
    path.write_text("\n".join(lines) + "\n")


def test_attempts_overlapping_a_window_on_an_affected_pair_are_labeled(tmp_path: Path) -> None:
    _write(
        tmp_path / "a.jsonl",
        "a",
        [
            _trace(1, "web", 9.0, 9.5),  # before
            _trace(2, "web", 9.8, 10.2),  # straddles the start: labeled
            _trace(3, "web", 12.0, 12.1),  # inside both incidents
            _trace(4, "api", 12.0, 12.1),  # not an affected target
            _trace(5, "web", 20.5, 21.0),  # after
        ],
    )
    _write(tmp_path / "b.jsonl", "b", [_trace(6, "web", 12.0, 12.1)])  # other vantage
    windows = [
        IncidentWindow(0, "backend_slow", "path", 10 * S, 20 * S, frozenset({("web", "a")})),
        IncidentWindow(1, "packet_loss", "vantage", 11 * S, 13 * S, frozenset({("web", "a"), ("api", "x")})),
    ]
    out = tmp_path / "traces.jsonl.gz"
    stats = label_recording([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], windows, out)
    assert (stats.traces, stats.labeled_traces, stats.spans) == (6, 2, 12)
    assert stats.traces_per_incident == {0: 2, 1: 1}
    by_trace: dict[int, list[Mapping[str, object]]] = {}
    for span in iter_span_views(out):
        by_trace.setdefault(int(span.trace_id, 16), []).append(span.attributes)
    for trace in (1, 4, 5, 6):
        assert all(names.LAB_FAULT_CAUSE not in attrs for attrs in by_trace[trace])
    for attrs in by_trace[2]:
        assert attrs[names.LAB_FAULT_CAUSE] == "backend_slow" and attrs[names.LAB_FAULT_SCOPE] == "path"
        assert attrs[names.LAB_FAULT_INCIDENT] == 0 and names.LAB_FAULT_CAUSES not in attrs
    for attrs in by_trace[3]:
        assert attrs[names.LAB_FAULT_CAUSE] == "backend_slow"  # the earlier incident names it
        assert attrs[names.LAB_FAULT_CAUSES] == ("backend_slow", "packet_loss")


def test_plain_output_is_collector_format(tmp_path: Path) -> None:
    _write(tmp_path / "a.jsonl", "a", [_trace(1, "web", 1.0, 2.0)])
    out = tmp_path / "traces.jsonl"
    label_recording([tmp_path / "a.jsonl"], [], out)
    lines = out.read_text().splitlines()
    assert len(lines) == 2  # the metric line is left out
    for line in lines:
        json_to_message(line, ExportTraceServiceRequest())  # protobuf's OTLP/JSON parser takes it
    stats = ReaderStats()
    assert len(list(iter_span_views(out, stats))) == 2
    assert (stats.requests, stats.bad_lines, stats.bad_spans, stats.other_lines) == (2, 0, 0, 0)


DATA = Path(__file__).resolve().parents[2] / "data" / "lab"


def test_shipped_recordings_hold_every_cause_and_their_labels_match_the_spans() -> None:
    for name in ("train-101", "eval-202"):
        labels = read_labels(DATA / name / "labels.jsonl")
        assert {label["cause"] for label in labels} == set(ROOT_CAUSES), name
        assert all(label["traces"] > 0 for label in labels), name
    # The held-out set is small enough to check span by span here.
    by_id = {label["incident"]: label for label in read_labels(DATA / "eval-202" / "labels.jsonl")}
    spans = list(iter_span_views(DATA / "eval-202" / "traces.jsonl.gz"))
    roots = {s.trace_id: s for s in spans if not s.parent_span_id}
    assert len(roots) > 4000
    for span in spans:
        incident = span.attributes.get(names.LAB_FAULT_INCIDENT)
        root = roots[span.trace_id]
        if incident is None:
            continue
        label = by_id[int(str(incident))]
        assert span.attributes[names.LAB_FAULT_CAUSE] == label["cause"]
        assert [root.attributes[names.PROBE_TARGET], root.resource[names.OTELPROBE_VANTAGE]] in label[
            "affected"
        ]
        assert root.start_ns < label["end_unix_nano"] and root.end_ns > label["start_unix_nano"]


def test_a_lab_runs_prober_config_loads_with_tls_only_where_the_scenario_asks(tmp_path: Path) -> None:
    from otelprobe.config.models import Config
    from otelprobe.lab.certs import LabCA
    from otelprobe.lab.dataset.recording import prober_config
    from otelprobe.lab.emulation.topology import ServerLoop, TargetSide
    from otelprobe.lab.scenario import load_scenario_text
    from otelprobe.probes.tcp.probe import TCPProbeConfig

    scenario = load_scenario_text(
        "name: t\nseed: 1\nvantages: [{name: eu}]\n"
        "targets: [{name: db, kind: tcp}, {name: cache, kind: tcp, tls: true}, {name: sso, kind: tls}]\n"
        "probe: {interval: 1.0, timeout: 1.0}\ntimeline: []\n"
    )
    loop = ServerLoop()
    side = TargetSide(scenario, "127.0.0.1", LabCA(), loop, fixed_ports=False)
    try:
        side.start()  # on loopback ports the kernel picks
        ca_file = tmp_path / "ca.pem"
        config = Config.model_validate(prober_config(scenario, "eu", side, ca_file, tmp_path / "t.jsonl"))
    finally:
        side.close()
        loop.close()
    tcp = {t.name: t for t in config.targets if isinstance(t, TCPProbeConfig)}
    assert tcp["db"].tls is None
    assert tcp["cache"].tls is not None and tcp["cache"].tls.ca_file == str(ca_file)
    assert tcp["cache"].direct_tls
