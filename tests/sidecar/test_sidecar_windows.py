"""Event-time windows with a watermark, and ingest: late, out-of-order and duplicate spans are
counted (late and duplicates dropped), spans of one probe in different requests are joined, a
prober whose clock is hours off is windowed on its own clock, and memory stays bounded."""

from __future__ import annotations

from otelprobe.sidecar.ingest import Ingest
from otelprobe.sidecar.pipeline import SlotProcessor
from otelprobe.sidecar.windower import EventTimeWindower, Slot
from tests.support.sidecar_spans import BASE, Clock, S, probe_spans, record, request


def test_a_slot_closes_when_the_watermark_passes_its_end() -> None:
    clock = Clock()
    windows = EventTimeWindower(1.0, allowed_lateness_s=0.5, clock=clock)
    windows.add([record(BASE + S // 10), record(BASE + S // 2)])
    assert windows.close_ready() == []
    windows.add([record(BASE + S + S // 4)])  # newest 1.25 s: watermark 0.75 s < end 1 s
    assert windows.close_ready() == []
    windows.add([record(BASE + S + 6 * S // 10)])  # newest 1.6 s: watermark 1.1 s
    (slot,) = windows.close_ready()
    assert (slot.start_ns, slot.end_ns, len(slot.records)) == (BASE, BASE + S, 2)


def test_out_of_order_records_within_the_lateness_are_kept_late_ones_dropped_and_counted() -> None:
    windows = EventTimeWindower(1.0, allowed_lateness_s=0.5, clock=Clock())
    windows.add([record(BASE + S + S // 2)])
    windows.add([record(BASE + S // 5)])  # older than the newest, but its slot is still open
    windows.add([record(BASE + 2 * S)])  # watermark 1.5 s: slot [0, 1) closes
    (slot,) = windows.close_ready()
    assert len(slot.records) == 1 and windows.stats.out_of_order_records == 1
    windows.add([record(BASE + S // 2)])  # for the closed slot: late
    assert windows.stats.late_records == 1
    later = windows.drain()
    assert sum(len(s.records) for s in later) == 2  # the late one is in no slot


def test_the_watermark_moves_with_the_sidecar_clock_while_nothing_arrives() -> None:
    clock = Clock()
    windows = EventTimeWindower(1.0, allowed_lateness_s=0.5, clock=clock)
    windows.add([record(BASE + S // 10)])
    assert windows.close_ready() == []
    clock.now_s += 1.5  # probing stopped; 1.5 s later the slot [0, 1) is complete
    assert [s.start_ns for s in windows.close_ready()] == [BASE]


def test_a_prober_clock_hours_off_is_windowed_on_its_own_clock() -> None:
    skewed = BASE - 3 * 3600 * S  # the prober's clock is three hours behind the sidecar's
    windows = EventTimeWindower(1.0, allowed_lateness_s=0.5, clock=Clock())
    for i in range(6):
        windows.add([record(skewed + i * S // 2)])
    closed = windows.close_ready()
    assert [s.start_ns - skewed for s in closed] == [0, S]
    assert all(len(s.records) == 2 for s in closed) and windows.stats.late_records == 0


def test_open_slots_are_bounded_the_oldest_closes_first() -> None:
    windows = EventTimeWindower(1.0, allowed_lateness_s=100.0, max_open_slots=3, clock=Clock())
    windows.add([record(BASE + i * S) for i in range(5)])
    closed = windows.close_ready()
    assert [s.start_ns for s in closed] == [BASE, BASE + S]
    assert windows.open_slots == 3 and windows.stats.slots_forced == 2


def test_a_collector_retry_is_a_duplicate_counted_and_dropped() -> None:
    ingest = Ingest()
    first = request(*probe_spans(1, BASE), *probe_spans(2, BASE + S))
    assert len(ingest.add(first)) == 2
    assert ingest.add(first) == []  # the same request again (a retry after a lost response)
    assert ingest.stats.duplicate_traces == 2 and ingest.stats.duplicate_spans == 4
    assert len(ingest.add(request(*probe_spans(3, BASE + 2 * S)))) == 1


def test_spans_of_one_probe_in_different_requests_are_joined_by_trace_id() -> None:
    ingest = Ingest()
    root, child = probe_spans(7, BASE)
    assert ingest.add(request(child)) == []  # the phase first, its root later
    assert ingest.pending_traces == 1
    (found,) = ingest.add(request(root))
    assert found.ttfb_s == 0.018 and ingest.pending_traces == 0


def test_the_duplicate_memory_is_bounded() -> None:
    ingest = Ingest(max_seen_traces=2, max_pending_traces=2)
    for n in range(1, 4):
        ingest.add(request(*probe_spans(n, BASE + n * S)))
    assert ingest.add(request(*probe_spans(3, BASE + 3 * S))) == []  # remembered
    assert len(ingest.add(request(*probe_spans(1, BASE + S)))) == 1  # forgotten: taken as new


def test_series_beyond_the_limit_are_evicted_oldest_first_and_counted(trained_model: object) -> None:
    from otelprobe.attribution.model import load_model

    model = load_model(str(trained_model))
    processor = SlotProcessor(lambda: model, None, 1.0, max_series=2)
    for i, target in enumerate(("a", "b", "c")):
        processor.process(Slot(BASE + i * S, BASE + (i + 1) * S, [record(BASE + i * S, target)]))
    assert processor.stats.evicted_series == 1
    assert set(processor.engine.baselines) == {("b", "v1"), ("c", "v1")}
    assert ("a", "v1") not in processor.evaluator._series
