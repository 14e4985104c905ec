"""What the SLO evaluator says of a window: per series and SLO the burn rates and whether they alert.

`RuleStatus`, `SLOStatus` and `SeriesWindow` are the objects every reader gets (incidents, the
API, the offline tables). The evaluator works them out for all series at once as columns
(`SLOColumn`, one per SLO) and `SlotVerdicts` turns the columns into objects: the violating
series' at once, everyone else's only when first read. At 10,000 series a window, building every
object took a fifth of a sidecar slot's CPU before its first attribution, and no attribution
reads them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, overload

import numpy as np

if TYPE_CHECKING:
    from otelprobe.attribution.slo_file import BurnRateRule

Series = tuple[str, str]
"""(target, vantage)."""


@dataclass(frozen=True, slots=True)
class RuleStatus:
    """One burn-rate rule of one SLO of one series, after one window."""

    rule: BurnRateRule
    long_windows: int
    short_windows: int
    long_burn: float | None
    short_burn: float | None

    @property
    def firing(self) -> bool:
        factor = self.rule.factor
        return (
            self.long_burn is not None
            and self.short_burn is not None
            and self.long_burn > factor
            and self.short_burn > factor
        )


@dataclass(frozen=True, slots=True)
class SLOStatus:
    """One SLO of one series after one window: this window's events and every rule's burn rates."""

    slo: str
    events: int  # probes counted this window (latency: 0 while the baseline warms up)
    bad: int
    threshold_s: float | None  # latency SLOs: the threshold applied this window
    rules: tuple[RuleStatus, ...]
    violating: bool | None = field(default=None, repr=False, compare=False)
    """Any rule firing (worked out once: detection, incidents and the API all ask; the evaluator
    passes it in, worked out for all series at once)."""

    def __post_init__(self) -> None:
        if self.violating is not None:
            return
        violating = False
        for rule in self.rules:  # RuleStatus.firing, inline: 10,000 series x rules per slot
            long_burn, short_burn, factor = rule.long_burn, rule.short_burn, rule.rule.factor
            if (
                long_burn is not None
                and short_burn is not None
                and long_burn > factor
                and short_burn > factor
            ):
                violating = True
                break
        object.__setattr__(self, "violating", violating)


@dataclass(frozen=True, slots=True)
class SeriesWindow:
    """Every SLO of one (target, vantage) series in one closed window."""

    target: str
    vantage: str
    window_start_ns: int
    window_end_ns: int
    probes: int
    slos: tuple[SLOStatus, ...]
    violating_slos: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """The SLOs violating in this window (worked out once, like `SLOStatus.violating`)."""

    def __post_init__(self) -> None:
        for status in self.slos:
            if status.violating:
                object.__setattr__(self, "violating_slos", tuple([s.slo for s in self.slos if s.violating]))
                return
        object.__setattr__(self, "violating_slos", ())  # most series, most windows

    @property
    def series(self) -> Series:
        return (self.target, self.vantage)

    @property
    def violating(self) -> bool:
        return bool(self.violating_slos)


@dataclass(frozen=True, slots=True)
class SLOColumn:
    """One SLO after one window, for the series it selects (in the evaluator's sorted order):
    arrays, copied out of the running counts, so they stay valid after the next window."""

    name: str
    rules: tuple[tuple[BurnRateRule, int, int], ...]  # rule, long windows, short windows
    long_burns: tuple[np.ndarray, ...]  # per rule; NaN: no events, no burn rate
    short_burns: tuple[np.ndarray, ...]
    events: np.ndarray
    bad: np.ndarray
    thresholds: np.ndarray  # NaN: no threshold (not a latency SLO, or still learning)
    firing: np.ndarray
    position: np.ndarray | None
    """Each sorted series' index in these arrays, -1 where the SLO does not select it; None: it
    selects every series, in order."""


@dataclass(frozen=True, slots=True)
class WindowColumns:
    """Everything needed to build the SeriesWindows of one window, for any subset of its series."""

    start_ns: int
    end_ns: int
    series: Sequence[Series]  # sorted
    slos_of: Sequence[tuple[int, ...]]  # per series: the SLOs (column indices) selecting it
    probes: np.ndarray
    columns: tuple[SLOColumn, ...]

    def violating(self) -> np.ndarray:
        """Per sorted series: does any of its SLOs fire."""
        found = np.zeros(len(self.series), dtype=bool)
        for column in self.columns:
            if column.position is None:
                found |= column.firing
            else:
                chosen = column.position >= 0
                found[chosen] |= column.firing[column.position[chosen]]
        return found

    def build(self, index: np.ndarray | None = None) -> list[SeriesWindow]:
        """The SeriesWindows of the sorted series at `index` (None: all), in sorted order.

        Statuses are immutable: series with the same figures (most, in a quiet window) share one
        object instead of building 10,000 alike."""
        status_columns = [_statuses(column, _at(column, index)) for column in self.columns]
        series = self.series if index is None else [self.series[i] for i in index.tolist()]
        probes = (self.probes if index is None else self.probes[index]).tolist()
        if all(column.position is None for column in self.columns):
            return [
                SeriesWindow(target, vantage, self.start_ns, self.end_ns, count, slos)
                for (target, vantage), count, slos in zip(
                    series, probes, zip(*status_columns, strict=True), strict=True
                )
            ]
        slos_of = self.slos_of if index is None else [self.slos_of[i] for i in index.tolist()]
        cursor = [0] * len(self.columns)
        results = []
        for (target, vantage), count, chosen in zip(series, probes, slos_of, strict=True):
            slos = []
            for j in chosen:
                slos.append(status_columns[j][cursor[j]])
                cursor[j] += 1
            results.append(SeriesWindow(target, vantage, self.start_ns, self.end_ns, count, tuple(slos)))
        return results


def _at(column: SLOColumn, index: np.ndarray | None) -> np.ndarray | None:
    """The rows of `column` of the sorted series at `index` that it selects (None: all rows)."""
    if index is None:
        return None
    if column.position is None:
        return index
    rows: np.ndarray = column.position[index]
    return rows[rows >= 0]


def _optional(values: np.ndarray) -> list[float | None]:
    """The floats, NaN as None."""
    out: list[float | None] = values.tolist()
    for i in np.flatnonzero(np.isnan(values)).tolist():
        out[i] = None
    return out


def _statuses(column: SLOColumn, rows: np.ndarray | None) -> list[SLOStatus]:
    """The SLOStatus of each of `rows` of one column (None: all), alike ones shared."""

    def take(values: np.ndarray) -> np.ndarray:
        return values if rows is None else values[rows]

    rule_columns: list[list[RuleStatus]] = []
    for (rule, long, short), long_burns, short_burns in zip(
        column.rules, column.long_burns, column.short_burns, strict=True
    ):
        made: dict[tuple[float | None, float | None], RuleStatus] = {}
        statuses = []
        for burns in zip(_optional(take(long_burns)), _optional(take(short_burns)), strict=True):
            found = made.get(burns)
            if found is None:
                found = made[burns] = RuleStatus(rule, long, short, *burns)
            statuses.append(found)
        rule_columns.append(statuses)
    events = take(column.events).tolist()
    rules_of: list[tuple[RuleStatus, ...]] = (
        list(zip(*rule_columns, strict=True)) if rule_columns else [()] * len(events)
    )
    shared: dict[tuple[object, ...], SLOStatus] = {}
    out = []
    for count, bad, threshold, rules, fire in zip(
        events,
        take(column.bad).tolist(),
        _optional(take(column.thresholds)),
        rules_of,
        take(column.firing).tolist(),
        strict=True,
    ):
        key = (count, bad, threshold, *map(id, rules))
        status = shared.get(key)
        if status is None:
            status = shared[key] = SLOStatus(column.name, count, bad, threshold, rules, fire)
        out.append(status)
    return out


class SlotVerdicts(Sequence[SeriesWindow]):
    """Every known series' SeriesWindow of one window, in sorted order: `violating` built at
    once, the whole sequence on first read (once, whichever thread reads first)."""

    __slots__ = ("_build", "_lock", "_size", "_windows", "violating")

    def __init__(self, violating: Sequence[SeriesWindow], build: Callable[[], list[SeriesWindow]], size: int):
        self.violating = tuple(violating)
        self._build: Callable[[], list[SeriesWindow]] | None = build
        self._size = size
        self._windows: list[SeriesWindow] | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, columns: WindowColumns) -> SlotVerdicts:
        violating = np.flatnonzero(columns.violating())
        return cls(columns.build(violating) if len(violating) else (), columns.build, len(columns.series))

    def materialize(self) -> SlotVerdicts:
        """Build every window now (the sidecar does it after the slot's records are out)."""
        self._all()
        return self

    def _all(self) -> list[SeriesWindow]:
        if self._windows is None:
            with self._lock:
                if self._windows is None:
                    assert self._build is not None
                    self._windows, self._build = self._build(), None
        return self._windows

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> SeriesWindow: ...
    @overload
    def __getitem__(self, index: slice) -> list[SeriesWindow]: ...
    def __getitem__(self, index: int | slice) -> SeriesWindow | list[SeriesWindow]:
        return self._all()[index]

    def __iter__(self) -> Iterator[SeriesWindow]:
        return iter(self._all())
