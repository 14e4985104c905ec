"""The promotion gate: a retrained candidate replaces the live model only if it is not worse.

Both models are scored on the same held-out slices, with the evaluation code of `otelprobe
evaluate` (attribution/evaluate.py and metrics.py):

- **lab**: the labeled lab evaluation campaigns (e.g. data/lab/eval-402): the headline AC@1 of
  `evaluate` (windows each model attributes, labeled with a cause) and its false attributions
  (attributed among warm healthy windows);
- **feedback**: the confirmed incidents held out by time (the newest ones): AC@1 over their warm,
  symptomatic windows (the same windows for both models) and, for incidents an operator called
  "not an incident", the share of their windows each model would attribute.

The candidate passes when, on every slice that has cases, its AC@1 is at most `tolerance.ac1`
below the live model's and its false-attribution share at most `tolerance.false_attributions`
above. The reason names each comparison, so the log says why a model was promoted or refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from otelprobe.attribution.attribute import attributed
from otelprobe.attribution.evaluate import EvaluationError, ModelAttributor, evaluate
from otelprobe.attribution.labels import HEALTHY
from otelprobe.attribution.metrics import score_cases
from otelprobe.attribution.model import AttributionModel
from otelprobe.causes import ROOT_CAUSES, SCOPES

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, slots=True)
class SliceScores:
    """One model on one slice: AC@1 over `cases`, false attributions over `healthy` windows."""

    ac1: float
    cases: int
    false_rate: float
    healthy: int
    per_class_recall: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "ac1": _round(self.ac1),
            "cases": self.cases,
            "false_attributions": _round(self.false_rate),
            "healthy_windows": self.healthy,
            "recall": {c: _round(r) for c, r in self.per_class_recall.items()},
        }


@dataclass(frozen=True, slots=True)
class Tolerance:
    ac1: float
    false_attributions: float


def _round(value: float) -> float | None:
    return None if not math.isfinite(value) else round(value, 4)


def lab_scores(
    model: AttributionModel, eval_frame: pd.DataFrame, train_frame: pd.DataFrame, window_s: float
) -> SliceScores:
    """`otelprobe evaluate`'s headline for `model` on the lab campaigns."""
    report = evaluate(model, eval_frame, train_frame, window_s=window_s)
    scores = report.attributed[report.model_name]
    recall = {c.cause: c.recall for c in scores.per_class if c.support > 0}
    return SliceScores(
        scores.ac1, scores.n_cases, report.false_attribution_rate, report.healthy_windows, recall
    )


def feedback_scores(model: AttributionModel, frame: pd.DataFrame) -> SliceScores:
    """AC@1 on confirmed windows (warm, symptomatic), false attributions on dismissed ones."""
    if frame.empty:
        return SliceScores(math.nan, 0, math.nan, 0, {})
    confirmed = np.asarray(
        frame["warm"] & frame["symptomatic"] & frame["label"].isin(list(ROOT_CAUSES)), dtype=bool
    )
    dismissed = np.asarray(frame["warm"] & (frame["label"] == HEALTHY), dtype=bool)
    ac1, recall = math.nan, {}
    if confirmed.any():
        rows = frame[confirmed]
        answer = ModelAttributor(model, "candidate").answer(rows)
        scores = score_cases(
            answer.causes,
            [str(c) for c in rows["label"]],
            true_scopes=[str(s) if s in SCOPES else "path" for s in rows["label_scope"]],
            predicted_scopes=answer.scopes,
        )
        ac1 = scores.ac1
        recall = {c.cause: c.recall for c in scores.per_class if c.support > 0}
    false_rate = math.nan
    if dismissed.any():
        false_rate = float(attributed(model, frame[dismissed]).mean())
    return SliceScores(ac1, int(confirmed.sum()), false_rate, int(dismissed.sum()), recall)


def decide(slices: dict[str, tuple[SliceScores, SliceScores]], tolerance: Tolerance) -> tuple[bool, str]:
    """(passed, reason) from (live, candidate) scores per slice; the lab slice is required."""
    if "lab" not in slices or slices["lab"][0].cases == 0:
        return False, "no lab evaluation cases: the gate cannot compare the models"
    passed, parts = True, []
    for name, (live, candidate) in slices.items():
        if live.cases and math.isfinite(live.ac1) and math.isfinite(candidate.ac1):
            ok = candidate.ac1 >= live.ac1 - tolerance.ac1 - 1e-12
            passed &= ok
            parts.append(
                f"{name} AC@1 {candidate.ac1:.3f} vs live {live.ac1:.3f} on {live.cases} cases"
                f" ({'ok' if ok else f'worse by more than {tolerance.ac1:g}'})"
            )
        if live.healthy and math.isfinite(live.false_rate) and math.isfinite(candidate.false_rate):
            ok = candidate.false_rate <= live.false_rate + tolerance.false_attributions + 1e-12
            passed &= ok
            parts.append(
                f"{name} false attributions {candidate.false_rate:.2%} vs live {live.false_rate:.2%}"
                f" of {live.healthy} healthy windows"
                f" ({'ok' if ok else f'more by over {tolerance.false_attributions:g}'})"
            )
    return passed, "; ".join(parts)


__all__ = ["EvaluationError", "SliceScores", "Tolerance", "decide", "feedback_scores", "lab_scores"]
