"""A ProbeResult as the OTLP export request the telemetry pipeline would send for it."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otelprobe.results import ProbeResult
from otelprobe.telemetry.batching import build_request
from otelprobe.telemetry.pipeline import Telemetry


def a_request(result: ProbeResult) -> ExportTraceServiceRequest:
    tel = Telemetry(vantage="eu-1", in_memory=True)
    tel.record(result)
    assert tel.span_exporter is not None
    request = build_request(tel.span_exporter.spans, Resource(), InstrumentationScope(name="otelprobe"))
    tel.shutdown_sync(1.0)
    return request
