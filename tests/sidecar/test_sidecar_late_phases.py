"""Phase spans that arrive after their root (a Collector with several sending consumers, or a
retry): joined while the record's window slot is open, counted once it has closed, and told from
a Collector's retry of spans already seen. Real OTLP protobuf requests through Ingest and the
EventTimeWindower, as the sidecar's service runs them."""

from __future__ import annotations

import math

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otelprobe.attribution.records import ProbeRecord
from otelprobe.sidecar.ingest import Ingest
from otelprobe.sidecar.windower import EventTimeWindower, Slot
from tests.support.sidecar_spans import BASE, Clock, S, request

MS = 1_000_000
PHASES = (("dns.lookup", 0, 5), ("tcp.connect", 5, 12), ("http.ttfb", 12, 40))
"""name, start and end in ms after the probe's start"""


def _text(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def probe(n: int, start_ns: int, target: str = "api") -> tuple[Span, list[Span]]:
    """A `probe http` root (50 ms) and its dns.lookup, tcp.connect and http.ttfb phases."""
    trace_id, root_id = n.to_bytes(16, "big"), n.to_bytes(8, "big")
    attributes = [
        _text("probe.kind", "http"),
        _text("probe.target", target),
        _text("otelprobe.vantage", "v1"),
        KeyValue(key="probe.success", value=AnyValue(bool_value=True)),
    ]
    root = Span(
        trace_id=trace_id,
        span_id=root_id,
        name="probe http",
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + 50 * MS,
        attributes=attributes,
    )
    phases = [
        Span(
            trace_id=trace_id,
            span_id=(n * 16 + i + 1).to_bytes(8, "big"),
            parent_span_id=root_id,
            name=name,
            start_time_unix_nano=start_ns + begin * MS,
            end_time_unix_nano=start_ns + end * MS,
            attributes=[_text("probe.target", target)],
        )
        for i, (name, begin, end) in enumerate(PHASES)
    ]
    return root, phases


def feed(ingest: Ingest, windows: EventTimeWindower, *spans: Span) -> list[ProbeRecord]:
    """One request through the service's path: Ingest, then the windower."""
    records = ingest.add(request(*spans))
    windows.add(records)
    return list(records)


def closes_first_slot(ingest: Ingest, windows: EventTimeWindower) -> Slot:
    """A probe 1.6 s in moves the watermark (lateness 0.5 s) past the first 1 s slot's end."""
    root, phases = probe(99, BASE + 16 * S // 10)
    feed(ingest, windows, *phases, root)
    (slot,) = windows.close_ready()
    assert slot.start_ns == BASE
    return slot


def parts() -> tuple[Ingest, EventTimeWindower]:
    ingest, windows = Ingest(), EventTimeWindower(1.0, allowed_lateness_s=0.5, clock=Clock())
    ingest.attach(windows)
    return ingest, windows


def test_phases_after_their_root_complete_the_record_in_its_open_slot() -> None:
    ingest, windows = parts()
    root, (dns, connect, ttfb) = probe(1, BASE + S // 10)
    (first,) = feed(ingest, windows, root, dns)  # the root and one phase...
    assert math.isnan(first.connect_s) and math.isnan(first.ttfb_s)
    other_root, other_phases = probe(2, BASE + S // 5)
    feed(ingest, windows, *other_phases, other_root)
    (revised,) = feed(ingest, windows, connect, ttfb)  # ...the other two in a later request
    assert (revised.trace_id, revised.dns_s, revised.connect_s, revised.ttfb_s) == (
        first.trace_id,
        0.005,
        0.007,
        0.028,
    )
    assert ingest.stats.late_phases == 2 and ingest.stats.duplicate_spans == 0
    assert ingest.reader.late_spans == 0 and ingest.reader.records == 2
    slot = closes_first_slot(ingest, windows)
    by_trace = {record.trace_id: record for record in slot.records}
    assert len(slot.records) == 2 and by_trace[first.trace_id] == revised
    assert windows.stats.revised_records == 1 and windows.stats.out_of_order_records == 0


def test_a_collector_retry_of_the_whole_trace_is_a_duplicate_and_stays_one_record() -> None:
    ingest, windows = parts()
    root, phases = probe(1, BASE + S // 10)
    assert len(feed(ingest, windows, *phases, root)) == 1
    assert feed(ingest, windows, *phases, root) == []  # the same request again
    assert (ingest.stats.duplicate_traces, ingest.stats.duplicate_spans) == (1, 4)
    assert ingest.stats.late_phases == 0 and ingest.stats.late_phases_after_close == 0
    # A phase joined late and then resent is a duplicate too, and so is a retry after the close.
    late_root, (dns, *late) = probe(2, BASE + S // 5)
    feed(ingest, windows, late_root, dns)
    assert len(feed(ingest, windows, *late)) == 1
    assert feed(ingest, windows, *late) == [] and ingest.stats.duplicate_spans == 6
    slot = closes_first_slot(ingest, windows)
    assert sorted(record.trace_id[-1] for record in slot.records) == ["1", "2"]
    assert feed(ingest, windows, *phases, root) == []
    assert (ingest.stats.duplicate_traces, ingest.stats.duplicate_spans) == (2, 10)
    assert ingest.stats.late_phases_after_close == 0 and windows.stats.late_records == 0


def test_a_phase_after_its_window_closed_is_counted_as_such_not_as_a_duplicate() -> None:
    ingest, windows = parts()
    root, (dns, connect, ttfb) = probe(1, BASE + S // 10)
    feed(ingest, windows, root, dns, connect)
    slot = closes_first_slot(ingest, windows)
    assert math.isnan(slot.records[0].ttfb_s)
    assert feed(ingest, windows, ttfb) == []
    assert ingest.stats.late_phases_after_close == 1 and ingest.reader.late_spans == 1
    assert ingest.stats.duplicate_spans == 0 and ingest.stats.late_phases == 0
    assert windows.stats.late_records == 0  # no record was made for the closed slot


def test_recorded_traces_spans_are_let_go_when_their_slot_closes() -> None:
    ingest, windows = parts()
    for n in range(1, 21):
        root, phases = probe(n, BASE + n * 10 * MS)
        feed(ingest, windows, *phases, root)
    assert ingest.joinable_traces == 20
    closes_first_slot(ingest, windows)
    feed(ingest, windows)  # the next request lets them go
    assert ingest.joinable_traces == 1  # the probe that closed the slot; its own slot is open
    assert ingest.stats.joins_evicted == 0


def test_the_memory_of_recorded_traces_is_bounded_by_count() -> None:
    ingest = Ingest(max_seen_traces=50, max_pending_traces=10)
    roots = []
    for n in range(1, 101):
        root, phases = probe(n, BASE + n * MS)
        ingest.add(request(*phases, root))
        roots.append((root, phases))
    assert ingest.joinable_traces == 10 and ingest.stats.joins_evicted == 90
    # Let go by count: span ids kept, so a retry is still a duplicate and a new phase is late.
    root, phases = roots[60]
    assert ingest.add(request(*phases, root)) == [] and ingest.stats.duplicate_spans == 4
    extra = Span(
        trace_id=root.trace_id, span_id=b"\xee" * 8, parent_span_id=root.span_id, name="http.transfer"
    )
    assert ingest.add(request(extra)) == [] and ingest.stats.late_phases_after_close == 1
    # Forgotten altogether beyond max_seen_traces: taken as new.
    root, phases = roots[0]
    assert len(ingest.add(request(*phases, root))) == 1
