"""What the sidecar's HTTP API and terminal view read: the `SidecarView` seam and an in-memory store.

Between the per-window pipeline (SLO verdicts, incidents, attributions) and its readers (api.py,
watch.py). The service core implements `SidecarView` (or feeds a `MemoryView`, which is the
recent-results store it can reuse); the API only ever calls the five read methods, so it can be
tested against a `MemoryView` fed by hand. Every record is plain JSON data (DESIGN §6 for
attributions); every collection is bounded: the oldest attributions, closed incidents and idle
series are forgotten first.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, TypeVar

from otelprobe import __version__
from otelprobe.attribution.attribute import iso
from otelprobe.attribution.incidents import Incident, WindowIncidents
from otelprobe.attribution.slo import SeriesWindow, SLOStatus
from otelprobe.attribution.slo_file import SLOFile
from otelprobe.causes import ROOT_CAUSES, SCOPES
from otelprobe.sidecar.latency import LatencyRecorder
from otelprobe.sidecar.view_metrics import render_metrics

IncidentStatus = Literal["open", "recent", "all"]
INCIDENT_STATUSES: Final[tuple[IncidentStatus, ...]] = ("open", "recent", "all")
JSON = dict[str, Any]
Series = tuple[str, str]
_V = TypeVar("_V")
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
HEALTH_STATUSES: Final = ("starting", "warming_up", "ok", "degraded")
COUNTERS: Final = (
    "received_spans",
    "received_requests",
    "records",
    "late",
    "duplicate",
    "evicted",
    "rejected",
)
"""The counters /healthz always carries (a core may add more)."""


class SidecarView(Protocol):
    """The read side of a running sidecar (the API's only dependency). All results are JSON data."""

    def incidents(
        self,
        status: IncidentStatus = "all",
        target: str | None = None,
        vantage: str | None = None,
        cause: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[JSON]:
        """Incidents, newest first: `open`, `recent` (closed lately) or `all`; `target` / `vantage`
        match any member series, `cause` the top-ranked cause."""
        ...

    def attributions(
        self,
        target: str | None = None,
        vantage: str | None = None,
        since_ns: int | None = None,
        limit: int = DEFAULT_LIMIT,
        incident: str | None = None,
    ) -> list[JSON]:
        """DESIGN §6 records, newest first; `since_ns` keeps windows starting at or after it."""
        ...

    def objectives(self) -> list[JSON]:
        """The SLO definitions in force: name, kind, objective, threshold, selectors, rules."""
        ...

    def slos(
        self, target: str | None = None, vantage: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[JSON]:
        """Per series, after its last closed window: each SLO's burn rates per rule, whether it
        violates, and the error budget left over the longest rule window."""
        ...

    def health(self) -> JSON:
        """Status, model, windows closed, series, warm-up progress, queue depth, counters."""
        ...

    def prometheus_text(self) -> bytes:
        """The sidecar's own metrics in the Prometheus text exposition format 0.0.4."""
        ...


class HasJSON(Protocol):
    """An attribution as the pipeline hands it out (attribute.Attribution or a live wrapper)."""

    def to_json(self) -> Mapping[str, Any]: ...


# --- JSON shapes ---------------------------------------------------------------------------------


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def objective_json(slo_file: SLOFile) -> list[JSON]:
    found = []
    for slo in slo_file.slos:
        latency = slo.latency
        found.append(
            {
                "slo": slo.name,
                "kind": "availability" if latency is None else "latency",
                "objective": slo.objective,
                "threshold": None if latency is None else latency.threshold_s,
                "targets": list(slo.select.targets),
                "vantages": list(slo.select.vantages),
                "rules": [
                    {"rule": r.label, "long_s": r.long_s, "short_s": r.short_s, "factor": r.factor}
                    for r in slo_file.rules_of(slo)
                ],
            }
        )
    return found


def slo_status_json(status: SLOStatus, objective: float | None) -> JSON:
    rules = []
    for rule in status.rules:
        rules.append(
            {
                "rule": rule.rule.label,
                "factor": rule.rule.factor,
                "long_windows": rule.long_windows,
                "short_windows": rule.short_windows,
                "long_burn": _finite(rule.long_burn),
                "short_burn": _finite(rule.short_burn),
                "firing": rule.firing,
            }
        )
    # Budget left over the longest rule window: 1 - its burn rate (negative = overspent).
    longest = max(status.rules, key=lambda r: r.long_windows, default=None)
    budget = None if longest is None or longest.long_burn is None else 1.0 - longest.long_burn
    return {
        "slo": status.slo,
        "objective": objective,
        "violating": status.violating,
        "events": status.events,
        "bad": status.bad,
        "threshold_s": _finite(status.threshold_s),
        "error_budget_remaining": _finite(budget),
        "burn_rates": rules,
    }


def series_window_json(window: SeriesWindow, objectives: Mapping[str, float]) -> JSON:
    return {
        "target": window.target,
        "vantage": window.vantage,
        "window_start": iso(window.window_start_ns),
        "window_end": iso(window.window_end_ns),
        "window_start_unix_nano": window.window_start_ns,
        "probes": window.probes,
        "violating": window.violating,
        "slos": [slo_status_json(s, objectives.get(s.slo)) for s in window.slos],
    }


def rank_causes(latest: Sequence[Mapping[str, Any]]) -> list[JSON]:
    """An incident's causes from the latest attribution of each of its series: the mean score
    (so the scores still sum to 1), the scope with the most score behind it, and the evidence of
    the series where the cause scored highest."""
    if not latest:
        return []
    totals: dict[str, float] = dict.fromkeys(ROOT_CAUSES, 0.0)
    scope_weight: dict[str, dict[str, float]] = {c: dict.fromkeys(SCOPES, 0.0) for c in ROOT_CAUSES}
    best: dict[str, tuple[float, list[Any]]] = {}
    for record in latest:
        for entry in record.get("causes", ()):
            cause, score = str(entry["cause"]), float(entry["score"])
            totals[cause] = totals.get(cause, 0.0) + score
            scopes = scope_weight.setdefault(cause, dict.fromkeys(SCOPES, 0.0))
            scopes[str(entry["scope"])] = scopes.get(str(entry["scope"]), 0.0) + score
            if entry.get("evidence") and score > best.get(cause, (-1.0, []))[0]:
                best[cause] = (score, list(entry["evidence"]))
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [
        {
            "cause": cause,
            "scope": max(sorted(scope_weight[cause].items()), key=lambda s: s[1])[0],
            "score": round(total / len(latest), 6),
            "evidence": best.get(cause, (0.0, []))[1],
        }
        for cause, total in ranked
    ]


# --- the in-memory store -------------------------------------------------------------------------


@dataclass(slots=True)
class HealthState:
    """What the core reports about itself; `MemoryView.health()` renders it."""

    model_path: str | None = None
    model_version: str | None = None
    """The model's label (training name @ data digest)."""
    model_registry_version: str | None = None
    """Its version in the sidecar's model registry (None without one)."""
    window_s: float | None = None
    windows_closed: int = 0
    series: int = 0
    warm_series: int = 0
    queue_depth: int = 0
    queue_capacity: int = 0
    degraded: str | None = None
    """Why the sidecar is degraded (e.g. the model failed to load), or None."""
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    attribution_latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    """Window close -> record out, per attribution record (the service observes it)."""


@dataclass(slots=True)
class _Closed:
    incident: Incident
    causes: list[JSON]
    attributions: int
    models: list[JSON]


def _models_of(latest: Sequence[Mapping[str, Any]]) -> list[JSON]:
    """The models (label and registry version) that made an incident's latest attributions."""
    found: dict[tuple[str, str | None], None] = {}
    for record in latest:
        version = record.get("model_version")
        found[(str(record.get("model", "")), None if version is None else str(version))] = None
    return [{"model": label, "version": version} for label, version in found]


class MemoryView:
    """A bounded in-memory `SidecarView`: feed it each closed window, read it from the API.

    Args:
        slo_file: the SLO definitions in force (for `objectives()` and each status' objective).
        max_attributions: attribution records kept (oldest dropped first).
        max_recent_incidents: closed incidents kept.
        max_series: series whose SLO status and latest attribution are kept (least recently
            updated dropped first).
        clock: wall seconds (uptime).
    """

    def __init__(
        self,
        slo_file: SLOFile | None = None,
        *,
        max_attributions: int = 10_000,
        max_recent_incidents: int = 1_000,
        max_series: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.health_state = HealthState()
        self._clock = clock
        self._started_s = float(clock())
        self._objectives: list[JSON] = []
        self._objective_of: dict[str, float] = {}
        if slo_file is not None:
            self.set_slo_file(slo_file)
        self._attributions: deque[JSON] = deque(maxlen=max(1, max_attributions))
        self._latest: OrderedDict[Series, JSON] = OrderedDict()
        self._open: dict[str, Incident] = {}
        self._closed: deque[_Closed] = deque(maxlen=max(1, max_recent_incidents))
        self._counts: dict[str, int] = {}
        self._status: OrderedDict[Series, SeriesWindow] = OrderedDict()
        self._max_series = max(1, max_series)
        self.attributions_total = 0
        self.feedback: dict[str, JSON] = {}
        """Operators' verdicts by incident id (learning.py keeps it current)."""
        self.model_events: dict[str, int] = {}
        """Model changes by outcome (promoted, refused, rolled_back, imported, failed)."""

    def set_slo_file(self, slo_file: SLOFile) -> None:
        self._objectives = objective_json(slo_file)
        self._objective_of = {o["slo"]: o["objective"] for o in self._objectives}

    # --- writing ------------------------------------------------------------------------------

    def observe_window(
        self,
        incidents: WindowIncidents | None,
        verdicts: Iterable[SeriesWindow] = (),
        attributions: Iterable[HasJSON | Mapping[str, Any]] = (),
    ) -> None:
        """Everything one closed window produced, in the pipeline's order."""
        self.add_verdicts(verdicts)
        if incidents is not None:
            self.update_incidents(incidents)
        self.add_attributions(attributions)
        self.health_state.windows_closed += 1

    def add_verdicts(self, verdicts: Iterable[SeriesWindow]) -> None:
        # Kept as they are, turned into JSON when asked for: every series gets a verdict every
        # window, and most are never read before the next one replaces them.
        for window in verdicts:
            self._put(self._status, window.series, window)

    def update_incidents(self, window: WindowIncidents) -> None:
        """The tracker's answer for one window: the open incidents now, those that just closed."""
        for incident in window.closed:
            self._open.pop(incident.id, None)
            latest = self._latest_of(incident)
            causes = rank_causes(latest)
            self._closed.append(
                _Closed(incident, causes, self._counts.pop(incident.id, 0), _models_of(latest))
            )
        self._open = {incident.id: incident for incident in window.open}
        for stale in set(self._counts) - set(self._open):
            del self._counts[stale]

    def add_attributions(self, attributions: Iterable[HasJSON | Mapping[str, Any]]) -> None:
        """Attribution records; one without an incident id gets the open incident of its series."""
        for found in attributions:
            record = dict(found if isinstance(found, Mapping) else found.to_json())
            series = (str(record["target"]), str(record["vantage"]))
            if not record.get("incident"):
                record["incident"] = self._open_incident_of(series)
            if record["incident"]:
                self._counts[record["incident"]] = self._counts.get(record["incident"], 0) + 1
            self._attributions.append(record)
            self._put(self._latest, series, record)
            self.attributions_total += 1

    def _put(self, table: OrderedDict[Series, _V], series: Series, value: _V) -> None:
        table[series] = value
        table.move_to_end(series)
        while len(table) > self._max_series:
            table.popitem(last=False)

    def _open_incident_of(self, series: Series) -> str | None:
        for incident in self._open.values():
            if any((m.target, m.vantage) == series and not m.closed for m in incident.series):
                return incident.id
        return None

    def _latest_of(self, incident: Incident) -> list[JSON]:
        found = []
        for member in incident.series:
            record = self._latest.get((member.target, member.vantage))
            if record is not None and int(record.get("window_start_unix_nano", 0)) >= member.start_ns:
                found.append(record)
        return found

    # --- reading (SidecarView) ----------------------------------------------------------------

    def incidents(
        self,
        status: IncidentStatus = "all",
        target: str | None = None,
        vantage: str | None = None,
        cause: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[JSON]:
        rows: list[JSON] = []
        if status in ("open", "all"):
            for incident in self._open.values():
                latest = self._latest_of(incident)
                row = incident_json(incident, rank_causes(latest), self._counts.get(incident.id, 0))
                row["models"] = _models_of(latest)
                rows.append(row)
        if status in ("recent", "all"):
            rows.extend(
                {**incident_json(c.incident, c.causes, c.attributions), "models": c.models}
                for c in self._closed
            )
        for row in rows:
            row["feedback"] = self.feedback.get(row["id"])
        rows = [
            row
            for row in rows
            if (target is None or target in row["targets"])
            and (vantage is None or vantage in row["vantages"])
            and (cause is None or (row["causes"] and row["causes"][0]["cause"] == cause))
        ]
        rows.sort(key=lambda row: (row["start_unix_nano"], row["id"]), reverse=True)
        return rows[: max(0, limit)]

    def attributions(
        self,
        target: str | None = None,
        vantage: str | None = None,
        since_ns: int | None = None,
        limit: int = DEFAULT_LIMIT,
        incident: str | None = None,
    ) -> list[JSON]:
        rows: list[JSON] = []
        for record in reversed(self._attributions):
            if len(rows) >= limit:
                break
            if (
                (target is None or record["target"] == target)
                and (vantage is None or record["vantage"] == vantage)
                and (since_ns is None or int(record.get("window_start_unix_nano", 0)) >= since_ns)
                and (incident is None or record.get("incident") == incident)
            ):
                rows.append(record)
        return rows

    def objectives(self) -> list[JSON]:
        return list(self._objectives)

    def slos(
        self, target: str | None = None, vantage: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[JSON]:
        rows: list[JSON] = []
        for (t, v), window in reversed(self._status.items()):
            if len(rows) >= limit:
                break
            if (target is None or t == target) and (vantage is None or v == vantage):
                rows.append(series_window_json(window, self._objective_of))
        rows.sort(key=lambda row: (row["target"], row["vantage"]))
        return rows

    def health(self) -> JSON:
        state = self.health_state
        warmup = state.warm_series / state.series if state.series else 0.0
        if state.degraded:
            status = "degraded"
        elif state.windows_closed == 0:
            status = "starting"
        elif warmup < 1.0:
            status = "warming_up"
        else:
            status = "ok"
        return {
            "status": status,
            "reason": state.degraded,
            "version": __version__,
            "uptime_s": round(max(0.0, float(self._clock()) - self._started_s), 3),
            "model": {
                "path": state.model_path,
                "version": state.model_version,
                "registry_version": state.model_registry_version,
            },
            "window_s": state.window_s,
            "windows_closed": state.windows_closed,
            "series": state.series,
            "warm_series": state.warm_series,
            "warmup": round(warmup, 4),
            "queue_depth": state.queue_depth,
            "queue_capacity": state.queue_capacity,
            "open_incidents": len(self._open),
            "attributions": self.attributions_total,
            "counters": dict(state.counters),
            "attribution_latency": state.attribution_latency.summary(),
        }

    def prometheus_text(self) -> bytes:
        text = render_metrics(
            self.health(), self.slos(limit=self._max_series), self.incidents("open", limit=MAX_LIMIT)
        )
        text += ("\n".join(self.health_state.attribution_latency.prometheus_lines()) + "\n").encode()
        if not self.model_events and self.health_state.model_registry_version is None:
            return text
        lines = [
            "# HELP otelprobe_sidecar_model_changes_total Model registry events by outcome.",
            "# TYPE otelprobe_sidecar_model_changes_total counter",
            *(
                f'otelprobe_sidecar_model_changes_total{{outcome="{outcome}"}} {count}'
                for outcome, count in sorted(self.model_events.items())
            ),
            "# HELP otelprobe_sidecar_feedback Incidents with an operator's verdict.",
            "# TYPE otelprobe_sidecar_feedback gauge",
            f"otelprobe_sidecar_feedback {len(self.feedback)}",
        ]
        return text + ("\n".join(lines) + "\n").encode()


def incident_json(incident: Incident, causes: list[JSON], attributions: int) -> JSON:
    return {
        "id": incident.id,
        "status": "open" if incident.open else "closed",
        "start": iso(incident.start_ns),
        "start_unix_nano": incident.start_ns,
        "end": None if incident.end_ns is None else iso(incident.end_ns),
        "end_unix_nano": incident.end_ns,
        "targets": sorted(incident.targets),
        "vantages": sorted(incident.vantages),
        "slos": sorted({slo for member in incident.series for slo in member.slos}),
        "series": [
            {
                "target": m.target,
                "vantage": m.vantage,
                "start": iso(m.start_ns),
                "end": None if m.end_ns is None else iso(m.end_ns),
                "closed": m.closed,
                "violating_windows": m.violating_windows,
                "violating_now": (m.target, m.vantage) in incident.violating,
                "slos": sorted(m.slos),
            }
            for m in incident.series
        ],
        "attributions": attributions,
        "causes": causes,
    }
