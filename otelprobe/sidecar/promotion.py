"""The promotion gate: a retrained candidate replaces the live model only if it is not worse.

Both models are scored on the same held-out slices, with the evaluation code of `otelprobe
evaluate` (attribution/evaluate.py and metrics.py):

- **lab**: the labeled lab evaluation campaigns (e.g. data/lab/eval-402): the headline AC@1 of
  `evaluate` (windows each model attributes, labeled with a cause) and its false attributions
  (attributed among warm healthy windows);
- **feedback**: the confirmed incidents held out by time (the newest ones): AC@1 over their warm,
  symptomatic windows (the same windows for both models) and, for incidents an operator called
  "not an incident", the share of their windows each model would attribute;
- **unseen_incidents**: the confirmed incidents the candidate trained on, each scored by a model
  fit without it (the candidate's data minus one fold of incidents, same parameters): with a
  handful of confirmed incidents the time split may hold out only ones both models already get
  right, and this is where a gain on incidents the feedback did not include shows.

The candidate passes when, on every slice that has cases, its AC@1 is at most `tolerance.ac1`
below the live model's and its false-attribution share at most `tolerance.false_attributions`
above. The reason names each comparison, so the log says why a model was promoted or refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from otelprobe.attribution.attribute import attributed
from otelprobe.attribution.evaluate import EvaluationError, ModelAttributor, evaluate
from otelprobe.attribution.labels import HEALTHY
from otelprobe.attribution.metrics import score_cases
from otelprobe.attribution.model import AttributionModel
from otelprobe.causes import ROOT_CAUSES, SCOPES


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


def _confirmed(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(
        frame["warm"] & frame["symptomatic"] & frame["label"].isin(list(ROOT_CAUSES)), dtype=bool
    )


def _ranked(
    causes: np.ndarray, scopes: np.ndarray, rows: pd.DataFrame
) -> tuple[float, int, dict[str, float]]:
    """(AC@1, cases, recall per cause) of answers to `rows` (confirmed windows)."""
    scores = score_cases(
        causes,
        [str(c) for c in rows["label"]],
        true_scopes=[str(s) if s in SCOPES else "path" for s in rows["label_scope"]],
        predicted_scopes=scopes,
    )
    return scores.ac1, len(rows), {c.cause: c.recall for c in scores.per_class if c.support > 0}


def out_of_fold_scores(
    live: AttributionModel, folds: list[tuple[AttributionModel, pd.DataFrame]]
) -> tuple[SliceScores, SliceScores]:
    """(live, candidate) AC@1 on the confirmed windows the candidate trained on, each fold's
    windows answered by a model fit without that fold's incidents: how the feedback generalises to
    incidents it has not seen, where the time split may hold out only ones both models get right."""
    rows = [fold[_confirmed(fold)] for _, fold in folds]
    answers = [
        ModelAttributor(model, "fold").answer(part) for (model, _), part in zip(folds, rows, strict=True)
    ]
    every = pd.concat(rows, ignore_index=True)
    if every.empty:
        nothing = SliceScores(math.nan, 0, math.nan, 0, {})
        return nothing, nothing
    held = _ranked(np.vstack([a.causes for a in answers]), np.vstack([a.scopes for a in answers]), every)
    live_answer = ModelAttributor(live, "live").answer(every)
    before = _ranked(live_answer.causes, live_answer.scopes, every)
    return (
        SliceScores(before[0], before[1], math.nan, 0, before[2]),
        SliceScores(held[0], held[1], math.nan, 0, held[2]),
    )


def feedback_scores(model: AttributionModel, frame: pd.DataFrame) -> SliceScores:
    """AC@1 on confirmed windows (warm, symptomatic), false attributions on dismissed ones."""
    if frame.empty:
        return SliceScores(math.nan, 0, math.nan, 0, {})
    confirmed = _confirmed(frame)
    dismissed = np.asarray(frame["warm"] & (frame["label"] == HEALTHY), dtype=bool)
    ac1, recall = math.nan, dict[str, float]()
    if confirmed.any():
        rows = frame[confirmed]
        answer = ModelAttributor(model, "candidate").answer(rows)
        ac1, _, recall = _ranked(answer.causes, answer.scopes, rows)
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
            # One window never decides a slice: on the few held-out windows of the newest confirmed
            # incident (6 in the shipped scenario) a single flip is 17 points, noise not evidence.
            allowed = max(tolerance.ac1, 1.0 / live.cases)
            ok = candidate.ac1 >= live.ac1 - allowed - 1e-12
            passed &= ok
            parts.append(
                f"{name} AC@1 {candidate.ac1:.3f} vs live {live.ac1:.3f} on {live.cases} cases"
                f" ({'ok' if ok else f'worse by more than {tolerance.ac1:g} and one case'})"
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
