"""OTLP JSON lines: Collector file-exporter format, round trip, rotation, malformed lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otelprobe import names
from otelprobe.results import ProbeResult
from otelprobe.sidecar.receiver import attributes_dict, iter_spans
from otelprobe.telemetry.batching import build_request
from otelprobe.telemetry.otlp_json import JSONLinesWriter, OTLPJSONSpanSender, read_otlp_json
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

    contents = read_otlp_json(path)
    assert contents.problems == []
    (request,) = contents.traces
    decoded = list(iter_spans(request))
    assert len(decoded) == len(original) == 14
    for received in decoded:
        span = received.span
        source = original[(int.from_bytes(span.trace_id, "big"), int.from_bytes(span.span_id, "big"))]
        assert span.name == source.name
        assert span.start_time_unix_nano == source.start_time
        assert span.end_time_unix_nano == source.end_time
        assert received.attributes == dict(source.attributes or {})
        if source.parent is not None:
            assert int.from_bytes(span.parent_span_id, "big") == source.parent.span_id
    assert decoded[0].resource_attributes[names.OTELPROBE_VANTAGE] == "eu-1"


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


def test_malformed_lines_are_skipped_counted_and_named(
    tmp_path: Path, result_factory: ResultFactory, caplog: pytest.LogCaptureFixture
) -> None:
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
    with caplog.at_level(logging.WARNING):
        contents = read_otlp_json(path)
    assert len(contents.traces) == 2
    assert contents.malformed == 3
    assert [p.split(": ")[0] for p in contents.problems] == [f"{path}:2", f"{path}:3", f"{path}:5"]
    assert f"{path}:2" in caplog.text


def test_metrics_lines_share_the_file_with_spans(tmp_path: Path, result_factory: ResultFactory) -> None:
    from otelprobe.config.telemetry import TelemetryConfig

    path = tmp_path / "all.jsonl"
    config = TelemetryConfig.model_validate({"exporters": [{"type": "file", "path": str(path)}]})
    tel = Telemetry(config, vantage="eu-1")
    tel.record(result_factory())
    tel.shutdown_sync(5.0)

    contents = read_otlp_json(path)
    assert contents.problems == []
    assert sum(1 for r in contents.traces for _ in iter_spans(r)) == 7
    metric_names = {
        m.name
        for r in contents.metrics
        for rm in r.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert {names.METRIC_PROBE_DURATION, names.METRIC_PROBE_SUCCESS} <= metric_names
    resource = contents.metrics[0].resource_metrics[0].resource
    assert attributes_dict(resource.attributes)[names.OTELPROBE_VANTAGE] == "eu-1"
