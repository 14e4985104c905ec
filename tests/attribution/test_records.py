"""The one reader of probe spans: recordings and live requests -> one ProbeRecord per attempt."""

from __future__ import annotations

import gzip
import json
import math
import string
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otelprobe import names
from otelprobe.attribution.otlp_decode import views_from_request
from otelprobe.attribution.records import (
    COLUMN_DTYPES,
    RECORD_COLUMNS,
    ProbeRecord,
    ReaderStats,
    TraceAssembler,
    iter_records,
    read_records,
    records_frame,
    records_from_request,
)
from otelprobe.causes import ROOT_CAUSES, SCOPES
from otelprobe.config.telemetry import TelemetryConfig
from otelprobe.lab.certs import LabCA
from otelprobe.lab.faults import TTFBDelay
from otelprobe.lab.servers.http import HTTPFaultServer
from otelprobe.lab.servers.tls import TLSFront
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.probes.http.probe import HTTPProbe
from otelprobe.results import ProbeResult
from otelprobe.sidecar.receiver import OTLPReceiver
from otelprobe.telemetry.batching import build_request
from otelprobe.telemetry.otlp_json import JSONLinesWriter, OTLPJSONSpanSender, json_to_message
from otelprobe.telemetry.pipeline import Telemetry

DATA = Path(__file__).resolve().parents[2] / "data" / "lab"
S = 1_000_000_000
MS = 1_000_000


# --- OTLP JSON built by hand (what a Collector file exporter writes) ---------------------------


def _value(value: object) -> dict[str, object]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value if math.isfinite(value) else str(value)}
    if isinstance(value, tuple):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attrs(attributes: dict[str, object]) -> list[dict[str, object]]:
    return [{"key": k, "value": _value(v)} for k, v in attributes.items()]


def root_span(trace: int, start_ns: int, end_ns: int, **attributes: object) -> dict[str, object]:
    attrs: dict[str, object] = {
        names.PROBE_KIND: "http",
        names.PROBE_TARGET: "web",
        names.PROBE_SUCCESS: True,
        names.PROBE_ATTEMPT: 1,
    }
    attrs.update({k.replace("__", "."): v for k, v in attributes.items()})
    return {
        "traceId": f"{trace:032x}",
        "spanId": f"{trace:016x}",
        "name": names.ROOT_SPAN_PREFIX + str(attrs[names.PROBE_KIND]),
        "kind": 3,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(end_ns),
        "attributes": _attrs(attrs),
    }


def phase_span(
    trace: int, index: int, name: str, start_ns: int, end_ns: int, error: bool = False, **attributes: object
) -> dict[str, object]:
    span: dict[str, object] = {
        "traceId": f"{trace:032x}",
        "spanId": f"{trace * 100 + index:016x}",
        "parentSpanId": f"{trace:016x}",
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(end_ns),
        "attributes": _attrs({k.replace("__", "."): v for k, v in attributes.items()}),
    }
    if error:
        span["status"] = {"code": 2, "message": "failed"}
    return span


def http_trace(trace: int, t0_ns: int = 10 * S, **root_attributes: object) -> list[dict[str, object]]:
    """A healthy HTTP attempt: dns 1 ms, connect 2 ms, tls 3 ms, request 0.5, ttfb 20, transfer 4."""
    edges = [0, 1, 3, 6, 6.5, 26.5, 30.5]
    phases = [
        names.SPAN_DNS_LOOKUP,
        names.SPAN_TCP_CONNECT,
        names.SPAN_TLS_HANDSHAKE,
        names.SPAN_HTTP_REQUEST,
        names.SPAN_HTTP_TTFB,
        names.SPAN_HTTP_TRANSFER,
    ]
    spans = [root_span(trace, t0_ns, t0_ns + int(31 * MS), **root_attributes)]
    for index, name in enumerate(phases):
        spans.append(
            phase_span(trace, index, name, t0_ns + int(edges[index] * MS), t0_ns + int(edges[index + 1] * MS))
        )
    return spans


def request_line(spans: Sequence[dict[str, object]], vantage: str | None = "eu-1") -> str:
    resource = {"attributes": _attrs({names.OTELPROBE_VANTAGE: vantage})} if vantage is not None else {}
    request = {
        "resourceSpans": [
            {"resource": resource, "scopeSpans": [{"scope": {"name": "otelprobe"}, "spans": list(spans)}]}
        ]
    }
    return json.dumps(request, separators=(",", ":"))


def write_lines(path: Path, lines: Sequence[str], *, compress: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def one(records: Sequence[ProbeRecord]) -> ProbeRecord:
    assert len(records) == 1, records
    return records[0]


# --- the shipped recordings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "traces", "labeled"), [("train-101", 15_164, 4_545), ("eval-202", 5_187, 1_525)]
)
def test_shipped_recordings_read_back_with_their_labels(name: str, traces: int, labeled: int) -> None:
    frame, stats = read_records(DATA / name / "traces.jsonl.gz")
    # data/lab/README.md: probe traces and traces during faults of each recording.
    assert len(frame) == traces == stats.records
    assert int(frame["lab_cause"].notna().sum()) == labeled
    assert (stats.bad_lines, stats.bad_spans, stats.orphan_traces, stats.late_spans) == (0, 0, 0, 0)
    assert stats.problems == []
    assert tuple(frame.columns) == RECORD_COLUMNS
    assert {column: str(dtype) for column, dtype in frame.dtypes.items()} == {
        column: str(frame[column].astype(dtype).dtype) for column, dtype in COLUMN_DTYPES.items()
    }
    assert set(frame["lab_cause"].dropna()) == set(ROOT_CAUSES)
    assert set(frame["lab_scope"].dropna()) <= set(SCOPES)
    assert frame["trace_id"].is_unique and frame["trace_id"].str.len().eq(32).all()
    assert set(frame["kind"]) == {"http", "dns", "tcp", "tls"}
    assert len(set(frame["vantage"])) == 3 and "" not in set(frame["vantage"])
    http = frame[(frame["kind"] == "http") & frame["success"]]
    assert http["ttfb_s"].notna().all() and http["status_code"].between(200, 299).all()
    # Phases fit inside their attempt.
    phases = frame[["dns_s", "connect_s", "tls_s", "request_s", "ttfb_s", "transfer_s"]].fillna(0.0)
    assert (phases.sum(axis=1) <= frame["total_s"] + 1e-6).all()
    failed = frame[~frame["success"]]
    assert failed["error_type"].notna().all() and frame[frame["success"]]["error_type"].isna().all()


# --- a real probe, read back from the file exporter and from the receiver ----------------------


async def probe_once(url: str, **options: Any) -> ProbeResult:
    config = HTTPProbeConfig.model_validate(
        {"name": "t", "url": url, "ip": "ip4", "timeout": "2s", **options}
    )
    probe = HTTPProbe(config, ProbeContext(vantage="mars-9"))
    try:
        [result] = await probe.run()
    finally:
        await probe.aclose()
    return result


def _write_request(path: Path, request: ExportTraceServiceRequest) -> None:
    OTLPJSONSpanSender(JSONLinesWriter(path, max_size_bytes=10**7)).send(request, 1.0)


def _request_of(result: ProbeResult, vantage: str) -> ExportTraceServiceRequest:
    tel = Telemetry(vantage=vantage, in_memory=True)
    tel.record(result)
    assert tel.span_exporter is not None
    resource = Resource()
    resource.attributes.add(key=names.OTELPROBE_VANTAGE).value.string_value = vantage
    request = build_request(tel.span_exporter.spans, resource, InstrumentationScope(name="otelprobe"))
    tel.shutdown_sync(1.0)
    return request


async def test_a_real_probe_reads_back_with_the_phases_it_measured(tmp_path: Path, lab_ca: LabCA) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(lab_ca.root_pem)
    async with (
        HTTPFaultServer(body_size=4096) as backend,
        TLSFront(lab_ca, upstream=(backend.host, backend.port)) as front,
        OTLPReceiver(grpc_port=None) as receiver,
    ):
        backend.apply(TTFBDelay(delay_s=0.05))
        result = await probe_once(f"https://localhost:{front.port}/", tls={"ca_file": str(ca_file)})
        assert result.error is None, result.error
        # Through the OTLP JSON file exporter's writer ...
        request = _request_of(result, "mars-9")
        _write_request(tmp_path / "traces.jsonl", request)
        frame, stats = read_records(tmp_path / "traces.jsonl")
        # ... and through the real exporter into the real receiver (protobuf over OTLP/HTTP).
        config = TelemetryConfig.model_validate(
            {
                "exporters": [{"type": "otlp_http", "endpoint": receiver.http_endpoint}],
                "queue": {"schedule_delay": "50ms"},
            }
        )
        tel = Telemetry(config, vantage="mars-9")
        tel.record(result)
        assert await tel.flush(5.0)
        live = one(await receiver.wait_for_records(1, timeout=10))
        await tel.shutdown(2.0)

    from_file = one(list(iter_records(tmp_path / "traces.jsonl")))
    assert len(frame) == 1 and stats.problems == []
    # The JSON walk and the protobuf path agree to the field (trace IDs differ: two exports).
    assert {**_fields(from_file), "trace_id": "", "span_id": ""} == {
        **_fields(live),
        "trace_id": "",
        "span_id": "",
    }
    record = from_file
    assert (record.target, record.vantage, record.kind, record.success) == ("t", "mars-9", "http", True)
    assert record.status_code == 200 and record.body_bytes == 4096
    assert record.tls_version == "1.3" and record.cert_remaining_s > 86_400
    assert record.error_type is None and record.failed_phase is None and record.phases_ok
    assert record.connect_attempts >= 1 and record.attempt == 1
    assert record.peer_address in ("127.0.0.1", "::1")  # `localhost` resolved and connected to
    for column, phase in [
        ("dns_s", names.SPAN_DNS_LOOKUP),
        ("connect_s", names.SPAN_TCP_CONNECT),
        ("tls_s", names.SPAN_TLS_HANDSHAKE),
        ("request_s", names.SPAN_HTTP_REQUEST),
        ("ttfb_s", names.SPAN_HTTP_TTFB),
        ("transfer_s", names.SPAN_HTTP_TRANSFER),
    ]:
        measured = result.phase(phase)
        if measured is None:
            assert math.isnan(getattr(record, column)), column
        else:
            assert getattr(record, column) == pytest.approx(measured.duration_s, abs=2e-9), column
    assert record.ttfb_s >= 0.05
    assert record.total_s == pytest.approx((result.end_ns - result.start_ns) / 1e9, abs=2e-9)


def _fields(record: ProbeRecord) -> dict[str, Any]:
    return {c: getattr(record, c) for c in RECORD_COLUMNS}


# --- files: gzip, bad lines, truncation ----------------------------------------------------------


@pytest.mark.parametrize("file_name", ["traces.jsonl.gz", "traces.dat"])
def test_gzip_is_read_by_its_magic_whatever_the_name(tmp_path: Path, file_name: str) -> None:
    lines = [request_line(http_trace(trace)) for trace in range(1, 4)]
    path = write_lines(tmp_path / file_name, lines, compress=True)
    records = list(iter_records(path))
    assert [int(r.trace_id, 16) for r in records] == [1, 2, 3]
    assert records[0].ttfb_s == pytest.approx(0.020) and records[0].vantage == "eu-1"


def test_bad_lines_are_counted_with_their_line_numbers_and_the_rest_is_read(tmp_path: Path) -> None:
    missing_id = phase_span(3, 9, names.SPAN_DNS_LOOKUP, 0, 1)
    del missing_id["traceId"]
    good_and_bad_span = request_line([*http_trace(3), missing_id])
    lines = [
        request_line(http_trace(1)),
        "this is not JSON",
        json.dumps({"unrelated": 1}),
        json.dumps({"resourceMetrics": []}),  # the file exporter writes metrics into the same file
        good_and_bad_span,
        "",
        request_line(http_trace(4)),
        request_line(http_trace(5))[:100],  # cut mid-line, as a crashed writer leaves it
    ]
    path = write_lines(tmp_path / "mixed.jsonl", lines)
    stats = ReaderStats()
    records = list(iter_records(path, stats))
    assert sorted(int(r.trace_id, 16) for r in records) == [1, 3, 4]
    assert (stats.bad_lines, stats.bad_spans, stats.other_lines) == (3, 1, 1)
    assert [p.split(": ")[0] for p in stats.problems] == [f"{path}:2", f"{path}:3", f"{path}:5", f"{path}:8"]
    assert "traceId" in stats.problems[2]


def test_a_truncated_gzip_keeps_the_lines_before_the_cut(tmp_path: Path) -> None:
    lines = [request_line(http_trace(trace)) for trace in range(1, 201)]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    frame, stats = read_records(path)
    assert 50 < len(frame) < 200
    assert stats.problem_count >= 1 and "gzip stream unreadable" in stats.problems[-1]
    assert frame["ttfb_s"].notna().all()


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        read_records(tmp_path / "nope.jsonl")


def test_an_over_long_line_is_skipped_whole(tmp_path: Path) -> None:
    long_line = request_line(http_trace(1) * 1) + " " * 5000
    path = write_lines(tmp_path / "long.jsonl", [long_line, request_line(http_trace(2))])
    stats = ReaderStats()
    records = list(iter_records(path, stats, max_line_bytes=4096))
    assert [int(r.trace_id, 16) for r in records] == [2]
    assert stats.bad_lines == 1 and f"{path}:1: line longer than 4096 bytes" in stats.problems[0]


# --- traces split over lines and requests --------------------------------------------------------


def test_a_trace_split_over_two_lines_is_joined(tmp_path: Path) -> None:
    spans = http_trace(7)
    path = write_lines(
        tmp_path / "split.jsonl", [request_line(spans[1:4]), request_line([spans[0], *spans[4:]])]
    )
    stats = ReaderStats()
    record = one(list(iter_records(path, stats)))
    assert record.dns_s == pytest.approx(0.001) and record.transfer_s == pytest.approx(0.004)
    assert (stats.orphan_traces, stats.late_spans, stats.spans) == (0, 0, 7)


def test_a_trace_split_over_two_requests_is_joined_by_the_assembler() -> None:
    spans = http_trace(8)
    first, second = (
        json_to_message(request_line(part), ExportTraceServiceRequest()) for part in (spans[3:], spans[:3])
    )
    assembler = TraceAssembler()
    assert assembler.add(views_from_request(first)) == [] and assembler.pending_traces == 1
    record = one(assembler.add(views_from_request(second)))
    assert record.connect_s == pytest.approx(0.002) and record.ttfb_s == pytest.approx(0.020)
    assert assembler.pending_traces == 0
    # One request alone: the phases without their root are orphans.
    stats = ReaderStats()
    assert records_from_request(first, stats) == [] and (stats.orphan_traces, stats.orphan_spans) == (1, 4)


def test_orphans_late_spans_and_the_pending_bound() -> None:
    def views(*traces: list[dict[str, object]]) -> Iterator[Any]:
        request = json_to_message(request_line([s for t in traces for s in t]), ExportTraceServiceRequest())
        return views_from_request(request)

    now = [0.0]
    stats = ReaderStats()
    assembler = TraceAssembler(stats, max_pending_traces=2, max_age_s=5.0, clock=lambda: now[0])
    children = [http_trace(t)[1:] for t in (1, 2, 3)]
    assembler.add(views(*children))  # three rootless traces, room for two
    assert (assembler.pending_traces, stats.orphan_traces, stats.orphan_spans) == (2, 1, 6)
    now[0] = 10.0  # older than max_age_s
    assembler.add(views(http_trace(4)))
    assert (assembler.pending_traces, stats.orphan_traces, stats.records) == (0, 3, 1)
    late = http_trace(4)[1:2]
    assembler.add(views(late))  # a phase after its record was made
    assert stats.late_spans == 1 and assembler.pending_traces == 0
    assembler.add(views(http_trace(5)[1:]))
    assembler.close()
    assert stats.orphan_traces == 4


def test_non_probe_traces_are_skipped_and_counted(tmp_path: Path) -> None:
    violation = {**root_span(9, 0, S), "name": names.SPAN_SLO_VIOLATION}
    path = write_lines(tmp_path / "v.jsonl", [request_line([violation, *http_trace(1)])])
    stats = ReaderStats()
    assert [int(r.trace_id, 16) for r in iter_records(path, stats)] == [1]
    assert stats.foreign_spans == 1


# --- what the record says ---------------------------------------------------------------------


def test_unseen_vantage_names_come_from_the_root_then_the_resource(tmp_path: Path) -> None:
    lines = [
        request_line(http_trace(1, otelprobe__vantage="ganymede-7"), vantage="eu-1"),
        request_line(http_trace(2), vantage="sa-east-99"),
        request_line(http_trace(3), vantage=None),
    ]
    frame, _ = read_records(write_lines(tmp_path / "v.jsonl", lines))
    assert list(frame["vantage"]) == ["ganymede-7", "sa-east-99", ""]


def test_absurd_values_are_dropped_and_counted(tmp_path: Path) -> None:
    t0 = 10 * S
    spans = [
        root_span(
            1, t0, t0 + 2 * 3600 * S, probe__tls__cert__remaining=math.nan, http__response__status_code=-3
        ),
        phase_span(1, 0, names.SPAN_DNS_LOOKUP, t0 + 5 * MS, t0 + 1 * MS),  # ends before it starts
        phase_span(1, 1, names.SPAN_TCP_CONNECT, t0, t0 + 3601 * S),  # over an hour
        phase_span(1, 2, names.SPAN_HTTP_TTFB, t0, t0 + 7 * MS),
    ]
    stats = ReaderStats()
    record = one(list(iter_records(write_lines(tmp_path / "a.jsonl", [request_line(spans)]), stats)))
    assert math.isnan(record.total_s) and math.isnan(record.dns_s) and math.isnan(record.connect_s)
    assert math.isnan(record.cert_remaining_s) and math.isnan(record.status_code)
    assert record.ttfb_s == pytest.approx(0.007)
    assert stats.absurd_values == 5


def test_failures_redirect_hops_abandoned_connects_and_lab_labels(tmp_path: Path) -> None:
    t0 = 10 * S
    root = root_span(
        1,
        t0,
        t0 + 100 * MS,
        probe__success=False,
        error__type="timeout",
        probe__error__detail="deadline exceeded in http.ttfb",
        probe__attempt=2,
        lab__fault__cause="backend_slow",
        lab__fault__scope="target",
        lab__fault__incident=17,
        lab__fault__causes=("backend_slow", "packet_loss"),
    )
    spans = [
        root,
        phase_span(
            1,
            0,
            names.SPAN_DNS_LOOKUP,
            t0,
            t0 + 1 * MS,
            probe__http__hop=0,
            probe__dns__attempts=2,
            probe__dns__answered_attempt=1,
        ),
        phase_span(1, 1, names.SPAN_TCP_CONNECT, t0 + 1 * MS, t0 + 9 * MS, probe__connect__abandoned=True),
        phase_span(1, 2, names.SPAN_TCP_CONNECT, t0 + 2 * MS, t0 + 4 * MS),
        phase_span(1, 3, names.SPAN_HTTP_TTFB, t0 + 5 * MS, t0 + 10 * MS),
        # The redirect hop's phases count only in the total.
        phase_span(1, 4, names.SPAN_DNS_LOOKUP, t0 + 11 * MS, t0 + 40 * MS, probe__http__hop=1),
        phase_span(1, 5, names.SPAN_TCP_CONNECT, t0 + 40 * MS, t0 + 50 * MS, probe__http__hop=1),
        phase_span(1, 6, names.SPAN_HTTP_TTFB, t0 + 50 * MS, t0 + 100 * MS, True, probe__http__hop=1),
        phase_span(1, 7, names.SPAN_ICMP_ECHO, t0, t0 + 3 * MS),
        phase_span(1, 8, names.SPAN_RPC_CALL, t0, t0 + 2 * MS),
    ]
    frame, _ = read_records(write_lines(tmp_path / "f.jsonl", [request_line(spans)]))
    row = frame.iloc[0]
    assert (row["success"], row["attempt"], row["error_type"]) == (False, 2, "timeout")
    assert row["error_detail"] == "deadline exceeded in http.ttfb"
    assert row["failed_phase"] == names.SPAN_HTTP_TTFB and not row["phases_ok"]
    assert row["dns_s"] == pytest.approx(0.001) and row["dns_attempts"] == 2
    assert row["dns_answered_attempt"] == 1  # retransmitted, but the first query's answer was used
    assert row["connect_s"] == pytest.approx(0.002) and row["connect_attempts"] == 2
    assert row["ttfb_s"] == pytest.approx(0.005) and row["other_s"] == pytest.approx(0.005)
    assert math.isnan(row["tls_s"]) and math.isnan(row["request_s"]) and math.isnan(row["status_code"])
    assert (row["lab_cause"], row["lab_scope"], row["lab_incident"]) == ("backend_slow", "target", 17)
    assert row["lab_causes"] == "backend_slow,packet_loss"


def test_an_empty_frame_has_the_contract_columns() -> None:
    frame = records_frame([])
    assert tuple(frame.columns) == RECORD_COLUMNS and len(frame) == 0
    assert str(frame["start_ns"].dtype) == "int64" and str(frame["success"].dtype) == "bool"


def test_the_prober_side_does_not_import_pandas() -> None:
    code = (
        "import sys, otelprobe.attribution.records, otelprobe.sidecar.receiver,"
        " otelprobe.lab.dataset.recording;"
        "print('pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


# --- millions of spans, bounded memory ---------------------------------------------------------


def _big_recording(path: Path, traces: int, per_line: int) -> int:
    """A gzip recording of `traces` 5-span HTTP attempts, `per_line` attempts per line; returns
    the uncompressed size. Attempts differ only in their IDs (a template, to write fast)."""
    text = json.dumps(http_trace(1)[:5], separators=(",", ":"))[1:-1]
    text = text.replace(f"{1:032x}", "$t").replace(f"{1:016x}", "$r")
    for index in range(4):
        text = text.replace(f"{100 + index:016x}", f"$c{index}")
    template = string.Template(text)
    head, tail = request_line([]).split("[]")
    size = 0
    with gzip.open(path, "wb", compresslevel=1) as out:
        for first in range(1, traces + 1, per_line):
            body = ",".join(
                template.substitute(
                    t=f"{trace:032x}",
                    r=f"{trace:016x}",
                    **{f"c{i}": f"{trace * 100 + i:016x}" for i in range(4)},
                )
                for trace in range(first, min(first + per_line, traces + 1))
            )
            line = f"{head}[{body}]{tail}\n".encode()
            size += len(line)
            out.write(line)
    return size


# Run in a child process, so that its peak RSS is the reader's (no tracemalloc: it slows the
# reader eightfold), against a child that reads a one-line file.
_MEASURE = """
import resource, sys
from otelprobe.attribution.records import ReaderStats, iter_records
stats = ReaderStats()
count = sum(1 for _ in iter_records(sys.argv[1], stats))
print(count, stats.spans, len(stats.problems), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _peak_rss_reading(path: Path) -> tuple[int, int, int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, check=True, timeout=600
    )
    count, spans, problems, peak_bytes = (int(x) for x in out.stdout.split())
    return count, spans, problems, peak_bytes


@pytest.mark.parametrize(
    "traces",
    [pytest.param(20_000, id="100k-spans"), pytest.param(200_000, id="1M-spans", marks=pytest.mark.slow)],
)
def test_many_spans_stream_in_bounded_memory(tmp_path: Path, traces: int) -> None:
    path = tmp_path / "big.jsonl.gz"
    raw_bytes = _big_recording(path, traces, per_line=100)
    _, _, _, baseline_bytes = _peak_rss_reading(
        write_lines(tmp_path / "one.jsonl", [request_line(http_trace(1))])
    )
    count, spans, problems, peak_bytes = _peak_rss_reading(path)
    assert (count, spans, problems) == (traces, 5 * traces, 0)
    # Loading would hold the whole file (and several times that as Python objects); streaming
    # holds about one line (100 attempts, ~130 kB) at a time.
    grown_bytes = peak_bytes - baseline_bytes
    assert grown_bytes < min(30_000_000, raw_bytes // 4), (
        f"grew {grown_bytes / 1e6:.1f} MB reading {raw_bytes / 1e6:.0f} MB"
    )


def test_the_peer_address_comes_from_the_root_else_the_connection_that_carried_the_request(
    tmp_path: Path,
) -> None:
    on_root = http_trace(1, network__peer__address="203.0.113.9")
    on_connect = http_trace(2, t0_ns=12 * S)
    on_connect[2]["attributes"] = _attrs({names.NETWORK_PEER_ADDRESS: "198.51.100.4"})  # tcp.connect
    abandoned = phase_span(2, 9, names.SPAN_TCP_CONNECT, 12 * S, 12 * S + MS, probe__connect__abandoned=True)
    abandoned["attributes"].append(
        {"key": names.NETWORK_PEER_ADDRESS, "value": {"stringValue": "2001:db8::1"}}
    )  # type: ignore[union-attr]
    wrong_type = http_trace(3, t0_ns=14 * S, network__peer__address=7)
    none = http_trace(4, t0_ns=16 * S)
    line = request_line([*on_root, abandoned, *on_connect, *wrong_type, *none])
    path = write_lines(tmp_path / "traces.jsonl", [line])

    from_json = {r.trace_id[-1]: r.peer_address for r in iter_records(path)}
    from_protobuf = {
        r.trace_id[-1]: r.peer_address
        for r in records_from_request(json_to_message(line, ExportTraceServiceRequest()))
    }

    expected = {"1": "203.0.113.9", "2": "198.51.100.4", "3": None, "4": None}
    assert from_json == from_protobuf == expected
    frame, _ = read_records(path)
    assert frame["peer_address"].tolist()[:2] == ["203.0.113.9", "198.51.100.4"]
    assert frame["peer_address"].isna().tolist() == [False, False, True, True]
