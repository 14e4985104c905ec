"""Operator feedback on an incident: the confirmed cause and scope, or "not an incident".

The write side of learning (DESIGN §5's vocabulary, otelprobe/causes.py). `parse_feedback` checks a
request body strictly — unknown keys, an unknown cause or scope, a missing author are errors that
name the field — and `record_feedback` stores the verdict with a copy of the incident's window
rows (state_store.py) in one transaction: an unknown incident or a second verdict for the same
incident is refused and nothing changes. Retraining (retrain.py) reads the verdicts back as labels.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from otelprobe.attribution.attribute import iso
from otelprobe.causes import ROOT_CAUSES, SCOPES
from otelprobe.sidecar.state_store import FeedbackExists, StateStore

CONFIRMED: Final = "confirmed"
NOT_AN_INCIDENT: Final = "not_an_incident"
MAX_TEXT: Final = 256
MAX_NOTE: Final = 2000
KEYS: Final = frozenset({"cause", "scope", "not_an_incident", "by", "note", "series", "start", "end"})


class FeedbackError(ValueError):
    """A verdict that cannot be recorded: `status` is the HTTP status it answers."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.field = field


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: Literal["confirmed", "not_an_incident"]
    cause: str | None
    scope: str | None
    by: str
    note: str | None
    series: tuple[tuple[str, str], ...] | None  # only these member series; None: all of them
    start_ns: int | None = None  # only windows overlapping [start, end), when the operator knows
    end_ns: int | None = None


def _text(body: Mapping[str, Any], key: str, limit: int, *, required: bool) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise FeedbackError(400, f"{key} is required", key)
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise FeedbackError(400, f"{key} must be a non-empty string of at most {limit} characters", key)
    return value.strip()


def parse_feedback(body: object) -> Verdict:
    """A verdict from a JSON request body.

    `{"cause": "packet_loss", "scope": "vantage", "by": "alice", "note": "...", "series": [...]}` or
    `{"not_an_incident": true, "by": "alice"}`; `series` (optional) limits a confirmation to some
    member series, as `[{"target": ..., "vantage": ...}]`; `start` / `end` (RFC 3339, optional)
    limit it to the windows overlapping the time the cause was on.

    Raises:
        FeedbackError: 400 naming the field at fault.
    """
    if not isinstance(body, Mapping):
        raise FeedbackError(400, "the body must be a JSON object")
    unknown = sorted(set(body) - KEYS)
    if unknown:
        raise FeedbackError(
            400, f"unknown field {unknown[0]!r} (accepted: {', '.join(sorted(KEYS))})", unknown[0]
        )
    by = _text(body, "by", MAX_TEXT, required=True)
    assert by is not None
    note = _text(body, "note", MAX_NOTE, required=False)
    dismissed = body.get("not_an_incident", False)
    if not isinstance(dismissed, bool):
        raise FeedbackError(400, "not_an_incident must be true or false", "not_an_incident")
    if dismissed:
        for key in ("cause", "scope", "series"):
            if body.get(key) is not None:
                raise FeedbackError(400, f"{key} cannot go with not_an_incident", key)
        return Verdict(NOT_AN_INCIDENT, None, None, by, note, None)
    cause, scope = body.get("cause"), body.get("scope")
    if cause is None:
        raise FeedbackError(400, "give cause and scope, or not_an_incident: true", "cause")
    if cause not in ROOT_CAUSES:
        raise FeedbackError(
            400, f"unknown cause {str(cause)[:60]!r} (one of {', '.join(ROOT_CAUSES)})", "cause"
        )
    if scope not in SCOPES:
        raise FeedbackError(
            400, f"scope must be one of {', '.join(SCOPES)}, got {str(scope)[:60]!r}", "scope"
        )
    start_ns, end_ns = _instant(body, "start"), _instant(body, "end")
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise FeedbackError(400, "end must be after start", "end")
    return Verdict(CONFIRMED, str(cause), str(scope), by, note, _series(body.get("series")), start_ns, end_ns)


def _instant(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    stamp = _ns(value) if isinstance(value, str) and len(value) <= 64 else None
    if stamp is None:
        raise FeedbackError(400, f"{key} must be an RFC 3339 time such as 2026-12-06T05:02:45Z", key)
    return stamp


def _series(value: object) -> tuple[tuple[str, str], ...] | None:
    if value is None:
        return None
    bad = FeedbackError(400, "series must be a non-empty list of {target, vantage} objects", "series")
    if not isinstance(value, list) or not value or len(value) > 10_000:
        raise bad
    found = []
    for item in value:
        if not isinstance(item, Mapping) or set(item) != {"target", "vantage"}:
            raise bad
        target, vantage = item["target"], item["vantage"]
        if not (isinstance(target, str) and isinstance(vantage, str) and target and vantage):
            raise bad
        found.append((target, vantage))
    return tuple(dict.fromkeys(found))


def record_feedback(
    store: StateStore,
    incident_id: str,
    verdict: Verdict,
    incident: Mapping[str, Any] | None,
    *,
    clock: Any = time.time,
) -> dict[str, Any]:
    """Store `verdict` for the incident (its API JSON when the sidecar still shows it, else None).

    Raises:
        FeedbackError: 404 unknown incident, 409 a verdict exists, 422 series not in the incident.
    """
    if incident is None and not store.incident_known(incident_id):
        raise FeedbackError(404, f"no incident {incident_id[:64]!r} is known to this sidecar")
    members: Sequence[Mapping[str, Any]] = incident["series"] if incident else ()
    if verdict.series is not None and incident is not None:
        known = {(str(m["target"]), str(m["vantage"])) for m in members}
        missing = [s for s in verdict.series if s not in known]
        if missing:
            raise FeedbackError(
                422, f"series {missing[0][0]} from {missing[0][1]} is not a member of the incident", "series"
            )
    if store.feedback_of(incident_id) is not None:
        raise FeedbackError(409, f"incident {incident_id} already has feedback; it is recorded once")
    now_ns = int(clock() * 1e9)
    record: dict[str, Any] = {
        "incident": incident_id,
        "verdict": verdict.verdict,
        "cause": verdict.cause,
        "scope": verdict.scope,
        "not_an_incident": verdict.verdict == NOT_AN_INCIDENT,
        "by": verdict.by,
        "note": verdict.note,
        "series": None
        if verdict.series is None
        else [{"target": t, "vantage": v} for t, v in verdict.series],
        "start": None if verdict.start_ns is None else iso(verdict.start_ns),
        "end": None if verdict.end_ns is None else iso(verdict.end_ns),
        "start_unix_nano": verdict.start_ns,
        "end_unix_nano": verdict.end_ns,
        "at": iso(now_ns),
        "at_unix_nano": now_ns,
        # When it started orders verdicts for the gate's time split.
        "incident_start_unix_nano": incident["start_unix_nano"]
        if incident
        else store.incident_start_ns(incident_id),
    }
    ranges = [
        (str(m["target"]), str(m["vantage"]), _ns(m.get("start")), _ns(m.get("end")))
        for m in members
        if verdict.series is None or (str(m["target"]), str(m["vantage"])) in verdict.series
    ]
    try:
        windows = store.add_feedback(
            incident_id,
            record,
            [(t, v, s - 1_000_000, e) for t, v, s, e in ranges if s is not None],  # ms-rounded starts
        )
    except FeedbackExists:
        raise FeedbackError(
            409, f"incident {incident_id} already has feedback; it is recorded once"
        ) from None
    record["windows"] = windows
    return record


def _ns(stamp: object) -> int | None:
    """RFC 3339 (as view.py writes it) to ns since the epoch; None when absent."""
    if not isinstance(stamp, str):
        return None
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # a time without a zone is ambiguous
    return round(moment.timestamp() * 1e9)
