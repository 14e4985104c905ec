"""Clock skew and bad timestamps in the windower: one far-future span loses no good record and
closes no slot early, a prober whose clock runs 30 s ahead of the others is windowed without loss,
one series alone is windowed as before, and records too far ahead are counted and bounded."""

from __future__ import annotations

import dataclasses

from otelprobe.attribution.records import ProbeRecord
from otelprobe.sidecar.windower import EventTimeWindower, Slot
from tests.support.sidecar_spans import BASE, Clock, S, record

TEMPLATE = record(BASE)  # a real record, read from real probe spans
YEAR = 365 * 24 * 3600 * S


def probe(start_ns: int, target: str, vantage: str = "v1") -> ProbeRecord:
    return dataclasses.replace(
        TEMPLATE, target=target, vantage=vantage, start_ns=start_ns, end_ns=start_ns + S // 50
    )


def feed(windows: EventTimeWindower, batches: list[list[ProbeRecord]]) -> list[tuple[int, Slot]]:
    """Each batch as one request, then the slots ready: (batch index, slot), in closing order."""
    closed: list[tuple[int, Slot]] = []
    for i, batch in enumerate(batches):
        windows.add(batch)
        closed.extend((i, slot) for slot in windows.close_ready())
    return closed


def ticks(
    targets: list[str], seconds: int, step_ns: int = S // 4, offset_ns: int = 0
) -> list[list[ProbeRecord]]:
    """Every target probed every `step_ns` for `seconds`, one batch per tick."""
    return [
        [probe(BASE + offset_ns + k * step_ns, t) for t in targets] for k in range(seconds * S // step_ns)
    ]


def summary(closed: list[tuple[int, Slot]]) -> list[tuple[int, int, int]]:
    return [(i, slot.start_ns - BASE, len(slot.records)) for i, slot in closed]


def test_windower_skew_one_far_future_span_among_many_series_loses_nothing_and_closes_on_time() -> None:
    targets = [f"t{n}" for n in range(8)]
    clean = feed(EventTimeWindower(1.0, allowed_lateness_s=0.5, clock=Clock()), ticks(targets, 6))
    batches = ticks(targets, 6)
    batches[8].insert(3, probe(BASE + 10 * YEAR, "t3"))  # t3's clock broke for one span
    windows = EventTimeWindower(1.0, allowed_lateness_s=0.5, clock=Clock())
    closed = feed(windows, batches)
    assert summary(closed) == summary(clean)  # the same slots, closed after the same requests
    assert len(closed) == 5 and all(len(slot.records) == 4 * len(targets) for _, slot in closed)
    assert (windows.stats.future_records, windows.stats.late_records) == (1, 0)
    assert len(windows.drain()[0].records) == 4 * len(targets)  # the last slot: nothing lost either


def test_windower_skew_bad_spans_of_different_series_at_different_times_do_not_add_up() -> None:
    targets = [f"t{n}" for n in range(4)]
    batches = ticks(targets, 6)
    for k, target in ((4, "t0"), (9, "t1"), (13, "t2")):  # a bad span now and then, each its own series
        batches[k].append(probe(BASE + (k + 1) * YEAR, target))
    windows = EventTimeWindower(1.0, allowed_lateness_s=0.5, clock=Clock())
    closed = feed(windows, batches)
    assert [len(slot.records) for _, slot in closed] == [16] * 5
    assert (windows.stats.future_records, windows.stats.late_records) == (3, 0)


def test_windower_skew_a_series_30s_ahead_of_the_others_is_windowed_without_loss() -> None:
    targets = [f"t{n}" for n in range(5)]
    windows = EventTimeWindower(2.0, allowed_lateness_s=10.0, clock=Clock())  # the defaults
    batches = ticks(targets, 120, step_ns=S)
    for k, batch in enumerate(batches):
        batch.append(probe(BASE + 30 * S + k * S, "ahead"))  # its clock reads 30 s more
    closed = [slot for _, slot in feed(windows, batches)]
    rest = windows.drain()
    assert sum(len(slot.records) for slot in closed + rest) == 6 * 120
    assert (windows.stats.late_records, windows.stats.future_records, windows.stats.slots_forced) == (0, 0, 0)
    # Each slot closed once the five others had passed it, with the skewed series' records in it.
    after_skew = [slot for slot in closed if slot.start_ns >= BASE + 30 * S]
    assert len(after_skew) == (120 - 10 - 30) // 2 - 1
    assert all(len({r.target for r in slot.records}) == 6 and len(slot.records) == 12 for slot in after_skew)


def test_windower_skew_one_series_alone_is_windowed_as_before() -> None:
    clock = Clock()
    windows = EventTimeWindower(1.0, allowed_lateness_s=0.5, clock=clock)
    windows.add([probe(BASE + k * S // 4, "only") for k in range(8)])  # 2 s of probes
    assert [s.start_ns - BASE for s in windows.close_ready()] == [0]
    windows.add([probe(BASE + 600 * S, "only")])  # probing paused 10 min: its clock is the only one
    assert [s.start_ns - BASE for s in windows.close_ready()] == [S]
    windows.add([probe(BASE + 600 * S + S // 2, "only")])
    clock.now_s += 1.0  # nothing arrives: the sidecar's clock closes the last slot
    (last,) = windows.close_ready()
    assert (last.start_ns - BASE, len(last.records)) == (600 * S, 2)
    assert (windows.stats.future_records, windows.stats.late_records, windows.stats.slots_forced) == (0, 0, 0)


def test_windower_skew_far_future_records_are_counted_and_open_no_slots() -> None:
    windows = EventTimeWindower(1.0, allowed_lateness_s=0.5, max_open_slots=8, clock=Clock())
    batches = ticks(["a", "b", "c"], 4)
    for k, batch in enumerate(batches):  # a prober a day ahead, every span of it
        batch.append(probe(BASE + 24 * 3600 * S + k * S // 4, "rogue"))
    closed = feed(windows, batches)
    assert windows.stats.future_records == len(batches)
    assert windows.open_slots <= 2 and windows.stats.slots_forced == 0
    assert [len(slot.records) for _, slot in closed] == [12] * 3
    windows.add([probe(BASE + 4 * S, "rogue")])  # its clock fixed: taken again at once
    assert windows.stats.future_records == len(batches) and windows.open_slots <= 2


def test_windower_skew_series_remembered_are_bounded_least_recent_evicted_and_counted() -> None:
    windows = EventTimeWindower(1.0, allowed_lateness_s=0.5, max_series=3, clock=Clock())
    for k, target in enumerate(["a", "b", "c", "d", "e", "a"]):
        windows.add([probe(BASE + k * S // 10, target)])
    assert (windows.series, windows.stats.evicted_series) == (3, 3)
    windows.add([probe(BASE + 5 * S, "e"), probe(BASE + 5 * S, "a")])  # two of the three agree
    (first,) = windows.close_ready()
    assert (first.start_ns, len(first.records), windows.stats.future_records) == (BASE, 6, 0)


def test_windower_skew_clocks_that_jump_together_move_the_watermark_after_one_record() -> None:
    # The sidecar was suspended (its monotonic clock stood still) or the fleet's clocks stepped:
    # every series is 10 minutes on at once. Only the first record is taken as too far ahead.
    targets = [f"t{n}" for n in range(4)]
    windows = EventTimeWindower(1.0, allowed_lateness_s=0.5, clock=Clock())
    feed(windows, ticks(targets, 2))
    closed = feed(windows, ticks(targets, 3, offset_ns=600 * S))
    assert windows.stats.future_records == 1 and windows.stats.late_records == 0
    assert [slot.start_ns - BASE for _, slot in closed][-2:] == [600 * S, 601 * S]
    assert [len(slot.records) for _, slot in closed][-2:] == [15, 16]


def test_windower_skew_restored_state_with_a_bad_span_in_the_first_request() -> None:
    windows = EventTimeWindower(1.0, allowed_lateness_s=0.5, clock=Clock())
    windows.resume_after(BASE + 2 * S)  # slots up to 2 s were processed before the restart
    batches = ticks(["a", "b", "c"], 5)
    batches[0].insert(1, probe(BASE + YEAR, "b"))
    closed = feed(windows, batches)
    assert windows.stats.late_records == 3 * 8  # the first 2 s: already processed
    assert windows.stats.future_records == 1
    assert [(slot.start_ns - BASE, len(slot.records)) for _, slot in closed] == [(2 * S, 12), (3 * S, 12)]


def test_windower_skew_the_watermark_moves_with_the_sidecar_clock_when_every_series_stops() -> None:
    clock = Clock()
    windows = EventTimeWindower(1.0, allowed_lateness_s=0.5, clock=clock)
    feed(windows, ticks(["a", "b", "c"], 2))
    clock.now_s += 1.5
    (last,) = windows.close_ready()
    assert (last.start_ns - BASE, len(last.records)) == (S, 12)
