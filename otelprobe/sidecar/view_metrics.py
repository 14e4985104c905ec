"""The sidecar's own metrics in the Prometheus text exposition format (0.0.4), from view data.

Read by the API's /metrics (api.py) through `SidecarView.prometheus_text`; it renders the JSON a
view already gives (health, per-series SLO status, open incidents), so any view implementation
can reuse it. The API adds the input counters of an `Intake` (what the receiver refused, what
ingest and the record reader dropped, by reason: `render_intake`, and `intake_json` for
/healthz). prometheus_client is not a dependency: the format is a few lines of text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from otelprobe.sidecar.receiver import ReceiverStats

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
PREFIX: Final = "otelprobe_sidecar_"


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _name(text: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in text)


class _Page:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, object], float]]
    ) -> None:
        full = PREFIX + name
        help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            pairs = ",".join(f'{key}="{_escape(v)}"' for key, v in labels.items())
            self.lines.append(f"{full}{{{pairs}}} {_number(value)}" if pairs else f"{full} {_number(value)}")


def render_metrics(
    health: Mapping[str, Any],
    statuses: Sequence[Mapping[str, Any]],
    open_incidents: Sequence[Mapping[str, Any]],
) -> bytes:
    """The page: health gauges and counters, open incidents by top cause and scope, and per series
    and SLO the burn rate of every rule window, the error budget left and whether it violates."""
    page = _Page()
    model = health.get("model") or {}
    page.family(
        "info",
        "gauge",
        "The sidecar's version and model.",
        [({"version": health.get("version", ""), "model": model.get("version") or ""}, 1)],
    )
    page.family(
        "windows_closed_total",
        "counter",
        "Windows closed and evaluated.",
        [({}, int(health["windows_closed"]))],
    )
    page.family("series", "gauge", "Series (target, vantage) held.", [({}, int(health["series"]))])
    page.family(
        "warm_series", "gauge", "Series whose baseline has warmed up.", [({}, int(health["warm_series"]))]
    )
    page.family(
        "queue_depth", "gauge", "Requests waiting to be processed.", [({}, int(health["queue_depth"]))]
    )
    page.family(
        "attributions_total", "counter", "Attribution records made.", [({}, int(health["attributions"]))]
    )
    for counter, value in sorted((health.get("counters") or {}).items()):
        page.family(
            f"{_name(counter)}_total", "counter", f"Count of {counter.replace('_', ' ')}.", [({}, int(value))]
        )
    by_cause: dict[tuple[str, str], int] = {}
    for incident in open_incidents:
        causes = incident.get("causes") or []
        key = (str(causes[0]["cause"]), str(causes[0]["scope"])) if causes else ("unattributed", "")
        by_cause[key] = by_cause.get(key, 0) + 1
    page.family("open_incidents", "gauge", "Open incidents.", [({}, len(open_incidents))])
    page.family(
        "open_violations",
        "gauge",
        "Open incidents by their top-ranked cause and its scope.",
        [({"cause": c, "scope": s}, n) for (c, s), n in sorted(by_cause.items())],
    )
    burns: list[tuple[Mapping[str, object], float]] = []
    budgets: list[tuple[Mapping[str, object], float]] = []
    violating: list[tuple[Mapping[str, object], float]] = []
    for status in statuses:
        for slo in status["slos"]:
            series = {"slo": slo["slo"], "target": status["target"], "vantage": status["vantage"]}
            violating.append((series, 1 if slo["violating"] else 0))
            if slo["error_budget_remaining"] is not None:
                budgets.append((series, float(slo["error_budget_remaining"])))
            for rule in slo["burn_rates"]:
                for window in ("long", "short"):
                    value = rule[f"{window}_burn"]
                    if value is not None:
                        burns.append(({**series, "rule": rule["rule"], "window": window}, float(value)))
    page.family("slo_burn_rate", "gauge", "Error budget burn rate per SLO rule window.", burns)
    page.family(
        "slo_error_budget_remaining", "gauge", "Error budget left over the longest rule window.", budgets
    )
    page.family("slo_violating", "gauge", "1 while the SLO's burn-rate alert fires.", violating)
    return ("\n".join(page.lines) + "\n").encode()


# --- the input counters ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Intake:
    """The live counters of the sidecar's input, read at every scrape (never copied).

    Args:
        receiver: the OTLP receiver's stats (what it refused, and the spans it rejected).
        stages: later stages by name, each a stats dataclass whose every int field is exposed
            (the service: `{"ingest": Ingest.stats, "reader": Ingest.reader}`), so a counter
            added to one appears on /metrics and /healthz without another edit.
    """

    receiver: ReceiverStats
    stages: Mapping[str, DataclassInstance]


REFUSED_REASONS: Final = ("malformed", "too_large", "unauthenticated", "retry_later")
"""Why the receiver refused a whole request (always listed, zero or not)."""
_MEANINGS: Final[Mapping[str, str]] = {
    # receiver
    "malformed": "the body does not decode, or no span in it has valid IDs (HTTP 400, gRPC INVALID_ARGUMENT)",
    "too_large": "over receiver.max_body after decompression (HTTP 413, gRPC RESOURCE_EXHAUSTED)",
    "unauthenticated": "missing or wrong bearer token (HTTP 401, gRPC UNAUTHENTICATED)",
    "retry_later": "queue full, the sender told to retry (HTTP 503, gRPC UNAVAILABLE)",
    "invalid_ids": "trace or span ID of the wrong size: dropped, the rest of the request accepted",
    "queue_full": "queue full and when_full=reject: every span of the request rejected",
    # Ingest.stats
    "duplicate_traces": "traces already recorded sent again (a Collector's retry), dropped",
    "duplicate_spans": "spans seen before, dropped",
    "malformed_requests": "requests with a span of ill-sized IDs, dropped (the receiver removes those first)",
    "late_phases": "phase spans after their root, joined (the record rebuilt)",
    "late_phases_after_close": "phase spans after their record's window closed, dropped",
    "joins_evicted": "recorded traces whose spans were let go before their window closed",
    # ReaderStats
    "bad_lines": "unreadable lines of a recording, skipped",
    "bad_spans": "spans of probe traces with root times beyond int64 ns (or unreadable), dropped",
    "other_lines": "metric and log lines of a recording, skipped",
    "foreign_spans": "spans of traces whose root is not a probe root (e.g. slo.violation), not recorded",
    "orphan_traces": "traces whose root span never arrived (evicted by count or age), dropped",
    "orphan_spans": "spans of such orphan traces",
    "late_spans": "spans after their trace was recorded, or a second root, dropped",
    "absurd_values": "durations < 0 or > 1 h, numbers NaN, infinite or negative: NaN in the record, kept",
    "long_values": "text values over the length limit: cut, the record kept",
}
_ALIASES: Final[Mapping[str, str]] = {"problem_count": "problems"}
_TOTALS_HELP: Final[Mapping[str, str]] = {
    "requests": "Requests read",
    "spans": "Spans read",
    "records": "Probe records made",
    "lines": "Lines read",
    "problems": "Problems logged",
}


def _int_fields(stats: DataclassInstance) -> Iterator[tuple[str, int]]:
    for spec in fields(stats):
        value = getattr(stats, spec.name)
        if isinstance(value, int) and not isinstance(value, bool):
            yield _ALIASES.get(spec.name, spec.name), value


def _refused(receiver: ReceiverStats) -> dict[str, int]:
    counts = dict.fromkeys(REFUSED_REASONS, 0)
    counts.update(receiver.rejected)
    counts["unauthenticated"] = receiver.unauthenticated
    counts["retry_later"] = receiver.retry_answers
    return counts


def _spans_rejected(receiver: ReceiverStats) -> dict[str, int]:
    return {"invalid_ids": receiver.invalid_spans, "queue_full": receiver.dropped_spans}


def intake_json(intake: Intake) -> dict[str, Any]:
    """For /healthz: what the receiver refused and rejected, and every counter of each stage."""
    return {
        "receiver": {
            "requests_refused": _refused(intake.receiver),
            "spans_rejected": _spans_rejected(intake.receiver),
        },
        **{stage: dict(_int_fields(stats)) for stage, stats in intake.stages.items()},
    }


def _by_reason(page: _Page, name: str, what: str, counts: Mapping[str, int]) -> None:
    meanings = "; ".join(f"{reason}: {_MEANINGS.get(reason, reason.replace('_', ' '))}" for reason in counts)
    page.family(
        name, "counter", f"{what}, by reason. {meanings}.", [({"reason": r}, n) for r, n in counts.items()]
    )


def render_intake(intake: Intake) -> bytes:
    """The input counters as Prometheus text: the receiver's `otlp_requests_refused_total{reason}`
    and `otlp_spans_rejected_total{reason}`; per stage, `<stage>_anomalies_total{reason}` with
    one series per counter field (its name the reason) and `<stage>_<field>_total` per plain
    total (a field without an underscore: `requests`, `spans`, ...)."""
    page = _Page()
    _by_reason(
        page,
        "otlp_requests_refused_total",
        "OTLP requests the receiver refused whole",
        _refused(intake.receiver),
    )
    _by_reason(
        page,
        "otlp_spans_rejected_total",
        "Spans the receiver rejected, reported to the sender in OTLP partial_success",
        _spans_rejected(intake.receiver),
    )
    for stage, stats in intake.stages.items():
        counts = dict(_int_fields(stats))
        anomalies = {name: value for name, value in counts.items() if "_" in name}
        _by_reason(
            page,
            f"{_name(stage)}_anomalies_total",
            f"Input the {stage} stage dropped, repaired or flagged (reasons count different things)",
            anomalies,
        )
        for name, value in counts.items():
            if name not in anomalies:
                what = _TOTALS_HELP.get(name, name.capitalize())
                page.family(
                    f"{_name(stage)}_{_name(name)}_total", "counter", f"{what} ({stage}).", [({}, value)]
                )
    return ("\n".join(page.lines) + "\n").encode()
