"""How much the operator-confirmed windows count in a retrain: they correct the lab data, they
do not replace it.

Three rules, applied in order to the confirmed windows that teach (warm and symptomatic: the
windows `train_model` learns from; the others are left at the base weight, they teach nothing):

1. each window starts at `feedback_weight` (a confirmed window against a lab window);
2. **per incident** (`per_incident`): every confirmed incident of a label carries the same total
   (the mean window count of that label's incidents times `feedback_weight`, so the label's total
   is unchanged), spread over its windows — a vantage-wide incident with thirty windows does not
   outweigh five single-series ones;
3. **a cap per label** (`cap_share`): the confirmed windows of a cause weigh at most `cap_share`
   times that cause's lab teaching weight (healthy "not an incident" windows: times the lab's
   healthy symptomatic windows, which teach the gate). Training balances the classes, so a cause's
   lab and confirmed windows share one fixed budget; without the cap, a few confirmed incidents of
   one shape take most of it and pull the neighbouring causes' windows (e.g. packet_loss's toward
   bandwidth_limit) across the boundary.

The lab's class balance itself is untouched: `train_model` weights every class to the same total.

The default cap, 0.05, is measured (bench/README.md, "Sidecar retraining"): at the shipped model's
scale, eval-402's five trained bandwidth_limit incidents at plain weight 3 cost 2.5 AC@1 points on
shifted-503 (refused); capped at 0.25 or 0.1 still 1.8-2.6; at 0.05 about 1 point, and the
candidate passes the gate on two seeds of three while bandwidth_limit recall rises from 0.85 to
0.89-0.98. Measured again with the candidate pinned to the live model's seed, parameters and bins
(retrain.py), that point is the feedback's own, on every seed: at the shipped model's scale these
incidents are not a clean win. Against a weaker live model (train-101, 30 rounds) the default
teaches nothing measurable, and weight 10 with a 0.25 cap wins on every seed
(tests/sidecar/test_sidecar_learn_gain.py): the right strength depends on the live model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from otelprobe.attribution.labels import HEALTHY
from otelprobe.causes import ROOT_CAUSES

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, slots=True)
class FeedbackWeighting:
    """The rule's knobs (LearningConfig: feedback_weight, feedback_cap_share, feedback_per_incident)."""

    weight: float = 3.0
    cap_share: float | None = 0.05
    per_incident: bool = True


def lab_label_weights(lab: pd.DataFrame) -> dict[str, float]:
    """Each cause's teaching weight in the lab data (a compound window counts 1/k to each of its k
    causes, as in training) and the healthy symptomatic windows the gate learns noise from."""
    from otelprobe.attribution.train import teaching_windows

    teaching = teaching_windows(lab)
    sums = np.bincount(teaching.causes, weights=teaching.weights, minlength=len(ROOT_CAUSES))
    totals: dict[str, float] = {cause: float(sums[i]) for i, cause in enumerate(ROOT_CAUSES)}
    totals[HEALTHY] = float((lab["warm"] & lab["symptomatic"] & (lab["label"] == HEALTHY)).sum())
    return totals


def feedback_weights(
    feedback: pd.DataFrame, lab_weights: dict[str, float], rule: FeedbackWeighting
) -> np.ndarray:
    """One weight per row of `feedback` (labeled_feedback's table: label, feedback_incident, warm,
    symptomatic), following the module docstring's rules."""
    weights = np.full(len(feedback), rule.weight, dtype=np.float64)
    if feedback.empty:
        return weights
    teaching = (feedback["warm"].fillna(False) & feedback["symptomatic"].fillna(False)).to_numpy(dtype=bool)
    if not teaching.any():
        return weights
    incidents = feedback["feedback_incident"].astype(str).to_numpy()
    labels = feedback["label"].astype(str).to_numpy()
    if rule.per_incident:
        for label in np.unique(labels[teaching]):
            rows = teaching & (labels == label)
            names, counts = np.unique(incidents[rows], return_counts=True)
            share = dict(zip(names.tolist(), (counts.mean() / counts).tolist(), strict=True))
            weights[rows] *= np.array([share[name] for name in incidents[rows]])
    if rule.cap_share is not None:
        for label in np.unique(labels[teaching]):
            rows = teaching & (labels == label)
            budget = rule.cap_share * lab_weights.get(str(label), 0.0)
            total = float(weights[rows].sum())
            if total > budget:
                weights[rows] *= budget / total
    return weights
