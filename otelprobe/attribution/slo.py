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
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from otelprobe.attribution.latency_baseline import LatencyBaseline
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
    violating: bool = field(init=False, repr=False, compare=False)
    """Any rule firing (worked out once: detection, incidents and the API all ask)."""

    def __post_init__(self) -> None:
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
        object.__setattr__(self, "violating_slos", tuple(s.slo for s in self.slos if s.violating))

    @property
    def series(self) -> Series:
        return (self.target, self.vantage)

    @property
    def violating(self) -> bool:
        return bool(self.violating_slos)


class _Counts:
    """Per-window (events, bad) of one SLO of one series, with a running sum per rule span."""

    __slots__ = ("_bad", "_events", "_spans", "_sum_bad", "_sum_events")

    def __init__(self, spans: Sequence[int]) -> None:
        self._spans = tuple(sorted(set(spans)))
        self._events: deque[int] = deque(maxlen=self._spans[-1])
        self._bad: deque[int] = deque(maxlen=self._spans[-1])
        self._sum_events = dict.fromkeys(self._spans, 0)
        self._sum_bad = dict.fromkeys(self._spans, 0)

    def push(self, events: int, bad: int) -> None:
        held = len(self._events)
        for span in self._spans:
            if held >= span:  # the window that falls out of this span
                self._sum_events[span] -= self._events[-span]
                self._sum_bad[span] -= self._bad[-span]
            self._sum_events[span] += events
            self._sum_bad[span] += bad
        self._events.append(events)
        self._bad.append(bad)

    def totals(self, span: int) -> tuple[int, int]:
        return self._sum_events[span], self._sum_bad[span]


@dataclass(frozen=True, slots=True)
class _Objective:
    slo: SLO
    rules: tuple[tuple[BurnRateRule, int, int], ...]  # rule, long windows, short windows
    budget: float = field(init=False, repr=False, compare=False)
    """1 - objective: the denominator of `burn_rate`, worked out once."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget", 1.0 - self.slo.objective)


class _SeriesState:
    __slots__ = ("baseline", "counts", "idle_windows", "objectives")

    def __init__(self, objectives: tuple[_Objective, ...], baseline: LatencyBaseline | None) -> None:
        self.objectives = objectives
        self.counts = [_Counts([n for _, long, short in o.rules for n in (long, short)]) for o in objectives]
        self.baseline = baseline
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
        self._max_span = max(
            windows_spanned(rule.long_s, window_s, self.time_scale)
            for slo in self.slo_file.slos
            for rule in self.slo_file.rules_of(slo)
        )

    @property
    def series_count(self) -> int:
        return len(self._series)

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
                self._step(self._next_start_ns, {})
        outcomes = _by_series(records)
        return self._step(window_start_ns, outcomes)

    def _step(self, start_ns: int, outcomes: dict[Series, _Outcomes]) -> list[SeriesWindow]:
        end_ns = start_ns + self.window_ns
        self._next_start_ns = end_ns
        for series in outcomes:
            if series not in self._series:
                self._series[series] = self._new_state(series)
        empty: _Outcomes = ([], [])
        results = []
        for series in sorted(self._series):
            state = self._series[series]
            totals_s, success = outcomes.get(series, empty)
            state.idle_windows = 0 if len(totals_s) else state.idle_windows + 1
            results.append(self._evaluate_series(series, state, start_ns, end_ns, totals_s, success))
        for series in [s for s, state in self._series.items() if state.idle_windows > self._max_span]:
            del self._series[series]  # gone long enough that every sum is zero again
        return results

    def _new_state(self, series: Series) -> _SeriesState:
        objectives = tuple(
            _Objective(
                slo,
                tuple(
                    (
                        rule,
                        windows_spanned(rule.long_s, self.window_s, self.time_scale),
                        windows_spanned(rule.short_s, self.window_s, self.time_scale),
                    )
                    for rule in self.slo_file.rules_of(slo)
                ),
            )
            for slo in self.slo_file.slos
            if slo.select.matches(*series)
        )
        learns = any(
            o.slo.latency is not None and o.slo.latency.threshold_s == "baseline" for o in objectives
        )
        return _SeriesState(objectives, LatencyBaseline(self.slo_file.baseline) if learns else None)

    def _evaluate_series(
        self,
        series: Series,
        state: _SeriesState,
        start_ns: int,
        end_ns: int,
        totals_s: list[float],
        success: list[bool],
    ) -> SeriesWindow:
        # Plain lists, not numpy: a series has a few probes per window, where numpy's per-call
        # overhead is most of the cost (10,000 series per slot in the sidecar).
        failed = len(success) - sum(success)
        learned_s = state.baseline.threshold_s() if state.baseline is not None else None
        statuses = []
        for objective, counts in zip(state.objectives, state.counts, strict=True):
            latency = objective.slo.latency
            threshold_s: float | None = None
            if latency is None:
                events, bad = len(success), failed
            else:
                threshold_s = learned_s if latency.threshold_s == "baseline" else float(latency.threshold_s)
                if threshold_s is None:
                    events, bad = 0, 0  # still learning what normal is
                else:
                    # A success without a usable duration can be judged neither fast nor slow.
                    events = bad = 0
                    for total_s, ok in zip(totals_s, success, strict=True):
                        if not ok:
                            events += 1
                            bad += 1
                        elif math.isfinite(total_s):
                            events += 1
                            bad += total_s > threshold_s
            counts.push(events, bad)
            # burn_rate over the running sums, inline (the same arithmetic): it runs for every
            # rule of every SLO of every series, each window.
            sum_events, sum_bad, budget = counts._sum_events, counts._sum_bad, objective.budget
            rules = []
            for rule, long, short in objective.rules:
                long_events, short_events = sum_events[long], sum_events[short]
                rules.append(
                    RuleStatus(
                        rule,
                        long,
                        short,
                        (sum_bad[long] / long_events) / budget if long_events > 0 else None,
                        (sum_bad[short] / short_events) / budget if short_events > 0 else None,
                    )
                )
            statuses.append(SLOStatus(objective.slo.name, events, bad, threshold_s, tuple(rules)))
        window = SeriesWindow(series[0], series[1], start_ns, end_ns, len(totals_s), tuple(statuses))
        if state.baseline is not None:
            healthy = [t for t, ok in zip(totals_s, success, strict=True) if ok and math.isfinite(t)]
            state.baseline.observe(healthy, window.violating)
        return window


_Outcomes = tuple[list[float], list[bool]]
"""(durations_s, success) of one series' probes in one window."""


def _by_series(records: pd.DataFrame | Iterable[ProbeOutcome]) -> dict[Series, _Outcomes]:
    """(durations_s, success) lists per series."""
    collected: dict[Series, _Outcomes] = {}
    if isinstance(records, pd.DataFrame):
        # Plain lists: a pandas groupby costs ~10 ms per window.
        totals = records["total_s"].to_numpy(dtype=float, na_value=np.nan).tolist()
        successes = records["success"].to_numpy(dtype=bool).tolist()
        keys = zip(records["target"].tolist(), records["vantage"].tolist(), strict=True)
        for key, total_s, ok in zip(keys, totals, successes, strict=True):
            durations, flags = collected.setdefault(key, ([], []))
            durations.append(total_s)
            flags.append(ok)
        return collected
    for record in records:
        durations, flags = collected.setdefault((record.target, record.vantage), ([], []))
        durations.append(math.nan if record.total_s is None else float(record.total_s))
        flags.append(bool(record.success))
    return collected


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
