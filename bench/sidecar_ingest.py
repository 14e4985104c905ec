"""Sidecar ingest on one core: OTLP protobuf requests -> records -> windows -> features, SLOs,
incidents and attribution, at increasing offered rates, with 10,000 series (issue 9).

The requests are real: the lab recording data/lab/train-101 (18 series, 1 s probe interval, faults
throughout), its spans copied with renamed targets (`api~17`) and fresh trace ids until there are
10,000 series, each original export batch and its copies merged into one request of ~7,700 spans
(the size of a Collector batch). A child process builds them into a file first, so neither the
build time nor its memory is measured. The bench then runs the service core's own path
(sidecar/ingest.Ingest -> windower.EventTimeWindower -> pipeline.SlotProcessor) in one thread, as
one core would: `ExportTraceServiceRequest.FromString` for each request on its schedule, and every
slot the watermark passes processed at once. A slot's "attribution latency" runs from the moment
the watermark passes it to the moment its records are out (all of them, and every slot closed by
the same request waits for the ones before it); a record's from that moment to the moment
SlotProcessor hands that record out (its `emit` callback, where the service sends it; code without
the callback hands every record out when the slot is done).

The peer path, measured in the same run on the same requests: protobuf's own decoding (the OTel
SDK has no OTLP decoder; its exporters use these protobuf classes) walked into one dict per span,
and `json_format.MessageToDict`.

    .venv/bin/python bench/sidecar_ingest.py [--rates 10000,20000,30000,max] [--slots 6]
"""

from __future__ import annotations

import argparse
import gzip
import inspect
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Final

import psutil
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

from bench._common import pct  # noqa: E402
from otelprobe import names  # noqa: E402
from otelprobe.attribution.model import load_model  # noqa: E402
from otelprobe.attribution.otlp_decode import any_value, views_from_request  # noqa: E402
from otelprobe.attribution.records import RECORD_KEYS, TraceAssembler  # noqa: E402
from otelprobe.sidecar.ingest import Ingest  # noqa: E402
from otelprobe.sidecar.pipeline import SlotProcessor  # noqa: E402
from otelprobe.sidecar.windower import EventTimeWindower  # noqa: E402
from otelprobe.telemetry.otlp_json import json_to_message  # noqa: E402

RECORDING = REPO / "data/lab/train-101/traces.jsonl.gz"
WINDOW_S = 2.0  # two probe intervals of the recording (what `window: auto` picks)
LATENESS_S = 10.0  # the sidecar config's default allowed lateness
_LEN = struct.Struct("<I")


# --- building the requests (child process) ------------------------------------------------------


def _renamed(template: ExportTraceServiceRequest, copy: int, into: ExportTraceServiceRequest) -> int:
    prefix = copy.to_bytes(2, "big")
    suffix = f"~{copy}"
    count = 0
    for resource_spans in template.resource_spans:
        added = into.resource_spans.add()
        added.CopyFrom(resource_spans)
        for scope_spans in added.scope_spans:
            for span in scope_spans.spans:
                span.trace_id = prefix + span.trace_id[2:]
                for kv in span.attributes:
                    if kv.key == names.PROBE_TARGET:
                        kv.value.string_value += suffix
                count += 1
    return count


_FAULT_KEYS: Final = frozenset({names.LAB_FAULT_CAUSE, names.LAB_FAULT_CAUSES})


class HealthyTwin:
    """A recording's requests with every probe that overlapped a fault replaced by the same
    series' latest healthy probe, moved to the faulted probe's start: the series as it would have
    been without the lab's faults (its real healthy phases, repeated)."""

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], tuple[int, list[Span]]] = {}

    def __call__(self, template: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
        healthy = ExportTraceServiceRequest()
        healthy.CopyFrom(template)
        for resource_spans in healthy.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                traces: dict[bytes, list[Span]] = {}
                for span in scope_spans.spans:
                    copied = Span()
                    copied.CopyFrom(span)
                    traces.setdefault(span.trace_id, []).append(copied)
                del scope_spans.spans[:]
                for trace_id, spans in traces.items():
                    scope_spans.spans.extend(self._healthy(trace_id, spans))
        return healthy

    def _healthy(self, trace_id: bytes, spans: list[Span]) -> list[Span]:
        series = _series_of(spans)
        start_ns = min(span.start_time_unix_nano for span in spans)
        if not any(kv.key in _FAULT_KEYS for span in spans for kv in span.attributes):
            self._latest[series] = (start_ns, spans)
            return spans
        latest = self._latest.get(series)
        if latest is None:
            return []  # no healthy probe of this series yet: this one is left out
        latest_start_ns, latest_spans = latest
        shift_ns = start_ns - latest_start_ns
        moved = []
        for original in latest_spans:
            span = Span()
            span.CopyFrom(original)
            span.trace_id = trace_id
            span.start_time_unix_nano += shift_ns
            span.end_time_unix_nano += shift_ns
            for event in span.events:
                event.time_unix_nano += shift_ns
            moved.append(span)
        return moved


def _series_of(spans: list[Span]) -> tuple[str, str]:
    attributes = {kv.key: kv.value.string_value for span in spans for kv in span.attributes}
    return attributes.get(names.OTELPROBE_VANTAGE, ""), attributes.get(names.PROBE_TARGET, "")


def faulted_copy(copy: int, faulted_share: float) -> bool:
    """Whether copy `copy` keeps the recording's faults: `faulted_share` of the copies, spread
    evenly (copy 0 is the first to)."""
    return math.ceil((copy + 1) * faulted_share) > math.ceil(copy * faulted_share)


def generate(out: Path, copies: int, seconds: float, faulted_share: float = 1.0) -> None:
    """Write length-prefixed requests covering the recording's first `seconds` of event time;
    `faulted_share` of the copies keep the faults, the others are their healthy twins."""
    templates = []
    with gzip.open(RECORDING, "rt") as lines:
        for line in lines:
            template = json_to_message(line, ExportTraceServiceRequest())
            starts = [
                s.start_time_unix_nano
                for rs in template.resource_spans
                for ss in rs.scope_spans
                for s in ss.spans
            ]
            if starts:
                templates.append((min(starts), template))
    # The file holds each vantage's export batches in its own stretch; replay them in time order.
    templates.sort(key=lambda item: item[0])
    first_ns = templates[0][0]
    spans = requests = 0
    twin = HealthyTwin()
    faulted = [faulted_copy(copy, faulted_share) for copy in range(copies)]
    with out.open("wb") as sink:
        for start_ns, template in templates:
            if start_ns - first_ns > seconds * 1e9:
                break
            healthy = twin(template) if not all(faulted) else template
            merged = ExportTraceServiceRequest()
            for copy in range(copies):
                spans += _renamed(template if faulted[copy] else healthy, copy, merged)
            body = merged.SerializeToString()
            sink.write(_LEN.pack(len(body)) + body)
            requests += 1
    print(json.dumps({"requests": requests, "spans": spans, "faulted_copies": sum(faulted)}))


def read_requests(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while header := source.read(_LEN.size):
            (size,) = _LEN.unpack(header)
            yield source.read(size)


# --- the peer path ------------------------------------------------------------------------------


def peer_walk(body: bytes) -> int:
    """protobuf's decoder, then every span walked into a dict (what a hand-written consumer does)."""
    request = ExportTraceServiceRequest.FromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: any_value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "status": span.status.code,
                        "attributes": {kv.key: any_value(kv.value) for kv in span.attributes},
                        "resource": resource,
                    }
                )
    return len(spans)


def decode_rates(bodies: list[bytes], spans: int) -> dict[str, float]:
    """Spans per CPU-second of the decode step alone: ours vs the peers, on the same bodies."""
    results = {}

    def ours() -> None:
        assembler = TraceAssembler(max_age_s=None)
        for body in bodies:
            assembler.add(views_from_request(ExportTraceServiceRequest.FromString(body), RECORD_KEYS))

    def all_attributes() -> None:
        assembler = TraceAssembler(max_age_s=None)
        for body in bodies:
            assembler.add(views_from_request(ExportTraceServiceRequest.FromString(body)))

    def walk() -> None:
        for body in bodies:
            peer_walk(body)

    def to_dict() -> None:
        for body in bodies:
            json_format.MessageToDict(ExportTraceServiceRequest.FromString(body))

    def parse_only() -> None:
        for body in bodies:
            ExportTraceServiceRequest.FromString(body)

    for name, run in (
        ("protobuf FromString only", parse_only),
        ("ours: FromString + SpanViews (RECORD_KEYS attributes) + TraceAssembler -> records", ours),
        ("ours, every attribute decoded (as before)", all_attributes),
        ("peer: FromString + walk into dicts", walk),
        ("peer: FromString + json_format.MessageToDict", to_dict),
    ):
        started = time.process_time()
        run()
        results[name] = spans / (time.process_time() - started)
    return results


# --- the service path ---------------------------------------------------------------------------


def run_path(
    path: Path, model_stem: Path, phases: list[tuple[float | None, int]], warm_slots: int
) -> dict[str, object]:
    """Feed the requests on schedule through Ingest -> windower -> SlotProcessor, in one thread.

    `phases` are (offered spans/s or None for as fast as possible, slots) after `warm_slots`
    slots fed as fast as possible (baselines warm up there; not reported)."""
    model = load_model(model_stem)
    ingest = Ingest()
    windower = EventTimeWindower(WINDOW_S, LATENESS_S)
    ingest.attach(windower)
    processor = SlotProcessor(lambda: model, None, WINDOW_S, max_series=10_000)
    process = psutil.Process()
    streams = "emit" in inspect.signature(processor.process).parameters
    reports = []
    requests = read_requests(path)
    first_slot: int | None = None
    plan = [(None, warm_slots), *phases]
    pending: bytes | None = next(requests, None)
    for phase, (rate, slots) in enumerate(plan):
        start = time.perf_counter()
        start_cpu_s = time.process_time()
        fed_spans = fed_records = closed = attributions = 0
        latencies: list[float] = []
        cpu_latencies: list[float] = []  # the same, in this process's CPU time (an idle core)
        record_latencies: list[float] = []
        cpu_record_latencies: list[float] = []
        process_s = decode_s = 0.0
        max_lag_s = 0.0
        slot_attributions: list[int] = []
        while pending is not None and closed < slots:
            if rate is not None:
                due = start + fed_spans / rate
                now = time.perf_counter()
                if due > now:
                    time.sleep(due - now)
                else:
                    max_lag_s = max(max_lag_s, now - due)
            t0 = time.process_time()
            request = ExportTraceServiceRequest.FromString(pending)
            records = ingest.add(request)
            windower.add(records)
            decode_s += time.process_time() - t0
            fed_spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            fed_records += len(records)
            pending = next(requests, None)
            ready = windower.close_ready()
            closed_at = time.perf_counter()
            closed_at_cpu = time.process_time()

            def out(
                _record: object,
                at: tuple[float, float] = (closed_at, closed_at_cpu),
                into: tuple[list[float], list[float]] = (record_latencies, cpu_record_latencies),
            ) -> None:
                into[0].append(time.perf_counter() - at[0])
                into[1].append(time.process_time() - at[1])

            for slot in ready:
                first_slot = slot.start_ns if first_slot is None else first_slot
                cpu_before_s = time.process_time()
                result = processor.process(slot, emit=out) if streams else processor.process(slot)
                latencies.append(time.perf_counter() - closed_at)
                cpu_latencies.append(time.process_time() - closed_at_cpu)
                if not streams:
                    record_latencies.extend([latencies[-1]] * len(result.attributions))
                    cpu_record_latencies.extend([cpu_latencies[-1]] * len(result.attributions))
                process_s += time.process_time() - cpu_before_s
                attributions += len(result.attributions)
                slot_attributions.append(len(result.attributions))
                closed += 1
        wall_s = time.perf_counter() - start
        cpu_s = time.process_time() - start_cpu_s
        print(
            f"phase {phase} ({rate or 'max'}): {closed} slots, {fed_spans} spans, "
            f"{wall_s:.1f} s wall, {cpu_s:.1f} s CPU",
            file=sys.stderr,
            flush=True,
        )
        if phase == 0:
            continue
        reports.append(
            {
                "offered_spans_per_s": rate,
                "slots": closed,
                "spans": fed_spans,
                "records": fed_records,
                "wall_s": round(wall_s, 2),
                "spans_per_s": round(fed_spans / wall_s),
                "records_per_s": round(fed_records / wall_s),
                "cpu_s": round(cpu_s, 2),
                "spans_per_cpu_s": round(fed_spans / cpu_s),
                "records_per_cpu_s": round(fed_records / cpu_s),
                "kept_up": rate is None or max_lag_s < 1.0,
                "max_lag_s": round(max_lag_s, 2),
                "decode_ingest_cpu_s": round(decode_s, 2),
                "process_cpu_s": round(process_s, 2),
                "attributions": attributions,
                "latency_p50_s": round(pct(latencies, 50), 3),
                "latency_p99_s": round(pct(latencies, 99), 3),
                "latency_max_s": round(max(latencies, default=0.0), 3),
                "cpu_latency_p50_s": round(pct(cpu_latencies, 50), 3),
                "cpu_latency_p99_s": round(pct(cpu_latencies, 99), 3),
                "cpu_latency_max_s": round(max(cpu_latencies, default=0.0), 3),
                "record_latency_p50_s": round(pct(record_latencies, 50), 3),
                "record_latency_p99_s": round(pct(record_latencies, 99), 3),
                "cpu_record_latency_p50_s": round(pct(cpu_record_latencies, 50), 3),
                "cpu_record_latency_p99_s": round(pct(cpu_record_latencies, 99), 3),
                "slot_attributions": slot_attributions,
                "series": processor.evaluator.series_count,
                "rss_mib": round(process.memory_info().rss / 2**20),
            }
        )
    return {
        "phases": reports,
        "ingest": asdict(ingest.stats),
        "windower": asdict(windower.stats),
        "pipeline": asdict(processor.stats),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model stem (default: trained here from train-101)")
    parser.add_argument("--copies", type=int, default=556, help="copies of the 18 series (556 -> 10,008)")
    parser.add_argument(
        "--faulted-share",
        type=float,
        default=1.0,
        help="share of the copies that keep train-101's faults; the others replay their series' "
        "healthy probes (1.0: every copy faulted, the stress case)",
    )
    parser.add_argument("--rates", default="10000,20000,30000,max", help="offered spans/s per phase")
    parser.add_argument("--slots", type=int, default=5, help="slots per rate phase")
    parser.add_argument("--warm-slots", type=int, default=8)
    parser.add_argument(
        "--requests", type=Path, help="keep the built requests in this file (reused if present)"
    )
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate(args.generate, args.copies, args.seconds, args.faulted_share)
        return 0
    rates = [None if r == "max" else float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp:
        model = args.model
        if model is None:
            model = Path(tmp) / "train-101"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "otelprobe.cli",
                    "train",
                    "--input",
                    str(RECORDING.parent),
                    "--out",
                    str(model),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        requests_file = args.requests or Path(tmp) / "requests.bin"
        slots = args.warm_slots + args.slots * len(rates)
        seconds = (slots + LATENESS_S / WINDOW_S + 2) * WINDOW_S
        started = time.perf_counter()
        build: dict[str, object] = {"reused": True}
        if not requests_file.exists():
            built = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--generate",
                    str(requests_file),
                    "--copies",
                    str(args.copies),
                    "--seconds",
                    str(seconds),
                    "--faulted-share",
                    str(args.faulted_share),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            build = json.loads(built.stdout)
            build["build_s"] = round(time.perf_counter() - started, 1)
        build["bytes"] = os.path.getsize(requests_file)
        print(json.dumps({"requests": build}), flush=True)
        sample: list[bytes] = []
        sample_spans = 0
        for body in read_requests(requests_file):
            sample.append(body)
            sample_spans += peer_walk(body)
            if sample_spans > 200_000:
                break
        decode = decode_rates(sample, sample_spans)
        del sample
        print(json.dumps({"decode_spans_per_s": {k: round(v) for k, v in decode.items()}}), flush=True)
        result = run_path(requests_file, model, [(rate, args.slots) for rate in rates], args.warm_slots)
        print(json.dumps(result, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
