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
from otelprobe.attribution.slo_status import (
    RuleStatus,
    SeriesWindow,
    SLOColumn,
    SLOStatus,
    SlotVerdicts,
    WindowColumns,
)
from otelprobe.attribution.windows import window_ns_of

Series = tuple[str, str]
"""(target, vantage)."""

__all__ = [
    "RuleStatus",
    "SLOEvaluator",
    "SLOStatus",
    "SeriesWindow",
    "SlotVerdicts",
    "burn_rate",
    "evaluate_windows",
    "window_rows",
    "windows_spanned",
]


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
        self._positions: list[np.ndarray | None] = []
        self._sorted_series: list[Series] = []
        self._sorted_slos: list[tuple[int, ...]] = []

    @property
    def series_count(self) -> int:
        return len(self._series)

    def counts_of(self, state: _SeriesState) -> list[_Counts]:
        """The counts of each of a series' objectives (its row in them: `state.row`)."""
        return [self._counts[j] for j in state.slos]

    def evaluate(self, window_start_ns: int, records: pd.DataFrame | Iterable[ProbeOutcome]) -> SlotVerdicts:
        """Evaluate the window [window_start_ns, +window) holding `records`; returns one
        `SeriesWindow` per known series (sorted), those without probes included (the violating
        ones built at once, the rest when first read: `SlotVerdicts`).

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

    def _step(self, start_ns: int, outcomes: _Batch) -> SlotVerdicts:
        end_ns = start_ns + self.window_ns
        self._next_start_ns = end_ns
        keys, totals, success = outcomes
        for series in dict.fromkeys(keys):
            if series not in self._series:
                self._series[series] = self._new_state(series)
        if self._sorted is None:
            ordered = self._sorted = sorted(self._series.items())
            self._sorted_series = [series for series, _ in ordered]
            self._sorted_slos = [state.slos for _, state in ordered]
            self._sorted_rows = np.array([state.row for _, state in ordered], dtype=np.int64)
            self._learning = np.array([state.learns for _, state in ordered], dtype=bool)
            every = len(self._objectives)
            if all(len(state.slos) == every for _, state in ordered):
                self._selected = [None] * every
            else:
                self._selected = [self._selects(j, ordered) for j in range(every)]
            self._positions = [_positions(selects) for selects in self._selected]
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
        # Per SLO: this window's (events, bad) for each series it selects, pushed to its counts.
        columns = []
        for j, objective in enumerate(self._objectives):
            latency = objective.slo.latency
            if latency is None:
                events, bad = probes, fails
                threshold_of = np.full(size, np.nan)
            else:
                if latency.threshold_s == "baseline":
                    threshold_of = learned_of
                else:
                    threshold_of = np.full(size, float(latency.threshold_s))
                limit = threshold_of[record_rows]
                # A success without a usable duration can be judged neither fast nor slow; no
                # threshold yet: still learning what normal is.
                judged = ~np.isnan(limit)
                counted = judged & (failed | finite)
                slow = judged & (failed | (finite & (totals > limit)))
                events = np.bincount(record_rows, weights=counted, minlength=size).astype(np.int64)
                bad = np.bincount(record_rows, weights=slow, minlength=size).astype(np.int64)
            selects = self._selected[j]
            rows = series_rows if selects is None else series_rows[selects]
            events, bad = events[rows], bad[rows]
            self._counts[j].push(rows, events, bad)
            columns.append(self._column(j, rows, events, bad, threshold_of[rows], self._positions[j]))
        window = WindowColumns(
            start_ns, end_ns, self._sorted_series, self._sorted_slos, probes[series_rows], tuple(columns)
        )
        violating = window.violating()
        healthy = success & finite
        # Each latency baseline learns its series' healthy durations of the window.
        self.latency.observe(learning_rows, violating[self._learning], record_rows[healthy], totals[healthy])
        gone = []
        for (series, state), count in zip(ordered, window.probes.tolist(), strict=True):
            state.idle_windows = 0 if count else state.idle_windows + 1
            if state.idle_windows > self._max_span:
                gone.append(series)
        leaving = set(gone)
        for series in [s for s in self._series if s in leaving] if leaving else []:
            self._release(self._series.pop(series))  # gone long enough that every sum is zero again
        return SlotVerdicts.of(window)

    def _selects(self, j: int, ordered: list[tuple[Series, _SeriesState]]) -> np.ndarray | None:
        """Which of the ordered series SLO j selects (None: all of them)."""
        flags = [j in state.slos for _, state in ordered]
        return None if all(flags) else np.array(flags, dtype=bool)

    def _column(
        self,
        j: int,
        rows: np.ndarray,
        events: np.ndarray,
        bad: np.ndarray,
        thresholds: np.ndarray,
        position: np.ndarray | None,
    ) -> SLOColumn:
        """SLO j's burn rates and verdicts for the series at `rows` (its pushed counts)."""
        objective, counts = self._objectives[j], self._counts[j]
        sums_e, sums_b = counts.sum_events[rows], counts.sum_bad[rows]
        firing = np.zeros(len(rows), dtype=bool)
        burns: list[list[np.ndarray]] = [[], []]
        for rule, long, short in objective.rules:
            fires = np.ones(len(rows), dtype=bool)
            for side, span in enumerate((long, short)):
                k = counts.spans.index(span)
                with np.errstate(divide="ignore", invalid="ignore"):
                    # No events: no burn rate (NaN, None to readers).
                    burn = np.where(
                        sums_e[:, k] > 0, (sums_b[:, k] / sums_e[:, k]) / objective.budget, np.nan
                    )
                fires &= burn > rule.factor  # NaN compares False
                burns[side].append(burn)
            firing |= fires
        return SLOColumn(
            objective.slo.name,
            objective.rules,
            tuple(burns[0]),
            tuple(burns[1]),
            events,
            bad,
            thresholds,
            firing,
            position,
        )

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


def _positions(selects: np.ndarray | None) -> np.ndarray | None:
    """Each sorted series' index among those an SLO selects, -1 where it does not (None: all)."""
    if selects is None:
        return None
    position = np.full(len(selects), -1, dtype=np.int64)
    position[selects] = np.arange(int(selects.sum()))
    return position


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
