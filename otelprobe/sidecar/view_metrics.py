"""The sidecar's own metrics in the Prometheus text exposition format (0.0.4), from view data.

Read by the API's /metrics (api.py) through `SidecarView.prometheus_text`; it renders the JSON a
view already gives (health, per-series SLO status, open incidents), so any view implementation
can reuse it. prometheus_client is not a dependency: the format is a few lines of text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

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
