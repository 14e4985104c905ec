"""What the sidecar knows now: open incidents with their latest ranked causes, recent closed ones,
recent attributions and the latest burn rates — the state the API, the metrics and the store read.

Fed one SlotResult at a time by the service (after pipeline.py). Everything is bounded: closed
incidents and attributions are kept in fixed-size deques, burn rates only for series with a
non-zero burn, at most `max_burn_series` of them (the highest first).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Final

from otelprobe.attribution.attribute import iso
from otelprobe.attribution.incidents import Incident
from otelprobe.attribution.slo_file import format_duration
from otelprobe.sidecar.pipeline import LiveAttribution, SlotResult

UNATTRIBUTED: Final = "unattributed"
"""The cause of an open incident none of whose windows could be attributed yet (baseline cold,
or no symptom in the window)."""


@dataclass(slots=True)
class IncidentEntry:
    """One incident as people read it: when, which series, and what the model says now."""

    id: str
    start_ns: int
    end_ns: int | None = None
    series: list[tuple[str, str]] = field(default_factory=list)
    slos: list[str] = field(default_factory=list)
    attributions: int = 0
    latest: dict[str, Any] | None = None  # the latest §6 record attributed to it

    @property
    def open(self) -> bool:
        return self.end_ns is None

    @property
    def top_cause(self) -> tuple[str, str, float]:
        if not self.latest or not self.latest.get("causes"):
            return UNATTRIBUTED, UNATTRIBUTED, 0.0
        top = self.latest["causes"][0]
        return str(top["cause"]), str(top["scope"]), float(top["score"])

    def to_json(self) -> dict[str, Any]:
        cause, scope, score = self.top_cause
        return {
            "id": self.id,
            "state": "open" if self.open else "closed",
            "start": iso(self.start_ns),
            "end": iso(self.end_ns) if self.end_ns is not None else None,
            "start_unix_nano": self.start_ns,
            "end_unix_nano": self.end_ns,
            "series": [{"target": t, "vantage": v} for t, v in self.series],
            "slos": list(self.slos),
            "cause": cause,
            "scope": scope,
            "score": round(score, 6),
            "attributions": self.attributions,
            "latest": self.latest,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IncidentEntry:
        return cls(
            id=str(data["id"]),
            start_ns=int(data["start_unix_nano"]),
            end_ns=None if data.get("end_unix_nano") is None else int(data["end_unix_nano"]),
            series=[(str(s["target"]), str(s["vantage"])) for s in data.get("series", [])],
            slos=[str(s) for s in data.get("slos", [])],
            attributions=int(data.get("attributions", 0)),
            latest=data.get("latest"),
        )


@dataclass(frozen=True, slots=True)
class BurnRate:
    slo: str
    window: str  # the rule window, "1h" / "5m"
    target: str
    vantage: str
    value: float


class IncidentBook:
    """Open and recent incidents, recent attributions, latest burn rates."""

    def __init__(self, *, max_recent: int = 500, max_burn_series: int = 200) -> None:
        self.open: dict[str, IncidentEntry] = {}
        self.closed: deque[IncidentEntry] = deque(maxlen=max_recent)
        self.attributions: deque[dict[str, Any]] = deque(maxlen=max_recent)
        self.burn_rates: list[BurnRate] = []
        self.max_burn_series = max_burn_series
        self.last_window_end_ns: int | None = None

    def apply(self, result: SlotResult) -> list[IncidentEntry]:
        """Take one slot's outcome; returns the incidents that closed in it."""
        self.last_window_end_ns = result.end_ns
        for incident in result.incidents.open:
            entry = self.open.get(incident.id)
            if entry is None:
                entry = self.open[incident.id] = IncidentEntry(incident.id, incident.start_ns)
            _refresh(entry, incident)
        closed = []
        for incident in result.incidents.closed:
            entry = self.open.pop(incident.id, None) or IncidentEntry(incident.id, incident.start_ns)
            _refresh(entry, incident)
            entry.end_ns = incident.end_ns
            self.closed.append(entry)
            closed.append(entry)
        for live in result.attributions:
            self._attributed(live)
        self.burn_rates = _burn_rates(result, self.max_burn_series)
        return closed

    def _attributed(self, live: LiveAttribution) -> None:
        record = live.to_json()
        self.attributions.append(record)
        entry = self.open.get(live.incident_id) if live.incident_id else None
        if entry is not None:
            entry.attributions += 1
            entry.latest = record

    def open_by_cause(self) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        for entry in self.open.values():
            cause, scope, _ = entry.top_cause
            counts[(cause, scope)] += 1
        return counts

    def incidents(self) -> list[IncidentEntry]:
        """Open incidents (oldest first), then recently closed ones (newest first)."""
        opened = sorted(self.open.values(), key=lambda e: (e.start_ns, e.id))
        return [*opened, *reversed(self.closed)]


def _refresh(entry: IncidentEntry, incident: Incident) -> None:
    entry.series = sorted({(s.target, s.vantage) for s in incident.series})
    entry.slos = sorted({slo for s in incident.series for slo in s.slos})


def _burn_rates(result: SlotResult, limit: int) -> list[BurnRate]:
    rates = []
    for verdict in result.verdicts:
        for status in verdict.slos:
            for rule in status.rules:
                sides = (
                    (format_duration(rule.rule.long_s), rule.long_burn),
                    (format_duration(rule.rule.short_s), rule.short_burn),
                )
                for label, value in sides:
                    if value is not None and value > 0:
                        rates.append(BurnRate(status.slo, label, verdict.target, verdict.vantage, value))
    rates.sort(key=lambda r: -r.value)
    return rates[:limit]
