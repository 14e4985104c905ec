"""What the sidecar's input refused and dropped, on /metrics and /healthz: real bad requests sent
through the real receiver (HTTP and gRPC) into a real Ingest, then read from the real API app.

Every int field of the ingest and reader stats dataclasses is a series, so counters added to them
later appear without another edit (pinned with a stand-in dataclass); the served /healthz still
conforms to the served OpenAPI document (schemathesis).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, fields
from typing import Any

import aiohttp
import grpc
import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.parser import text_string_to_metric_families

from otelprobe.attribution.records import ProbeRecord, ReaderStats
from otelprobe.sidecar.api import build_api_app
from otelprobe.sidecar.ingest import Ingest, IngestStats
from otelprobe.sidecar.receiver import OTLPReceiver, ReceiverStats
from otelprobe.sidecar.view import MemoryView
from otelprobe.sidecar.view_metrics import Intake, render_intake
from tests.sidecar.test_sidecar_api import _exercise, parse_exposition
from tests.support.sidecar_spans import BASE, probe_spans, request
from tests.support.sidecar_view_data import ThreadedAPI, fill

TOKEN = "otlp-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROTOBUF = {"Content-Type": "application/x-protobuf", **AUTH}
TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
CAP = 16 * 1024
Families = dict[str, list[tuple[dict[str, str], float]]]


@dataclass
class Fed:
    receiver: OTLPReceiver
    ingest: Ingest
    records: list[ProbeRecord]

    @property
    def intake(self) -> Intake:
        return Intake(self.receiver.stats, {"ingest": self.ingest.stats, "reader": self.ingest.reader})


def _bad_requests() -> list[ExportTraceServiceRequest]:
    """One request per kind of bad span the later stages count (each after the previous)."""
    partial = request(
        *probe_spans(1, BASE),
        Span(trace_id=b"\x01" * 15, span_id=b"\x01" * 8, name="short trace id"),
        Span(trace_id=b"\x02" * 16, span_id=b"\x02" * 7, name="short span id"),
    )
    foreign = Span(trace_id=(40).to_bytes(16, "big"), span_id=b"\x05" * 8, name="slo.violation")
    absurd = probe_spans(3, BASE)
    absurd[1].end_time_unix_nano = absurd[1].start_time_unix_nano - 1  # a phase ending before it starts
    second_root = probe_spans(4, BASE)
    second_root.append(Span(trace_id=second_root[0].trace_id, span_id=b"\x09" * 8, name="probe http"))
    orphan = probe_spans(5, BASE)[1]  # a phase whose root never comes
    return [
        partial,
        request(*probe_spans(1, BASE)),  # a Collector's retry: duplicate trace, 2 duplicate spans
        request(foreign),
        request(*absurd),
        request(*second_root),
        request(orphan),
        request(*probe_spans(6, BASE)),  # anything after it: the orphan is evicted by age
    ]


@pytest.fixture
async def fed() -> AsyncIterator[Fed]:
    ingest = Ingest(max_pending_age_s=0.0)
    records: list[ProbeRecord] = []
    async with (
        OTLPReceiver(
            bearer_token=TOKEN, max_body_bytes=CAP, on_traces=lambda r: records.extend(ingest.add(r))
        ) as rcv,
        aiohttp.ClientSession() as http,
    ):
        url = f"{rcv.http_endpoint}/v1/traces"
        answers = []
        for bad in _bad_requests():
            async with http.post(url, data=bad.SerializeToString(), headers=PROTOBUF) as response:
                answers.append(response.status)
        for body, headers in (
            (b"\xff\xff garbage", PROTOBUF),  # malformed
            (b"\0" * (CAP + 1), PROTOBUF),  # too large
            (request(*probe_spans(7, BASE)).SerializeToString(), {"Content-Type": "application/x-protobuf"}),
        ):
            async with http.post(url, data=body, headers=headers) as response:
                answers.append(response.status)
        assert answers == [200] * 7 + [400, 413, 401]
        async with grpc.aio.insecure_channel(rcv.grpc_endpoint) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                oversize = request(Span(trace_id=b"\x01" * 16, span_id=b"\x01" * 8, name="x" * CAP))
                await channel.unary_unary(TRACE_METHOD)(
                    oversize.SerializeToString(), metadata=(("authorization", AUTH["Authorization"]),)
                )
            assert failure.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        yield Fed(rcv, ingest, records)


@pytest.fixture
async def api(fed: Fed) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    view = MemoryView()
    fill(view)
    async with TestClient(TestServer(build_api_app(view, intake=fed.intake), host="127.0.0.1")) as client:
        yield client


def _by_labels(families: Families, name: str) -> dict[tuple[str, ...], float]:
    return {tuple(labels.values()): value for labels, value in families[name]}


async def test_metrics_show_what_was_refused_and_dropped_by_reason(
    fed: Fed, api: TestClient[web.Request, web.Application]
) -> None:
    response = await api.get("/metrics")
    assert response.status == 200
    text = await response.text()
    families = parse_exposition(text)  # strict: one TYPE per family, before its samples
    prefix = "otelprobe_sidecar_"
    assert _by_labels(families, prefix + "otlp_requests_refused_total") == {
        ("malformed",): 1,
        ("too_large",): 2,  # one over HTTP, one over gRPC
        ("unauthenticated",): 1,
        ("retry_later",): 0,
    }
    assert _by_labels(families, prefix + "otlp_spans_rejected_total") == {
        ("invalid_ids",): 2,
        ("queue_full",): 0,
    }
    ingest = _by_labels(families, prefix + "ingest_anomalies_total")
    assert ingest[("duplicate_traces",)] == 1 and ingest[("malformed_requests",)] == 0
    reader = _by_labels(families, prefix + "reader_anomalies_total")
    assert reader[("foreign_spans",)] == 1
    assert reader[("late_spans",)] == 1  # the second root
    assert reader[("absurd_values",)] == 1
    assert reader[("orphan_traces",)] == 1 and reader[("orphan_spans",)] == 1
    assert reader[("bad_spans",)] == 0
    # Every int field is a series: whatever the stats dataclasses hold now.
    assert {name for (name,) in ingest} == {f.name for f in fields(IngestStats) if "_" in f.name}
    assert {name for (name,) in reader} >= {"late_spans", "foreign_spans", "absurd_values", "bad_lines"}
    assert families[prefix + "ingest_requests_total"] == [({}, 7)]
    assert families[prefix + "reader_records_total"] == [({}, fed.ingest.reader.records)]
    # HELP says what each reason means; every new family is a counter.
    assert "absurd_values: durations < 0 or > 1 h" in text
    assert "invalid_ids: trace or span ID of the wrong size" in text
    for name in ("otlp_requests_refused_total", "ingest_anomalies_total", "reader_problems_total"):
        assert f"# TYPE {prefix}{name} counter" in text
    # The view's own page is still there.
    assert families[prefix + "windows_closed_total"]


async def test_healthz_summarises_them(fed: Fed, api: TestClient[web.Request, web.Application]) -> None:
    response = await api.get("/healthz")
    body: dict[str, Any] = await response.json()
    intake = body["intake"]
    assert intake["receiver"] == {
        "requests_refused": {"malformed": 1, "too_large": 2, "unauthenticated": 1, "retry_later": 0},
        "spans_rejected": {"invalid_ids": 2, "queue_full": 0},
    }
    assert intake["ingest"]["requests"] == 7 and intake["ingest"]["duplicate_traces"] == 1
    reader = intake["reader"]
    assert (reader["foreign_spans"], reader["absurd_values"], reader["orphan_traces"]) == (1, 1, 1)
    assert "problems" in reader and "problem_count" not in reader  # the int fields only, one alias
    assert body["status"] and body["counters"]  # the view's health is unchanged


@dataclass(slots=True)
class _LaterStats:
    """Stand-in for counters another change adds to IngestStats / ReaderStats."""

    requests: int = 3
    late_phases: int = 4
    some_new_thing: int = 5
    flag: bool = True
    notes: list[str] | None = None


def test_a_counter_added_to_a_stage_appears_without_another_edit() -> None:
    intake = Intake(
        ReceiverStats(), {"ingest": IngestStats(), "reader": ReaderStats(), "later": _LaterStats()}
    )
    text = render_intake(intake).decode()
    families = parse_exposition(text)
    assert families["otelprobe_sidecar_later_anomalies_total"] == [
        ({"reason": "late_phases"}, 4),
        ({"reason": "some_new_thing"}, 5),
    ]
    assert "some_new_thing: some new thing" in text  # no meaning known: its name in words
    assert families["otelprobe_sidecar_later_requests_total"] == [({}, 3)]
    assert not any("flag" in name or "notes" in name for name in families)


def test_the_page_reads_with_prometheus_client() -> None:
    receiver = ReceiverStats(invalid_spans=2, unauthenticated=1, rejected={"malformed": 3})
    intake = Intake(
        receiver, {"ingest": IngestStats(duplicate_traces=1), "reader": ReaderStats(absurd_values=4)}
    )
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(render_intake(intake).decode())
        for sample in family.samples
    }
    assert samples[("otelprobe_sidecar_otlp_requests_refused_total", (("reason", "malformed"),))] == 3
    assert samples[("otelprobe_sidecar_reader_anomalies_total", (("reason", "absurd_values"),))] == 4
    assert samples[("otelprobe_sidecar_ingest_anomalies_total", (("reason", "duplicate_traces"),))] == 1


# --- the served document still describes /healthz ------------------------------------------------


class _ThreadedIntakeAPI(ThreadedAPI):
    def __init__(self, view: MemoryView, intake: Intake) -> None:
        super().__init__(view)
        self.intake = intake

    async def _start(self) -> None:
        self._runner = web.AppRunner(build_api_app(self.view, intake=self.intake), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])


@pytest.fixture(scope="module")
def intake_api() -> Iterator[ThreadedAPI]:
    view = MemoryView()
    fill(view)
    receiver = ReceiverStats(invalid_spans=2, rejected={"malformed": 1, "too_large": 1})
    intake = Intake(
        receiver, {"ingest": IngestStats(duplicate_traces=1), "reader": ReaderStats(late_spans=3)}
    )
    with _ThreadedIntakeAPI(view, intake) as server:
        yield server


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_healthz_with_intake_conforms_to_the_served_document(intake_api: ThreadedAPI, path: str) -> None:
    _exercise(intake_api, path, schemathesis.GenerationMode.POSITIVE, None)


async def test_the_document_requires_intake_only_when_served() -> None:
    view = MemoryView()
    for intake, required in ((None, False), (Intake(ReceiverStats(), {}), True)):
        async with TestClient(TestServer(build_api_app(view, intake=intake), host="127.0.0.1")) as client:
            document = await (await client.get("/openapi.json")).json()
            health = document["components"]["schemas"]["Health"]
            assert "intake" in health["properties"]
            assert ("intake" in health["required"]) is required
            assert ("intake" in await (await client.get("/healthz")).json()) is required
