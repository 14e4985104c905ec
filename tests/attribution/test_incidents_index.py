"""The tracker's target/vantage index joins exactly the groups a scan of every open series would
(the scan it replaced for speed), over random violation histories."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from otelprobe.attribution.incidents import IncidentTracker, _SeriesState

WINDOW_NS = 2_000_000_000
SERIES = [(f"t{t}", f"v{v}") for t in range(4) for v in range(3)]


@dataclass(frozen=True)
class Verdict:
    target: str
    vantage: str
    violating_slos: tuple[str, ...]


class ScanningTracker(IncidentTracker):
    """The tracker with its former join: every open series scanned for a shared target or vantage."""

    def _join(self, state: _SeriesState) -> tuple[str, bool]:
        target, vantage = state.series
        linked = {
            group_id
            for (t, v), group_id in self._group_of.items()
            if (t == target or v == vantage) and (t, v) != state.series
        }
        assert linked == self._group_of.groups_near(state.series)
        return super()._join(state)


windows = st.lists(st.sets(st.sampled_from(SERIES), max_size=len(SERIES)), min_size=1, max_size=25)


@given(windows, st.integers(1, 3))
@settings(max_examples=150, deadline=None, database=None, derandomize=True)
def test_index_and_scan_join_the_same_groups(history: list[set[tuple[str, str]]], close_after: int) -> None:
    indexed, scanning = IncidentTracker(close_after), ScanningTracker(close_after)
    for window, violating in enumerate(history):
        verdicts = [Verdict(t, v, ("availability",)) for t, v in sorted(violating)]
        start = window * WINDOW_NS
        assert indexed.update(start, start + WINDOW_NS, verdicts) == scanning.update(
            start, start + WINDOW_NS, verdicts
        )
        index = indexed._group_of
        for counts_by_key in (index.of_target, index.of_vantage):
            indexed_groups = {group for counts in counts_by_key.values() for group in counts}
            assert indexed_groups == set(index.values())  # no stale entry left behind
        assert set(index) == set(indexed._open)
    assert indexed.flush() == scanning.flush()
    assert not indexed._group_of.of_target and not indexed._group_of.of_vantage
