"""The live path (windower -> one slot at a time) attributes exactly what the offline path
(dataset.window_table over the whole recording -> attribute) does, on a shipped lab recording,
and hands out a slot's verdicts, incidents and records in the order the service relies on."""

from __future__ import annotations

from pathlib import Path

from otelprobe.attribution.attribute import attribute
from otelprobe.attribution.dataset import window_table
from otelprobe.attribution.model import load_model
from otelprobe.attribution.records import ProbeRecord, read_records
from otelprobe.sidecar.pipeline import SlotProcessor
from otelprobe.sidecar.windower import EventTimeWindower, Slot

RECORDING = Path(__file__).resolve().parents[2] / "data" / "lab" / "eval-202" / "traces.jsonl.gz"
WINDOW_S = 2.0


def test_live_slots_give_the_offline_attributions(trained_model: Path) -> None:
    model = load_model(trained_model)
    frame, _ = read_records([RECORDING])
    frame = frame.sort_values("start_ns", kind="stable")
    first = int(frame["start_ns"].min()) // 10**9 // 2 * 2
    frame = frame[frame["start_ns"] < (first + 60) * 10**9].reset_index(drop=True)  # 30 windows

    offline_table, _ = window_table(frame, WINDOW_S)
    offline = [a.to_json() for a in attribute(model, offline_table)]

    records = [ProbeRecord(**row) for row in frame.to_dict("records")]
    windows = EventTimeWindower(WINDOW_S, allowed_lateness_s=1.0, clock=lambda: 0.0)
    processor = SlotProcessor(lambda: model, None, WINDOW_S)
    live: list[object] = []
    events: list[tuple[str, object]] = []

    def process(slot: Slot) -> None:
        # What the service hands its loop, in order: the violating verdicts and the incidents,
        # each record as it is made, then every series' verdicts.
        result = processor.process(
            slot,
            emit=lambda made: events.append(("record", made)),
            decided=lambda verdicts, _incidents: events.append(("decided", list(verdicts))),
            verdicts_ready=lambda verdicts: events.append(("verdicts", list(verdicts))),
        )
        kinds = [kind for kind, _ in events]
        assert kinds == ["decided", *["record"] * len(result.attributions), "verdicts"]
        decided, every = events[0][1], events[-1][1]
        assert isinstance(decided, list) and isinstance(every, list)
        assert decided == [w for w in every if w.violating] and every == list(result.verdicts)
        assert [made for _, made in events[1:-1]] == list(result.attributions)
        live.extend(found.attribution.to_json() for found in result.attributions)
        events.clear()

    for start in range(0, len(records), 40):  # arriving in batches, as requests do
        windows.add(records[start : start + 40])
        for slot in windows.close_ready():
            process(slot)
    for slot in windows.drain():
        process(slot)

    assert offline, "the recording's first 30 windows hold faults to attribute"
    assert live == offline
    assert processor.stats.failed_slots == 0 and windows.stats.late_records == 0
