"""OTLP JSON lines: Collector file-exporter format, round trip through the one reader
(attribution/otlp_files.py), rotation, malformed lines."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otelprobe import names
from otelprobe.attribution.otlp_decode import attributes_dict
from otelprobe.attribution.otlp_files import ReaderStats, iter_span_views
from otelprobe.results import ProbeResult
from otelprobe.telemetry.batching import build_request
from otelprobe.telemetry.otlp_json import JSONLinesWriter, OTLPJSONSpanSender, json_to_message
from otelprobe.telemetry.pipeline import Telemetry

ResultFactory = Callable[..., ProbeResult]


def record_to_file(path: Path, results: list[ProbeResult]) -> Telemetry:
    tel = Telemetry(vantage="eu-1", in_memory=True)
    for result in results:
        tel.record(result)
    assert tel.span_exporter is not None
    sender = OTLPJSONSpanSender(JSONLinesWriter(path, max_size_bytes=10**7))
    resource = Resource()
    resource.attributes.add(key=names.OTELPROBE_VANTAGE).value.string_value = "eu-1"
    request = build_request(tel.span_exporter.spans, resource, InstrumentationScope(name="otelprobe"))
    assert sender.send(request, 1.0)
    tel.shutdown_sync(1.0)
    return tel


def test_round_trip_keeps_every_span(tmp_path: Path, result_factory: ResultFactory) -> None:
    path = tmp_path / "spans.jsonl"
    tel = record_to_file(path, [result_factory(), result_factory(target="web")])
    assert tel.span_exporter is not None
    original = {(s.context.trace_id, s.context.span_id): s for s in tel.span_exporter.get_finished_spans()}

    stats = ReaderStats()
    decoded = list(iter_span_views(path, stats))
    assert stats.problems == [] and stats.requests == 1
    assert len(decoded) == len(original) == 14
    for view in decoded:
        source = original[(int(view.trace_id, 16), int(view.span_id, 16))]
        assert view.name == source.name
        assert view.start_ns == source.start_time
        assert view.end_ns == source.end_time
        assert dict(view.attributes) == dict(source.attributes or {})
        if source.parent is not None:
            assert int(view.parent_span_id, 16) == source.parent.span_id
        else:
            assert view.parent_span_id == ""
    assert decoded[0].resource[names.OTELPROBE_VANTAGE] == "eu-1"


def test_lines_follow_the_otlp_json_encoding(tmp_path: Path, result_factory: ResultFactory) -> None:
    path = tmp_path / "spans.jsonl"
    tel = record_to_file(path, [result_factory()])
    assert tel.span_exporter is not None
    root = next(s for s in tel.span_exporter.get_finished_spans() if s.parent is None)

    (line,) = path.read_text().splitlines()
    spans = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    encoded_root = next(s for s in spans if "parentSpanId" not in s)
    assert encoded_root["traceId"] == f"{root.context.trace_id:032x}"
    assert encoded_root["spanId"] == f"{root.context.span_id:016x}"
    assert encoded_root["kind"] == 3  # SPAN_KIND_CLIENT, as an integer
    assert encoded_root["startTimeUnixNano"] == str(root.start_time)  # int64 as a string
    child = next(s for s in spans if "parentSpanId" in s)
    assert child["parentSpanId"] == encoded_root["spanId"]
    assert child["kind"] == 1


def test_rotation_caps_the_file_and_keeps_backups(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    writer = JSONLinesWriter(path, max_size_bytes=250, max_backups=2)
    for i in range(20):
        writer.write_line(json.dumps({"resourceSpans": [], "n": i, "pad": "x" * 60}))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["out.jsonl", "out.jsonl.1", "out.jsonl.2"]
    assert all((tmp_path / f).stat().st_size <= 250 for f in files)
    newest = [json.loads(x)["n"] for x in path.read_text().splitlines()]
    assert newest[-1] == 19


def test_malformed_lines_are_skipped_counted_and_named(tmp_path: Path, result_factory: ResultFactory) -> None:
    path = tmp_path / "mixed.jsonl"
    record_to_file(path, [result_factory()])
    good = path.read_text()
    path.write_text(
        good
        + "{not json\n"
        + '{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}\n'
        + '{"resourceLogs": []}\n'
        + "[1, 2]\n"
        + "\n"
        + good
    )
    stats = ReaderStats()
    assert len(list(iter_span_views(path, stats))) == 14
    assert (stats.requests, stats.bad_lines, stats.bad_spans, stats.other_lines) == (3, 2, 1, 1)
    assert [p.split(": ")[0] for p in stats.problems] == [f"{path}:2", f"{path}:3", f"{path}:5"]


def test_metrics_lines_share_the_file_with_spans(tmp_path: Path, result_factory: ResultFactory) -> None:
    from otelprobe.config.telemetry import TelemetryConfig

    path = tmp_path / "all.jsonl"
    config = TelemetryConfig.model_validate({"exporters": [{"type": "file", "path": str(path)}]})
    tel = Telemetry(config, vantage="eu-1")
    tel.record(result_factory())
    tel.shutdown_sync(5.0)

    stats = ReaderStats()
    assert len(list(iter_span_views(path, stats))) == 7
    assert stats.problems == [] and stats.other_lines >= 1  # the metric lines
    metrics = [
        json_to_message(line, ExportMetricsServiceRequest())
        for line in path.read_text().splitlines()
        if '"resourceMetrics"' in line
    ]
    assert len(metrics) == stats.other_lines
    metric_names = {
        m.name for r in metrics for rm in r.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert {names.METRIC_PROBE_DURATION, names.METRIC_PROBE_SUCCESS} <= metric_names
    resource = metrics[0].resource_metrics[0].resource
    assert attributes_dict(resource.attributes)[names.OTELPROBE_VANTAGE] == "eu-1"
