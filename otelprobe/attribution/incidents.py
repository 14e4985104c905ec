"""Incidents from SLO violations: per series, and grouped across series that share a target or vantage.

After the SLO detector (slo.py), before attribution: a series incident opens on the first window
a (target, vantage) series violates any SLO and closes after `close_after_windows` windows in a
row without a violation (hysteresis, so one quiet window does not split an incident). Series
incidents open at the same time are one incident when they share a target (one target seen
degrading from several vantages) or a vantage (one vantage seeing several targets degrade),
transitively; that cross-series shape is what the scope of a cause is decided from. Ids are
derived from (target, vantage, first window), so a replay gives the same ids. Only open
incidents are kept; a closed one is handed out once and forgotten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd

Series = tuple[str, str]
"""(target, vantage)."""


class WindowVerdict(Protocol):
    """What the tracker reads of one series' window (slo.SeriesWindow has it)."""

    @property
    def target(self) -> str: ...
    @property
    def vantage(self) -> str: ...
    @property
    def violating_slos(self) -> Collection[str]: ...


@dataclass(frozen=True, slots=True)
class SeriesIncident:
    """One series' part of an incident: from its first violating window to its last."""

    id: str
    target: str
    vantage: str
    start_ns: int  # start of the first violating window
    last_violation_end_ns: int  # end of the last violating window so far
    closed: bool
    violating_windows: int
    slos: frozenset[str]  # every SLO that violated

    @property
    def end_ns(self) -> int | None:
        return self.last_violation_end_ns if self.closed else None


@dataclass(frozen=True, slots=True)
class Incident:
    """Concurrent series incidents linked by a shared target or vantage."""

    id: str
    start_ns: int
    end_ns: int | None  # None while open
    series: tuple[SeriesIncident, ...]  # every series incident it has held, by start
    violating: frozenset[Series]  # series violating in the window just evaluated

    @property
    def open(self) -> bool:
        return self.end_ns is None

    @property
    def targets(self) -> frozenset[str]:
        return frozenset(s.target for s in self.series)

    @property
    def vantages(self) -> frozenset[str]:
        return frozenset(s.vantage for s in self.series)


@dataclass(frozen=True, slots=True)
class WindowIncidents:
    """The tracker's answer for one window."""

    window_start_ns: int
    window_end_ns: int
    open: tuple[Incident, ...]  # open after this window: attribute these
    opened: tuple[str, ...]  # ids of incidents that opened in this window
    closed: tuple[Incident, ...]  # incidents that closed in this window, final


@dataclass(slots=True)
class _SeriesState:
    id: str
    series: Series
    start_ns: int
    last_violation_end_ns: int
    violating_windows: int = 1
    quiet_windows: int = 0
    slos: set[str] = field(default_factory=set)
    closed: bool = False

    def frozen(self) -> SeriesIncident:
        return SeriesIncident(
            self.id,
            *self.series,
            self.start_ns,
            self.last_violation_end_ns,
            self.closed,
            self.violating_windows,
            frozenset(self.slos),
        )


@dataclass(slots=True)
class _Group:
    id: str
    start_ns: int
    members: list[_SeriesState]

    def open_members(self) -> list[_SeriesState]:
        return [m for m in self.members if not m.closed]

    def forget_oldest_closed(self, keep: int) -> None:
        closed = [m for m in self.members if m.closed]
        if len(closed) > keep:
            dropped = {
                id(m) for m in sorted(closed, key=lambda m: m.last_violation_end_ns)[: len(closed) - keep]
            }
            self.members = [m for m in self.members if id(m) not in dropped]


class _GroupOf(dict[Series, str]):
    """Open series -> its group id, with the groups of each target's and each vantage's open
    series counted, so a newly open series finds the groups it joins without scanning every open
    series (10,000 series, a third violating at once: that scan was 10 % of a slot's CPU). A dict,
    so a restored tracker fills it as one."""

    def __init__(self) -> None:
        super().__init__()
        self.of_target: dict[str, dict[str, int]] = {}  # target -> group id -> open series
        self.of_vantage: dict[str, dict[str, int]] = {}

    def groups_near(self, series: Series) -> set[str]:
        """Groups holding an open series other than `series` with its target or its vantage."""
        near = {
            group_id
            for index, key in ((self.of_target, series[0]), (self.of_vantage, series[1]))
            for group_id in index.get(key, ())
        }
        own = self.get(series)
        if own is not None and not (
            self.of_target[series[0]][own] > 1 or self.of_vantage[series[1]][own] > 1
        ):
            near.discard(own)  # counted there only for `series` itself
        return near

    def __setitem__(self, series: Series, group_id: str) -> None:
        old = self.get(series)
        if old == group_id:
            return
        if old is not None:
            self._count(series, old, -1)
        self._count(series, group_id, +1)
        super().__setitem__(series, group_id)

    def __delitem__(self, series: Series) -> None:
        self._count(series, self[series], -1)
        super().__delitem__(series)

    def pop(self, series: Series, *default: str) -> str:  # type: ignore[override]
        if series in self:
            self._count(series, self[series], -1)
        return super().pop(series, *default)

    def clear(self) -> None:
        super().clear()
        self.of_target.clear()
        self.of_vantage.clear()

    def _count(self, series: Series, group_id: str, step: int) -> None:
        for index, key in ((self.of_target, series[0]), (self.of_vantage, series[1])):
            groups = index.setdefault(key, {})
            left = groups.get(group_id, 0) + step
            if left > 0:
                groups[group_id] = left
            else:
                groups.pop(group_id, None)
                if not groups:
                    del index[key]


def incident_id(target: str, vantage: str, start_ns: int) -> str:
    """16 hex digits from the series and its first violating window: stable across replays."""
    key = f"{target}\x00{vantage}\x00{start_ns}".encode()
    return hashlib.blake2b(key, digest_size=8).hexdigest()


class IncidentTracker:
    """Feed every window's verdicts in order; get the incidents open after it and those that closed.

    Args:
        close_after_windows: windows in a row without a violation that close a series incident.
        max_closed_members: closed series incidents an open incident remembers (the oldest go
            first), so a long chain of overlapping incidents cannot grow without bound.
    """

    def __init__(self, close_after_windows: int = 2, max_closed_members: int = 1000) -> None:
        if close_after_windows < 1:
            raise ValueError("close_after_windows must be at least 1")
        if max_closed_members < 0:
            raise ValueError("max_closed_members must not be negative")
        self.close_after_windows = close_after_windows
        self.max_closed_members = max_closed_members
        self._open: dict[Series, _SeriesState] = {}
        self._groups: dict[str, _Group] = {}  # open groups by id
        self._group_of = _GroupOf()  # open series -> its group id

    @property
    def open_series(self) -> int:
        return len(self._open)

    def update(
        self, window_start_ns: int, window_end_ns: int, verdicts: Iterable[WindowVerdict]
    ) -> WindowIncidents:
        """Advance by one window; series missing from `verdicts` count as not violating."""
        violating = {(v.target, v.vantage): set(v.violating_slos) for v in verdicts if v.violating_slos}
        opened: list[str] = []
        touched: set[str] = set()
        for series in sorted(violating):
            state = self._open.get(series)
            if state is None:
                state = _SeriesState(
                    incident_id(*series, window_start_ns), series, window_start_ns, window_end_ns
                )
                self._open[series] = state
                group_id, is_new = self._join(state)
                if is_new:
                    opened.append(group_id)
            else:
                state.violating_windows += 1
                state.quiet_windows = 0
                state.last_violation_end_ns = window_end_ns
            state.slos |= violating[series]
        for series, state in list(self._open.items()):
            if series in violating:
                continue
            state.quiet_windows += 1
            if state.quiet_windows >= self.close_after_windows:
                state.closed = True
                del self._open[series]
                touched.add(self._group_of.pop(series))
        closed = []
        for group_id in sorted(touched):
            group = self._groups[group_id]
            if not group.open_members():
                del self._groups[group_id]
                closed.append(_snapshot(group, frozenset(), closed=True))
            else:
                group.forget_oldest_closed(self.max_closed_members)
        open_now = tuple(
            _snapshot(g, frozenset(s for s in violating if self._group_of.get(s) == g.id), closed=False)
            for g in sorted(self._groups.values(), key=lambda g: (g.start_ns, g.id))
        )
        return WindowIncidents(window_start_ns, window_end_ns, open_now, tuple(opened), tuple(closed))

    def flush(self) -> tuple[Incident, ...]:
        """Close every open incident (the end of a recording); returns them."""
        closed = []
        for group in sorted(self._groups.values(), key=lambda g: (g.start_ns, g.id)):
            for member in group.open_members():
                member.closed = True
            closed.append(_snapshot(group, frozenset(), closed=True))
        self._open.clear()
        self._groups.clear()
        self._group_of.clear()
        return tuple(closed)

    def _join(self, state: _SeriesState) -> tuple[str, bool]:
        """Put a newly open series incident in the group(s) it shares a target or vantage with."""
        linked = sorted(
            self._group_of.groups_near(state.series),
            key=lambda g: (self._groups[g].start_ns, g),
        )
        if not linked:
            group = _Group(state.id, state.start_ns, [state])
            self._groups[group.id] = group
            self._group_of[state.series] = group.id
            return group.id, True
        keeper = self._groups[linked[0]]  # the oldest keeps its id
        for other_id in linked[1:]:
            other = self._groups.pop(other_id)
            keeper.members.extend(other.members)
            for member in other.open_members():
                self._group_of[member.series] = keeper.id
        keeper.members.append(state)
        self._group_of[state.series] = keeper.id
        return keeper.id, False


def _snapshot(group: _Group, violating: frozenset[Series], *, closed: bool) -> Incident:
    members = tuple(m.frozen() for m in sorted(group.members, key=lambda m: (m.start_ns, m.series)))
    end_ns = max(m.last_violation_end_ns for m in group.members) if closed else None
    return Incident(group.id, group.start_ns, end_ns, members, violating)


@dataclass(frozen=True, slots=True)
class _Row:
    target: str
    vantage: str
    violating_slos: tuple[str, ...]


def incidents_from_windows(windows: pd.DataFrame, close_after_windows: int = 2) -> list[Incident]:
    """Every incident of a recording, from `slo.evaluate_windows` output (offline replay)."""
    tracker = IncidentTracker(close_after_windows)
    incidents: list[Incident] = []
    if windows.empty:
        return incidents
    for (start_ns, end_ns), frame in windows.groupby(["window_start_ns", "window_end_ns"], sort=True):
        rows: Sequence[_Row] = [
            _Row(t, v, tuple(s.split(",")))
            for t, v, s in zip(frame["target"], frame["vantage"], frame["violating_slos"], strict=True)
            if s
        ]
        incidents.extend(tracker.update(int(start_ns), int(end_ns), rows).closed)
    incidents.extend(tracker.flush())
    return incidents
