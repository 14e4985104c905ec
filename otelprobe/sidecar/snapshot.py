"""The learning state of the live pipeline as JSON, and back: baselines, burn-rate history, incidents.

What state_store.py writes after each closed slot so that a restarted sidecar carries on where it
stopped instead of warming up again: the FeatureEngine's per-series baselines and recent symptoms,
the SLOEvaluator's per-series event counts and learned latency baselines, and the IncidentTracker's
open incidents (same ids after a restart). These classes live in attribution/ and keep their state
in plain containers; this module reads and rebuilds those containers (JSON, never pickle), so it
depends on their field names — tests/sidecar/test_sidecar_snapshot.py round-trips each of them.
Burn-rate counts are restored only for SLOs whose rules are unchanged; a changed SLO file starts
its counts afresh.
"""

from __future__ import annotations

from collections import deque
from dataclasses import fields
from typing import Any, Final

import numpy as np

from otelprobe.attribution.baseline import SeriesBaseline
from otelprobe.attribution.features import FeatureEngine
from otelprobe.attribution.incidents import Incident, IncidentTracker, _Group, _snapshot
from otelprobe.attribution.incidents import _SeriesState as _IncidentSeries
from otelprobe.attribution.slo import SLOEvaluator

FORMAT: Final = 1
JSONData = Any


def encode(value: object) -> JSONData:
    """Containers as tagged JSON: deques keep their maxlen, sets and tuples their type."""
    if isinstance(value, deque):
        return {"deque": [encode(v) for v in value], "maxlen": value.maxlen}
    if isinstance(value, frozenset | set):
        return {"set": sorted(encode(v) for v in value)}
    if isinstance(value, tuple):
        return {"tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, np.ndarray):
        return {"array": value.tolist()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode(data: JSONData) -> Any:
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    if "deque" in data:
        return deque((decode(v) for v in data["deque"]), maxlen=data["maxlen"])
    if "set" in data:
        return frozenset(decode(v) for v in data["set"])
    if "tuple" in data:
        return tuple(decode(v) for v in data["tuple"])
    if "dict" in data:
        return {decode(k): decode(v) for k, v in data["dict"]}
    if "array" in data:
        return np.asarray(data["array"], dtype=np.float64)
    raise ValueError(f"unknown snapshot value {sorted(data)}")


# --- FeatureEngine ------------------------------------------------------------------------------

_BASELINE_FIELDS: Final = tuple(f.name for f in fields(SeriesBaseline) if not f.name.startswith("_"))


def dump_engine(engine: FeatureEngine) -> JSONData:
    baselines = [
        [encode(series), {name: encode(getattr(state, name)) for name in _BASELINE_FIELDS}]
        for series, state in engine.baselines.items()
    ]
    return {"baselines": baselines, "recent": encode(engine.recent), "evicted": engine.evicted_series}


def load_engine(engine: FeatureEngine, data: JSONData) -> None:
    loaded = [
        (
            decode(series),
            SeriesBaseline(**{name: decode(state[name]) for name in _BASELINE_FIELDS if name in state}),
        )
        for series, state in data["baselines"]
    ]
    engine.baselines.clear()
    for series, state in loaded:  # the arrays take the per-series shape this file has always had
        engine.baselines.put(series, state)
    engine.recent = decode(data["recent"])
    engine.evicted_series = int(data.get("evicted", 0))


# --- SLOEvaluator -------------------------------------------------------------------------------


def _objective_key(evaluator: SLOEvaluator, state: Any) -> list[JSONData]:
    return [[o.slo.name, [[r.label, long, short] for r, long, short in o.rules]] for o in state.objectives]


def dump_evaluator(evaluator: SLOEvaluator) -> JSONData:
    series = []
    for key, state in evaluator._series.items():
        counts = []
        for held in evaluator.counts_of(state):
            events, bad = held.history(state.row)
            size = held.spans[-1]
            sums = [
                (span, int(held.sum_events[state.row, k]), int(held.sum_bad[state.row, k]))
                for k, span in enumerate(held.spans)
            ]
            # The shape of the per-series deques these counts were before they became arrays.
            counts.append(
                {
                    "events": encode(deque(events, maxlen=size)),
                    "bad": encode(deque(bad, maxlen=size)),
                    "sum_events": encode({span: total for span, total, _ in sums}),
                    "sum_bad": encode({span: total for span, _, total in sums}),
                }
            )
        latency = None
        if state.learns:
            # LatencyBaseline's shape: only the learned part of the ring, pending windows as lists.
            ring, next_at, count, pending = evaluator.latency.export(state.row)
            latency = {
                "ring": encode(np.asarray(ring, dtype=np.float64)),
                "next": next_at,
                "count": count,
                "pending": encode(deque(pending)),
            }
        series.append(
            {
                "series": encode(key),
                "objectives": _objective_key(evaluator, state),
                "counts": counts,
                "latency": latency,
                "idle_windows": state.idle_windows,
            }
        )
    return {"window_ns": evaluator.window_ns, "next_start_ns": evaluator._next_start_ns, "series": series}


def load_evaluator(evaluator: SLOEvaluator, data: JSONData) -> int:
    """Restore what still applies; returns how many series got their counts back."""
    if int(data["window_ns"]) != evaluator.window_ns:
        return 0  # another window length: the history counts other windows
    evaluator._next_start_ns = data["next_start_ns"]
    restored = 0
    for entry in data["series"]:
        key = decode(entry["series"])
        evaluator.forget(key)
        state = evaluator._new_state(key)
        state.idle_windows = int(entry["idle_windows"])
        if _objective_key(evaluator, state) == entry["objectives"]:
            for held, saved in zip(evaluator.counts_of(state), entry["counts"], strict=True):
                held.restore(
                    state.row,
                    decode(saved["events"]),
                    decode(saved["bad"]),
                    (decode(saved["sum_events"]), decode(saved["sum_bad"])),
                )
            restored += 1
        latency = entry.get("latency")
        if state.learns and latency is not None:
            ring = decode(latency["ring"])
            count = int(latency["count"])
            if len(ring) == count <= evaluator.latency.settings.samples:
                pending = [list(w) for w in decode(latency["pending"])]
                evaluator.latency.restore(state.row, ring, int(latency["next"]), pending)
        evaluator._series[key] = state
    return restored


# --- IncidentTracker ----------------------------------------------------------------------------


def _member(state: _IncidentSeries) -> JSONData:
    return {
        "id": state.id,
        "series": list(state.series),
        "start_ns": state.start_ns,
        "last_violation_end_ns": state.last_violation_end_ns,
        "violating_windows": state.violating_windows,
        "quiet_windows": state.quiet_windows,
        "slos": sorted(state.slos),
        "closed": state.closed,
    }


def dump_tracker(tracker: IncidentTracker) -> JSONData:
    groups = [
        {"id": g.id, "start_ns": g.start_ns, "members": [_member(m) for m in g.members]}
        for g in tracker._groups.values()
    ]
    return {"groups": groups}


def load_tracker(tracker: IncidentTracker, data: JSONData) -> None:
    tracker._groups.clear()
    tracker._open.clear()
    tracker._group_of.clear()
    for saved in data["groups"]:
        members = [
            _IncidentSeries(
                id=m["id"],
                series=(str(m["series"][0]), str(m["series"][1])),
                start_ns=int(m["start_ns"]),
                last_violation_end_ns=int(m["last_violation_end_ns"]),
                violating_windows=int(m["violating_windows"]),
                quiet_windows=int(m["quiet_windows"]),
                slos=set(m["slos"]),
                closed=bool(m["closed"]),
            )
            for m in saved["members"]
        ]
        group = _Group(str(saved["id"]), int(saved["start_ns"]), members)
        tracker._groups[group.id] = group
        for member in members:
            if not member.closed:
                tracker._open[member.series] = member
                tracker._group_of[member.series] = group.id


def open_incidents(tracker: IncidentTracker) -> tuple[Incident, ...]:
    """The tracker's open incidents as it reports them after a window (for a restored view)."""
    groups = sorted(tracker._groups.values(), key=lambda g: (g.start_ns, g.id))
    return tuple(_snapshot(group, frozenset(), closed=False) for group in groups)
