"""An `EvaluationReport` for people and programs: markdown, JSON and the model's confusion PNG.

The output half of `otelprobe evaluate` (issue 8): evaluate.py measures, report.py formats the
score tables, this module lays the whole report out and writes report.md, report.json and
confusion.png.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Final

from otelprobe.attribution.evaluate import EvaluationReport
from otelprobe.attribution.metrics import AttributionDelays, to_json
from otelprobe.attribution.report import confusion_markdown, save_confusion_png, scores_markdown

REPORT_MD: Final = "report.md"
REPORT_JSON: Final = "report.json"
CONFUSION_PNG: Final = "confusion.png"
_MISSING: Final = "—"


def summary_markdown(report: EvaluationReport) -> str:
    """The headline: model vs baselines on the attributed windows, and the goals."""
    lines = [
        f"Attributed windows with a cause label: {report.windows['attributed_labeled']:,}"
        f" (windows of {report.window_s:g} s; model `{report.model_name}`)",
        "",
        scores_markdown(report.attributed),
        _goals(report),
    ]
    return "\n".join(lines)


def report_markdown(report: EvaluationReport) -> str:
    """The full report (the CLI writes it to report.md)."""
    w = report.windows
    inputs = report.inputs
    lines = ["# Attribution evaluation", ""]
    for key in ("evaluated", "train", "labels"):
        if inputs.get(key):
            lines.append(f"- {key}: " + ", ".join(f"`{p}`" for p in inputs[key]))
    lines += [
        f"- model: `{report.model_name}`; windows of {report.window_s:g} s",
        f"- {w['series_windows']:,} series-windows ({w['warm']:,} with a warm baseline);"
        f" {w['candidates']:,} candidates (warm, SLO violating, symptomatic), {w['attributed']:,}"
        f" attributed: {w['attributed_labeled']:,} labeled with a cause,"
        f" {w['attributed_ambiguous']:,} ambiguous, {report.false_attributions:,} healthy",
        "",
        "## Attributed windows (headline)",
        "",
        "Windows the attributor is asked about (warm, an SLO violating, a symptom, the model's gate"
        " judging it a fault), labeled with a cause. Compound windows count for AC@k when any of"
        " their causes ranks within k.",
        "",
        scores_markdown(report.attributed),
        _scope_table(report),
        "## Goals (model)",
        "",
        _goals(report),
        "## Incidents and timing",
        "",
        _timing(report),
        "## False attributions",
        "",
        f"Attributed among warm healthy series-windows: {report.false_attributions:,} of"
        f" {report.healthy_windows:,} ({_percent(report.false_attribution_rate)}); before the gate"
        f" {w['healthy_candidates']:,}. The same for every attributor: the baselines answer the"
        " windows the model's detection and gate chose.",
        "",
        "## Per class (attributed windows): recall / precision",
        "",
        _per_class(report),
        "## All symptomatic labeled windows",
        "",
        f"Every warm window with a symptom and a cause label ({w['symptomatic_labeled']:,}),"
        " whether or not an SLO fired.",
        "",
        scores_markdown(report.symptomatic),
        "## Confusion matrix (model, attributed windows)",
        "",
        f"![confusion matrix]({CONFUSION_PNG})",
        "",
        confusion_markdown(
            report.attributed[report.model_name].confusion,
            report.attributed[report.model_name].classes,
        ),
        "## Static thresholds (tuned on the training windows)",
        "",
        ", ".join(f"{phase} {limit:.1f} ms" for phase, limit in report.static_thresholds_ms.items()),
        "",
    ]
    return "\n".join(lines)


def report_json(report: EvaluationReport) -> dict[str, Any]:
    """Everything measured, JSON-serialisable (NaN as null)."""
    timing = report.timing
    return {
        "model": report.model_name,
        "window_s": report.window_s,
        "inputs": dict(report.inputs),
        "windows": dict(report.windows),
        "attributed": {name: to_json(scores) for name, scores in report.attributed.items()},
        "symptomatic": {name: to_json(scores) for name, scores in report.symptomatic.items()},
        "false_attributions": {
            "healthy_windows": report.healthy_windows,
            "attributed": report.false_attributions,
            "rate": _finite(report.false_attribution_rate),
        },
        "timing": None
        if timing is None
        else {
            "incidents": timing.incidents,
            "attributed": timing.attributed,
            "per_incident": to_json(timing.per_incident),
            "per_series": to_json(timing.per_series),
            "first_correct": {name: to_json(d) for name, d in timing.first_correct.items()},
        },
        "goals": [
            {"goal": g.name, "target": g.target, "value": _finite(g.value), "met": g.passed}
            for g in report.goals
        ],
        "static_thresholds_ms": {k: _finite(v) for k, v in report.static_thresholds_ms.items()},
    }


def save_report(report: EvaluationReport, out_dir: Path | str) -> tuple[Path, Path, Path]:
    """Write report.md, report.json and confusion.png into `out_dir` (created if missing)."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    markdown_path, json_path, png_path = (directory / n for n in (REPORT_MD, REPORT_JSON, CONFUSION_PNG))
    markdown_path.write_text(report_markdown(report), encoding="utf-8")
    json_path.write_text(json.dumps(report_json(report), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    model = report.attributed[report.model_name]
    save_confusion_png(
        model.confusion, model.classes, png_path, title=f"{report.model_name}: attributed windows"
    )
    return markdown_path, json_path, png_path


def _goals(report: EvaluationReport) -> str:
    lines = ["| goal | target | measured | met |", "|---|---|---:|---|"]
    for goal in report.goals:
        met = _MISSING if goal.passed is None else ("yes" if goal.passed else "**no**")
        value = _number(goal.value, signed="above" in goal.name)
        lines.append(f"| {goal.name} | {goal.target} | {value} | {met} |")
    return "\n".join(lines) + "\n"


def _scope_table(report: EvaluationReport) -> str:
    lines = ["| attributor | cause+scope AC@1 | AC@3 | Avg@5 |", "|---|---:|---:|---:|"]
    for name, scores in report.attributed.items():
        cells = (scores.scope_ac1, scores.scope_ac3, scores.scope_avg5)
        lines.append(f"| {name} | " + " | ".join(_number(v) for v in cells) + " |")
    return "\n".join(lines) + "\n"


def _per_class(report: EvaluationReport) -> str:
    names = list(report.attributed)
    model = report.attributed[report.model_name]
    lines = [
        "| cause | cases | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for cause in model.classes:
        cells = []
        for name in names:
            scores = report.attributed[name].class_scores(cause)
            cells.append(f"{_number(scores.recall)} / {_number(scores.precision)}")
        lines.append(f"| {cause} | {model.class_scores(cause).support} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _timing(report: EvaluationReport) -> str:
    timing = report.timing
    if timing is None:
        return "No labels.jsonl incidents were given: no incident timing.\n"
    share = _percent(_ratio(timing.attributed, timing.incidents))
    lines = [
        "Labeled incidents attributed (one window of an affected series, overlapping the fault):"
        f" {timing.attributed} of {timing.incidents} ({share}).",
        "",
        "| from fault start to | pairs | attributed | median | p90 | within one window of detection |",
        "|---|---:|---:|---:|---:|---:|",
        _delay_row("first attribution, per incident", timing.per_incident),
        _delay_row("first attribution, per (incident, series)", timing.per_series),
    ]
    for name, delays in timing.first_correct.items():
        lines.append(_delay_row(f"first correct top-1 of {name}, per (incident, series)", delays))
    return "\n".join(lines) + "\n"


def _delay_row(what: str, delays: AttributionDelays) -> str:
    return (
        f"| {what} | {delays.n_incidents} | {delays.n_attributed} | {_seconds(delays.median_delay_s)}"
        f" | {_seconds(delays.p90_delay_s)} | {_number(delays.within_one_window)} |"
    )


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _number(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return _MISSING
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _percent(value: float) -> str:
    return _MISSING if math.isnan(value) else f"{100 * value:.2f} %"


def _seconds(value: float) -> str:
    return _MISSING if math.isnan(value) else f"{value:.1f} s"
