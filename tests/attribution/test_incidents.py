"""Incidents: a series incident opens on a violation and closes after K quiet windows; concurrent
series incidents sharing a target or a vantage are one incident; ids are stable; state is bounded."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from otelprobe.attribution.incidents import (
    IncidentTracker,
    WindowIncidents,
    incident_id,
    incidents_from_windows,
)

W = 2_000_000_000  # window length, ns
T0 = 1_795_443_980_000_000_000


@dataclass(frozen=True)
class Verdict:
    target: str
    vantage: str
    violating_slos: tuple[str, ...] = ("availability",)


def step(tracker: IncidentTracker, index: int, *series: tuple[str, str]) -> WindowIncidents:
    """Window `index` in which exactly `series` violate."""
    return tracker.update(T0 + index * W, T0 + (index + 1) * W, [Verdict(t, v) for t, v in series])


def test_a_series_incident_opens_on_the_first_violation_and_closes_after_k_quiet_windows() -> None:
    tracker = IncidentTracker(close_after_windows=2)
    assert step(tracker, 0).open == ()
    first = step(tracker, 1, ("api", "eu"))
    (incident,) = first.open
    assert first.opened == (incident.id,) == (incident_id("api", "eu", T0 + W),)
    assert incident.start_ns == T0 + W and incident.open and incident.violating == {("api", "eu")}
    step(tracker, 2, ("api", "eu"))
    quiet = step(tracker, 3)  # one quiet window: still open (hysteresis), nothing violating
    assert [i.id for i in quiet.open] == [incident.id] and quiet.open[0].violating == frozenset()
    step(tracker, 4, ("api", "eu"))  # back: the same incident, not a new one
    step(tracker, 5)
    done = step(tracker, 6)
    assert done.open == ()
    (closed,) = done.closed
    assert closed.id == incident.id
    assert closed.end_ns == T0 + 5 * W  # the end of the last violating window
    (series,) = closed.series
    assert (series.violating_windows, series.closed, series.end_ns) == (3, True, T0 + 5 * W)


def test_with_k_1_a_quiet_window_closes_and_the_next_violation_is_a_new_incident() -> None:
    tracker = IncidentTracker(close_after_windows=1)
    (first,) = step(tracker, 0, ("api", "eu")).open
    assert [i.id for i in step(tracker, 1).closed] == [first.id]
    (second,) = step(tracker, 2, ("api", "eu")).open
    assert second.id != first.id


def test_series_sharing_a_target_or_a_vantage_are_one_incident() -> None:
    tracker = IncidentTracker()
    window = step(tracker, 0, ("api", "eu"), ("api", "us"), ("db", "ap"))
    assert len(window.open) == 2 and len(window.opened) == 2
    api, db = window.open  # same start: ordered by id
    by_targets = {i.targets: i for i in window.open}
    assert by_targets[frozenset({"api"})].vantages == {"eu", "us"}
    assert by_targets[frozenset({"db"})].vantages == {"ap"}
    # web from ap shares the vantage with db: it joins db's incident.
    (joined,) = [
        i
        for i in step(tracker, 1, ("api", "eu"), ("api", "us"), ("db", "ap"), ("web", "ap")).open
        if "db" in i.targets
    ]
    assert joined.targets == {"db", "web"} and joined.id == by_targets[frozenset({"db"})].id
    assert api.id != db.id


def test_a_series_linking_two_open_incidents_merges_them_under_the_oldest_id() -> None:
    tracker = IncidentTracker()
    (older,) = step(tracker, 0, ("api", "eu")).open
    newer = next(i for i in step(tracker, 1, ("api", "eu"), ("web", "us")).open if i.id != older.id)
    merged = step(tracker, 2, ("api", "eu"), ("web", "us"), ("web", "eu"))  # shares eu with api, web with web
    (incident,) = merged.open
    assert incident.id == older.id and merged.opened == ()
    assert {(s.target, s.vantage) for s in incident.series} == {("api", "eu"), ("web", "us"), ("web", "eu")}
    assert newer.id not in {i.id for i in merged.open}


def test_incidents_that_do_not_overlap_in_time_stay_apart_even_on_one_target() -> None:
    tracker = IncidentTracker(close_after_windows=1)
    (first,) = step(tracker, 0, ("api", "eu")).open
    (closed,) = step(tracker, 1).closed
    (second,) = step(tracker, 2, ("api", "us")).open
    assert closed.id == first.id and second.id != first.id and second.targets == {"api"}


def test_a_series_missing_from_a_window_counts_as_not_violating() -> None:
    tracker = IncidentTracker(close_after_windows=2)
    step(tracker, 0, ("api", "eu"))
    tracker.update(T0 + W, T0 + 2 * W, [Verdict("api", "eu", ())])  # reported, not violating
    assert len(step(tracker, 2).closed) == 1  # not reported at all: the second quiet window


def test_slos_are_collected_and_flush_closes_what_is_open() -> None:
    tracker = IncidentTracker()
    tracker.update(T0, T0 + W, [Verdict("api", "eu", ("availability",))])
    tracker.update(T0 + W, T0 + 2 * W, [Verdict("api", "eu", ("latency",))])
    (incident,) = tracker.flush()
    assert incident.series[0].slos == {"availability", "latency"}
    assert incident.end_ns == T0 + 2 * W and not incident.open
    assert tracker.open_series == 0 and tracker.flush() == ()


def test_ids_are_the_same_on_a_replay() -> None:
    def run() -> list[str]:
        tracker = IncidentTracker()
        ids = []
        for index, series in enumerate([[("a", "x")], [("a", "x"), ("b", "y")], [("b", "x")], [], [], []]):
            ids.extend(step(tracker, index, *series).opened)
        return ids

    assert run() == run() and len(run()) == 2


def test_a_long_chain_keeps_a_bounded_number_of_closed_members() -> None:
    tracker = IncidentTracker(close_after_windows=1, max_closed_members=3)
    # api@eu stays on while ten other targets come and go from eu: one incident throughout.
    for index in range(10):
        window = step(tracker, 2 * index, ("api", "eu"), (f"t{index}", "eu"))
        step(tracker, 2 * index + 1, ("api", "eu"))
    (incident,) = window.open
    assert len(incident.series) == 5  # api, the open t9... and at most 3 closed ones
    (closed,) = tracker.flush()
    assert len(closed.series) <= 5


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="close_after_windows"):
        IncidentTracker(close_after_windows=0)


def test_incidents_from_windows_replays_evaluate_windows_output() -> None:
    rows = []
    for index in range(8):
        for target, vantage in (("api", "eu"), ("api", "us"), ("db", "eu")):
            on = (target == "api" and 2 <= index <= 4) or (target, index) == ("db", 3)
            rows.append(
                {
                    "target": target,
                    "vantage": vantage,
                    "window_start_ns": T0 + index * W,
                    "window_end_ns": T0 + (index + 1) * W,
                    "violating_slos": "latency" if on else "",
                }
            )
    (incident,) = incidents_from_windows(pd.DataFrame(rows), close_after_windows=2)
    assert incident.start_ns == T0 + 2 * W and incident.end_ns == T0 + 5 * W
    assert {(s.target, s.vantage) for s in incident.series} == {("api", "eu"), ("api", "us"), ("db", "eu")}
    assert incidents_from_windows(pd.DataFrame(rows).iloc[:0]) == []
