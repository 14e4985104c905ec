"""SLO evaluation, one closed window at a time: per series and SLO, burn rates and whether they alert.

The detector of DESIGN §2 (windows -> SLO detector -> model): the live sidecar feeds each closed
window's probe records to `SLOEvaluator.evaluate`, the offline path (`evaluate_windows`) loops
over a recording's windows. Each (target, vantage) series keeps, per SLO, the event counts of
its last windows (as many as the longest rule spans) with running sums, so a window costs
O(rules) per series and state is bounded. The arithmetic (docs/attribution.md):

    windows(d)   = max(1, ceil(d x time_scale / window))        for each rule's long and short d
    burn rate    = (bad / events over those windows) / (1 - objective), None without events
    rule fires   = long burn > factor and short burn > factor
    SLO violates = any of its rules fires
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from otelprobe.attribution.latency_baseline import LatencyStore
from otelprobe.attribution.slo_file import DEFAULT_SLOS, SLO, BurnRateRule, SLOFile
from otelprobe.attribution.windows import window_ns_of

Series = tuple[str, str]
"""(target, vantage)."""


class ProbeOutcome(Protocol):
    """What the evaluator reads of a probe record (ProbeRecord has these and more)."""

    @property
    def target(self) -> str: ...
    @property
    def vantage(self) -> str: ...
    @property
    def total_s(self) -> float: ...
    @property
    def success(self) -> bool: ...


def burn_rate(bad: int, events: int, objective: float) -> float | None:
    """How many times faster than allowed the error budget burns; None when there were no events."""
    if events <= 0:
        return None
    return (bad / events) / (1.0 - objective)


def windows_spanned(duration_s: float, window_s: float, time_scale: float) -> int:
    """Whole windows a rule window covers once scaled: 1 h x 1/30 over 2 s windows -> 60."""
    return max(1, math.ceil(duration_s * time_scale / window_s - 1e-9))


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


class _Counts:
    """Per-window (events, bad) of one SLO for every series (a row each), with a running sum per
    rule span: a ring of the last `spans[-1]` windows per row, pushed for all rows at once."""

    __slots__ = ("bad", "events", "held", "pos", "spans", "sum_bad", "sum_events")

    def __init__(self, spans: Sequence[int], capacity: int) -> None:
        self.spans = tuple(sorted(set(spans)))
        self.events = np.zeros((capacity, self.spans[-1]), dtype=np.int64)
        self.bad = np.zeros((capacity, self.spans[-1]), dtype=np.int64)
        self.pos = np.zeros(capacity, dtype=np.int64)  # where the next window goes
        self.held = np.zeros(capacity, dtype=np.int64)  # windows held (at most spans[-1])
        self.sum_events = np.zeros((capacity, len(self.spans)), dtype=np.int64)
        self.sum_bad = np.zeros((capacity, len(self.spans)), dtype=np.int64)

    def grow(self, capacity: int) -> None:
        for name in self.__slots__:
            if name == "spans":
                continue
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def clear(self, row: int) -> None:
        self.events[row] = self.bad[row] = 0
        self.pos[row] = self.held[row] = 0
        self.sum_events[row] = self.sum_bad[row] = 0

    def push(self, rows: np.ndarray, events: np.ndarray, bad: np.ndarray) -> None:
        """Append one window to each row (deque(maxlen) semantics), updating the running sums."""
        size = self.spans[-1]
        pos, held = self.pos[rows], self.held[rows]
        for k, span in enumerate(self.spans):
            falling = held >= span  # the window that falls out of this span
            back = (pos - span) % size
            self.sum_events[rows, k] += events - np.where(falling, self.events[rows, back], 0)
            self.sum_bad[rows, k] += bad - np.where(falling, self.bad[rows, back], 0)
        self.events[rows, pos] = events
        self.bad[rows, pos] = bad
        self.pos[rows] = (pos + 1) % size
        self.held[rows] = np.minimum(held + 1, size)

    def history(self, row: int) -> tuple[list[int], list[int]]:
        """(events, bad) of the held windows, oldest first (the deque this used to be)."""
        size, held, pos = self.spans[-1], int(self.held[row]), int(self.pos[row])
        order = [(pos - held + k) % size for k in range(held)]
        return self.events[row, order].tolist(), self.bad[row, order].tolist()

    def restore(
        self, row: int, events: Sequence[int], bad: Sequence[int], sums: tuple[dict[int, int], dict[int, int]]
    ) -> None:
        size = self.spans[-1]
        events, bad = list(events)[-size:], list(bad)[-size:]
        self.clear(row)
        self.events[row, : len(events)] = events
        self.bad[row, : len(bad)] = bad
        self.held[row] = len(events)
        self.pos[row] = len(events) % size
        for k, span in enumerate(self.spans):
            self.sum_events[row, k] = sums[0][span]
            self.sum_bad[row, k] = sums[1][span]


@dataclass(frozen=True, slots=True)
class _Objective:
    slo: SLO
    rules: tuple[tuple[BurnRateRule, int, int], ...]  # rule, long windows, short windows
    budget: float = field(init=False, repr=False, compare=False)
    """1 - objective: the denominator of `burn_rate`, worked out once."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget", 1.0 - self.slo.objective)


class _SeriesState:
    __slots__ = ("idle_windows", "learns", "objectives", "row", "slos")

    def __init__(
        self, row: int, objectives: tuple[_Objective, ...], slos: tuple[int, ...], learns: bool
    ) -> None:
        self.row = row  # this series' row in every SLO's counts and in the latency baselines
        self.objectives = objectives
        self.slos = slos  # index of each objective's SLO in the file
        self.learns = learns  # a latency SLO with `threshold: baseline` selects it
        self.idle_windows = 0


class SLOEvaluator:
    """Feed closed windows in order; get every known series' SLO status for each.

    Args:
        slos: the SLO file; None applies `DEFAULT_SLOS` to every series.
        window_s: the window length.
        time_scale: multiplies every rule window; None takes the file's (`time_scale`, or
            window / `window_represents`: the defaults make each window stand for 5 minutes).

    Raises:
        ValueError: a window length or time scale that is not positive.
    """

    def __init__(self, slos: SLOFile | None = None, window_s: float = 60.0, time_scale: float | None = None):
        if not window_s > 0:
            raise ValueError("window_s must be positive")
        self.slo_file = slos or DEFAULT_SLOS
        self.window_s = window_s
        self.window_ns = window_ns_of(window_s)
        self.time_scale = time_scale if time_scale is not None else self.slo_file.scale_for(window_s)
        if not self.time_scale > 0:
            raise ValueError("time_scale must be positive")
        self._series: dict[Series, _SeriesState] = {}
        self._next_start_ns: int | None = None
        self._objectives = tuple(
            _Objective(
                slo,
                tuple(
                    (
                        rule,
                        windows_spanned(rule.long_s, window_s, self.time_scale),
                        windows_spanned(rule.short_s, window_s, self.time_scale),
                    )
                    for rule in self.slo_file.rules_of(slo)
                ),
            )
            for slo in self.slo_file.slos
        )
        self._max_span = max(long for o in self._objectives for _, long, _ in o.rules)
        capacity = 1024
        self._counts = [
            _Counts([n for _, long, short in o.rules for n in (long, short)], capacity)
            for o in self._objectives
        ]
        self.latency = LatencyStore(self.slo_file.baseline, capacity)
        """The learned latency thresholds (`threshold: baseline`), a row per series."""
        self._free: list[int] = []
        self._rows = 0
        # Tenants of series not seen yet, noted only when an SLO selects by tenant (slo_file.Selector).
        self._by_tenant = any(slo.select.by_tenant for slo in self.slo_file.slos)
        self._new_tenants: dict[Series, str | None] = {}
        self._sorted: list[tuple[Series, _SeriesState]] | None = None
        # Of the sorted series (rebuilt with them): their rows, which learn latency, which each
        # SLO selects (None: all).
        self._sorted_rows = np.empty(0, dtype=np.int64)
        self._learning = np.empty(0, dtype=bool)
        self._selected: list[np.ndarray | None] = []

    @property
    def series_count(self) -> int:
        return len(self._series)

    def counts_of(self, state: _SeriesState) -> list[_Counts]:
        """The counts of each of a series' objectives (its row in them: `state.row`)."""
        return [self._counts[j] for j in state.slos]

    def evaluate(
        self, window_start_ns: int, records: pd.DataFrame | Iterable[ProbeOutcome]
    ) -> list[SeriesWindow]:
        """Evaluate the window [window_start_ns, +window) holding `records`; returns one
        `SeriesWindow` per known series (sorted), those without probes included.

        Raises:
            ValueError: when the window starts before the end of the previous one.
        """
        if self._next_start_ns is not None:
            if window_start_ns < self._next_start_ns:
                raise ValueError("windows must be fed in order, without overlap")
            skipped = (window_start_ns - self._next_start_ns) // self.window_ns
            for _ in range(min(skipped, self._max_span + 1)):  # beyond that, nothing is remembered
                self._step(self._next_start_ns, _no_outcomes())
        if self._by_tenant:
            records = records if isinstance(records, pd.DataFrame) else list(records)
            self._note_tenants(records)
        return self._step(window_start_ns, _outcomes(records))

    def _note_tenants(self, records: pd.DataFrame | list[ProbeOutcome]) -> None:
        rows: Iterable[tuple[str, str, object]]
        if isinstance(records, pd.DataFrame):
            if "tenant" not in records.columns:
                return
            rows = zip(
                records["target"].tolist(),
                records["vantage"].tolist(),
                records["tenant"].tolist(),
                strict=True,
            )
        else:
            rows = ((r.target, r.vantage, getattr(r, "tenant", None)) for r in records)
        for target, vantage, tenant in rows:
            if (target, vantage) not in self._series:
                self._new_tenants[target, vantage] = tenant if isinstance(tenant, str) else None

    def forget(self, series: Series) -> None:
        """Drop a series' counts and baseline (the pipeline's eviction)."""
        state = self._series.pop(series, None)
        if state is not None:
            self._release(state)

    def _release(self, state: _SeriesState) -> None:
        for counts in self._counts:
            counts.clear(state.row)
        self.latency.clear([state.row])
        self._free.append(state.row)
        self._sorted = None

    def _step(self, start_ns: int, outcomes: _Batch) -> list[SeriesWindow]:
        end_ns = start_ns + self.window_ns
        self._next_start_ns = end_ns
        keys, totals, success = outcomes
        for series in dict.fromkeys(keys):
            if series not in self._series:
                self._series[series] = self._new_state(series)
        if self._sorted is None:
            ordered = self._sorted = sorted(self._series.items())
            self._sorted_rows = np.array([state.row for _, state in ordered], dtype=np.int64)
            self._learning = np.array([state.learns for _, state in ordered], dtype=bool)
            every = len(self._objectives)
            if all(len(state.slos) == every for _, state in ordered):
                self._selected = [None] * every
            else:
                self._selected = [self._selects(j, ordered) for j in range(every)]
        ordered = self._sorted
        series_rows = self._sorted_rows
        size = len(self._counts[0].pos) if self._counts else 0
        # Per record: its series' row, whether it failed, whether it has a usable duration.
        record_rows = np.array([self._series[key].row for key in keys], dtype=np.int64)
        failed = ~success
        finite = np.isfinite(totals)
        probes = np.bincount(record_rows, minlength=size)
        fails = np.bincount(record_rows, weights=failed, minlength=size).astype(np.int64)
        learning_rows = series_rows[self._learning]
        learned_of = np.full(size, np.nan)  # NaN: no threshold (yet)
        learned_of[learning_rows] = self.latency.thresholds(learning_rows)
        learned: list[float | None] = [None if t != t else t for t in learned_of[series_rows].tolist()]
        # Per SLO: this window's (events, bad) for each series it selects, pushed to its counts.
        window_counts: list[tuple[list[int], list[int], list[float | None]]] = []
        for j, objective in enumerate(self._objectives):
            latency = objective.slo.latency
            rows = series_rows
            if latency is None:
                events, bad = probes[rows], fails[rows]
                thresholds: list[float | None] = [None] * len(rows)
            else:
                if latency.threshold_s == "baseline":
                    threshold_of = learned_of
                    thresholds = learned
                else:
                    threshold_of = np.full(size, float(latency.threshold_s))
                    thresholds = [float(latency.threshold_s)] * len(rows)
                limit = threshold_of[record_rows]
                # A success without a usable duration can be judged neither fast nor slow; no
                # threshold yet: still learning what normal is.
                judged = ~np.isnan(limit)
                counted = judged & (failed | finite)
                slow = judged & (failed | (finite & (totals > limit)))
                events = np.bincount(record_rows, weights=counted, minlength=size).astype(np.int64)[rows]
                bad = np.bincount(record_rows, weights=slow, minlength=size).astype(np.int64)[rows]
            selects = self._selected[j]
            if selects is not None:
                rows, events, bad = rows[selects], events[selects], bad[selects]
            self._counts[j].push(rows, events, bad)
            window_counts.append((events.tolist(), bad.tolist(), thresholds))
        results = self._windows(ordered, start_ns, end_ns, probes[series_rows].tolist(), window_counts)
        violating = np.array([window.violating for window in results], dtype=bool)
        healthy = success & finite
        # Each latency baseline learns its series' healthy durations of the window.
        self.latency.observe(learning_rows, violating[self._learning], record_rows[healthy], totals[healthy])
        gone = []
        for (series, state), window in zip(ordered, results, strict=True):
            state.idle_windows = 0 if window.probes else state.idle_windows + 1
            if state.idle_windows > self._max_span:
                gone.append(series)
        leaving = set(gone)
        for series in [s for s in self._series if s in leaving] if leaving else []:
            self._release(self._series.pop(series))  # gone long enough that every sum is zero again
        return results

    def _selects(self, j: int, ordered: list[tuple[Series, _SeriesState]]) -> np.ndarray | None:
        """Which of the ordered series SLO j selects (None: all of them)."""
        flags = [j in state.slos for _, state in ordered]
        return None if all(flags) else np.array(flags, dtype=bool)

    def _windows(
        self,
        ordered: list[tuple[Series, _SeriesState]],
        start_ns: int,
        end_ns: int,
        probes: list[int],
        window_counts: list[tuple[list[int], list[int], list[float | None]]],
    ) -> list[SeriesWindow]:
        """The SeriesWindow of every series: the SLO statuses from the pushed counts."""
        # Per SLO, for the series it selects: each status's rule statuses and whether one fires.
        per_slo: list[
            tuple[list[int], list[int], list[float | None], list[tuple[RuleStatus, ...]], list[bool]]
        ] = []
        all_rows = self._sorted_rows
        for j, objective in enumerate(self._objectives):
            counts = self._counts[j]
            selects = self._selected[j]
            rows = all_rows if selects is None else all_rows[selects]
            sums_e, sums_b = counts.sum_events[rows], counts.sum_bad[rows]
            columns: list[list[RuleStatus]] = []
            firing = np.zeros(len(rows), dtype=bool)
            for rule, long, short in objective.rules:
                sides = []
                for span in (long, short):
                    k = counts.spans.index(span)
                    events = sums_e[:, k]
                    with np.errstate(divide="ignore", invalid="ignore"):
                        burn = (sums_b[:, k] / events) / objective.budget
                    none = events <= 0  # no events: no burn rate (None)
                    firing_side = ~none & (burn > rule.factor)
                    values: list[float | None] = burn.tolist()
                    for i in np.flatnonzero(none).tolist():
                        values[i] = None
                    sides.append((values, firing_side))
                (long_burns, long_fires), (short_burns, short_fires) = sides
                firing |= long_fires & short_fires
                # Statuses are immutable: series with the same burn rates (most, in a quiet
                # window) share one object instead of building 10,000 alike.
                made: dict[tuple[float | None, float | None], RuleStatus] = {}
                column = []
                for burns in zip(long_burns, short_burns, strict=True):
                    found = made.get(burns)
                    if found is None:
                        found = made[burns] = RuleStatus(rule, long, short, *burns)
                    column.append(found)
                columns.append(column)
            statuses: list[tuple[RuleStatus, ...]] = (
                list(zip(*columns, strict=True)) if columns else [()] * len(rows)
            )
            events_list, bad_list, thresholds = window_counts[j]
            per_slo.append((events_list, bad_list, thresholds, statuses, firing.tolist()))
        # Per SLO, a status per series it selects; alike statuses (same counts, threshold and
        # rule statuses) are likewise shared (keyed by the rule statuses' identity).
        status_columns: list[list[SLOStatus]] = []
        for j, (events_list, bad_list, thresholds, statuses, fires) in enumerate(per_slo):
            selects = self._selected[j]
            if selects is not None:
                thresholds = [thresholds[i] for i in np.flatnonzero(selects).tolist()]
            name = self._objectives[j].slo.name
            shared: dict[tuple[object, ...], SLOStatus] = {}
            slo_column: list[SLOStatus] = []
            for events, bad, threshold, rules, fire in zip(
                events_list, bad_list, thresholds, statuses, fires, strict=True
            ):
                key = (events, bad, threshold, *map(id, rules))
                status = shared.get(key)
                if status is None:
                    status = shared[key] = SLOStatus(name, events, bad, threshold, rules, fire)
                slo_column.append(status)
            status_columns.append(slo_column)
        if all(selects is None for selects in self._selected):
            return [
                SeriesWindow(target, vantage, start_ns, end_ns, count, slos)
                for ((target, vantage), _), count, slos in zip(
                    ordered, probes, zip(*status_columns, strict=True), strict=True
                )
            ]
        results = []
        cursor = [0] * len(self._objectives)
        for i, ((target, vantage), state) in enumerate(ordered):
            slos = []
            for j in state.slos:
                slos.append(status_columns[j][cursor[j]])
                cursor[j] += 1
            results.append(SeriesWindow(target, vantage, start_ns, end_ns, probes[i], tuple(slos)))
        return results

    def _new_state(self, series: Series) -> _SeriesState:
        tenant = self._new_tenants.pop(series, None)
        chosen = tuple(j for j, o in enumerate(self._objectives) if o.slo.select.matches(*series, tenant))
        objectives = tuple(self._objectives[j] for j in chosen)
        learns = any(
            o.slo.latency is not None and o.slo.latency.threshold_s == "baseline" for o in objectives
        )
        if self._free:
            row = self._free.pop()
        else:
            row = self._rows
            self._rows += 1
            if row >= self.latency.capacity:
                for counts in self._counts:
                    counts.grow(2 * self.latency.capacity)
                self.latency.grow(2 * self.latency.capacity)
        self._sorted = None
        return _SeriesState(row, objectives, chosen, learns)


_Batch = tuple[list[Series], np.ndarray, np.ndarray]
"""One window's probes: each one's series, duration (s; NaN: none) and success."""


def _no_outcomes() -> _Batch:
    return [], np.empty(0), np.empty(0, dtype=bool)


def _outcomes(records: pd.DataFrame | Iterable[ProbeOutcome]) -> _Batch:
    if isinstance(records, pd.DataFrame):
        if records.empty:
            return _no_outcomes()
        keys = list(zip(records["target"].tolist(), records["vantage"].tolist(), strict=True))
        totals = records["total_s"].to_numpy(dtype=float, na_value=np.nan)
        return keys, np.asarray(totals, dtype=np.float64), records["success"].to_numpy(dtype=bool)
    keys, totals, flags = [], [], []
    for record in records:
        keys.append((record.target, record.vantage))
        totals.append(math.nan if record.total_s is None else float(record.total_s))
        flags.append(bool(record.success))
    return keys, np.array(totals, dtype=np.float64), np.array(flags, dtype=bool)


def evaluate_windows(
    records: pd.DataFrame,
    window_s: float = 60.0,
    slos: SLOFile | None = None,
    time_scale: float | None = None,
) -> pd.DataFrame:
    """Evaluate a whole recording offline, window by window, as the sidecar would live.

    Windows are aligned to multiples of `window_s` since the epoch and a probe belongs to the
    window its start falls in. Returns one row per series-window (see `window_rows`).
    """
    evaluator = SLOEvaluator(slos, window_s, time_scale)
    if records.empty:
        return pd.DataFrame(window_rows([], evaluator.slo_file))
    window_index = records["start_ns"].to_numpy(dtype=np.int64) // evaluator.window_ns
    order = np.argsort(window_index, kind="stable")
    records, window_index = records.iloc[order], window_index[order]
    first, last = int(window_index[0]), int(window_index[-1])
    bounds = np.searchsorted(window_index, np.arange(first, last + 2))
    rows: list[SeriesWindow] = []
    for offset in range(last - first + 1):
        chunk = records.iloc[bounds[offset] : bounds[offset + 1]]
        rows.extend(evaluator.evaluate((first + offset) * evaluator.window_ns, chunk))
    return pd.DataFrame(window_rows(rows, evaluator.slo_file))


def window_rows(windows: Sequence[SeriesWindow], slo_file: SLOFile) -> dict[str, list[Any]]:
    """Columns of series-windows: target, vantage, window_start_ns, window_end_ns, probes,
    violating, violating_slos ("a,b"), then per SLO `<slo>.events`, `<slo>.bad`,
    `<slo>.threshold_s` and per rule `<slo>.burn_long.<1h/5m>` / `<slo>.burn_short.<1h/5m>`
    (NaN where the SLO does not select the series or there were no events)."""
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "target",
            "vantage",
            "window_start_ns",
            "window_end_ns",
            "probes",
            "violating",
            "violating_slos",
        )
    }
    for slo in slo_file.slos:
        columns.update({f"{slo.name}.{field}": [] for field in ("events", "bad", "threshold_s")})
        for rule in slo_file.rules_of(slo):
            columns.update({f"{slo.name}.burn_{side}.{rule.label}": [] for side in ("long", "short")})
    nan = math.nan
    for window in windows:
        columns["target"].append(window.target)
        columns["vantage"].append(window.vantage)
        columns["window_start_ns"].append(window.window_start_ns)
        columns["window_end_ns"].append(window.window_end_ns)
        columns["probes"].append(window.probes)
        columns["violating"].append(window.violating)
        columns["violating_slos"].append(",".join(window.violating_slos))
        statuses = {status.slo: status for status in window.slos}
        for slo in slo_file.slos:
            status = statuses.get(slo.name)
            columns[f"{slo.name}.events"].append(status.events if status else nan)
            columns[f"{slo.name}.bad"].append(status.bad if status else nan)
            threshold_s = status.threshold_s if status else None
            columns[f"{slo.name}.threshold_s"].append(nan if threshold_s is None else threshold_s)
            burns = {r.rule.label: r for r in status.rules} if status else {}
            for rule in slo_file.rules_of(slo):
                found = burns.get(rule.label)
                for side in ("long", "short"):
                    value = getattr(found, f"{side}_burn") if found else None
                    columns[f"{slo.name}.burn_{side}.{rule.label}"].append(nan if value is None else value)
    return columns
