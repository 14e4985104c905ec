"""The record's `tenant` column: read from `otelprobe.tenant` on the probe's root span."""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otelprobe.attribution.records import records_frame, records_from_request
from otelprobe.telemetry.batching import build_request
from otelprobe.telemetry.pipeline import Telemetry
from tests.telemetry.conftest import make_result


def test_a_tenant_targets_records_carry_its_tenant_and_others_none() -> None:
    tel = Telemetry(vantage="eu-1", in_memory=True)
    tel.set_target_tenants({"api": "payments"})
    tel.record(make_result(target="api"))
    tel.record(make_result(target="docs"))
    assert tel.span_exporter is not None
    request = build_request(tel.span_exporter.spans, Resource(), InstrumentationScope(name="otelprobe"))
    tel.shutdown_sync(1.0)
    records = {r.target: r for r in records_from_request(request)}
    assert (records["api"].tenant, records["docs"].tenant) == ("payments", None)
    frame = records_frame(records.values())
    assert frame.set_index("target")["tenant"].isna().to_dict() == {"api": False, "docs": True}
