"""Incidents: a scenario's timeline with every random part drawn, as the runner injects and labels it.

`resolve(scenario)` turns the entries of a validated scenario (lab/scenario.py) into `Incident`s,
drawing ranges, omitted targets and vantages, and a ramp's steps under the scenario's seed;
lab/dataset/runner.py plays them and writes `incident_json` into the labels file, and lab/dataset/generator.py
uses `affected_pairs` to plan campaigns.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from otelprobe.causes import RootCause, Scope
from otelprobe.lab.faults import Fault, parse_fault
from otelprobe.lab.scenario import MAGNITUDE_KEYS, Band, Scenario, TimelineEntry, fault_fits


@dataclass(frozen=True, slots=True)
class Incident:
    """One resolved fault of the timeline: what, where, when (seconds after recording starts)."""

    id: int
    fault: Fault
    cause: RootCause
    scope: Scope
    vantage: str | None
    target: str | None
    start_s: float
    duration_s: float
    magnitude: float | None
    pairs: frozenset[tuple[str, str]]
    """Every (target, vantage) whose probes the fault reaches."""
    steps: tuple[tuple[float, Fault], ...] = ()
    """A ramp: (seconds after the start, the fault from then on); the last one is `fault`."""
    band: Band | None = None

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


def affected_pairs(
    scenario: Scenario, fault: Fault, scope: Scope, vantage: str | None, target: str | None
) -> frozenset[tuple[str, str]]:
    """The (target, vantage) pairs a fault of `scope` reaches."""
    fitting = [t.name for t in scenario.targets if fault_fits(fault, t)]
    if scope == "vantage":
        return frozenset((t, str(vantage)) for t in fitting)
    if scope == "target":
        return frozenset((str(target), v) for v in scenario.vantage_names)
    return frozenset({(str(target), str(vantage))})


def _draw(value: float | Sequence[float], rng: random.Random) -> float:
    if isinstance(value, int | float):
        return float(value)
    low, high = sorted(float(v) for v in value)
    if low > 0:  # intensities span orders of magnitude: draw evenly on a log scale
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    return rng.uniform(low, high)


def _magnitude_value(fault: Fault) -> float | None:
    key = MAGNITUDE_KEYS[fault.kind]
    if key is None:
        return None
    field = next(n for n, info in type(fault).model_fields.items() if key in (n, info.alias))
    return float(getattr(fault, field))


def _draw_fault(entry: TimelineEntry, rng: random.Random) -> Fault:
    if not isinstance(entry.magnitude, list):
        return entry.fault
    key = str(MAGNITUDE_KEYS[entry.fault.kind])
    data = entry.fault.model_dump(by_alias=True)
    ends = [_magnitude_value(parse_fault({**data, key: end})) or 0.0 for end in entry.magnitude]
    drawn: float | int = _draw(ends, rng)
    if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
        drawn = max(1, round(drawn))
    return parse_fault({**data, key: drawn})


def resolve(scenario: Scenario, seed: int | None = None) -> list[Incident]:
    """Draw every random part of the timeline (under `seed`, default the scenario's) into incidents.

    Draws happen entry by entry in file order, so the same file and seed give the same incidents.
    """
    rng = random.Random(scenario.seed if seed is None else seed)
    incidents = []
    for index, entry in enumerate(scenario.timeline):
        fault = _draw_fault(entry, rng)
        scope = entry.effective_scope
        target, vantage = entry.target, entry.vantage
        if scope in ("target", "path") and target is None:
            target = rng.choice([t.name for t in scenario.targets if fault_fits(fault, t)])
        if scope in ("vantage", "path") and vantage is None:
            vantage = rng.choice(scenario.vantage_names)
        start = _draw(entry.start, rng)
        duration = _draw(entry.duration, rng)
        steps = _ramp_steps(entry, fault, duration) if entry.ramp is not None else ()
        incidents.append(
            Incident(
                id=index,
                fault=fault,
                cause=entry.cause or fault.root_cause,
                scope=scope,
                vantage=vantage if scope != "target" else None,
                target=target if scope != "vantage" else None,
                start_s=round(start, 3),
                duration_s=round(duration, 3),
                magnitude=_magnitude_value(fault),
                pairs=affected_pairs(scenario, fault, scope, vantage, target),
                steps=steps,
                band=entry.band,
            )
        )
    return incidents


def _ramp_steps(entry: TimelineEntry, peak: Fault, duration_s: float) -> tuple[tuple[float, Fault], ...]:
    """The faults of a ramp, one per equal part of `duration_s`, from `ramp.from` to `peak`."""
    assert entry.ramp is not None
    key = str(MAGNITUDE_KEYS[peak.kind])
    data = peak.model_dump(by_alias=True)
    first = _magnitude_value(parse_fault({**data, key: entry.ramp.start})) or 0.0
    last = _magnitude_value(peak) or 0.0
    count = entry.ramp.steps
    steps = []
    for k in range(count):
        share = k / (count - 1)
        if first > 0 and last > 0:
            value: float | int = first * (last / first) ** share
        else:
            value = first + (last - first) * share
        if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
            value = max(1, round(value))
        else:
            value = round(value, 6)
        fault = peak if k == count - 1 else parse_fault({**data, key: value})
        steps.append((round(duration_s * k / count, 3), fault))
    return tuple(steps)


def total_duration_s(scenario: Scenario, incidents: Sequence[Incident]) -> float:
    """How long the recording runs: `duration`, or the last fault's end plus `tail`."""
    if scenario.duration_s is not None:
        return scenario.duration_s
    return max((i.end_s for i in incidents), default=0.0) + scenario.tail_s


def incident_json(incident: Incident) -> dict[str, Any]:
    """The fields of a labels-file line that come from the scenario (times are added by the runner)."""
    return {
        "incident": incident.id,
        "cause": incident.cause,
        "scope": incident.scope,
        "fault": incident.fault.kind,
        "params": incident.fault.model_dump(mode="json", by_alias=True, exclude={"kind"}),
        "magnitude": incident.magnitude,
        "band": incident.band,
        "ramp": [{"after_s": at, "magnitude": _magnitude_value(f)} for at, f in incident.steps] or None,
        "vantage": incident.vantage,
        "target": incident.target,
        "affected": sorted([t, v] for t, v in incident.pairs),
    }
