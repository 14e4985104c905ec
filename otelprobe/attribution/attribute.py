"""Attribution: for every series-window in SLO violation, every DESIGN §5 cause with a calibrated
score, its most likely scope and, for the leading causes, evidence in words (DESIGN §6).

Which windows are attributed: the series' baseline is warm, an SLO is violating (slo.py's
multi-window burn rates), the window itself shows a symptom (a failed probe, or a phase off its
baseline) and the model's gate judges the symptom a fault rather than the series' own noise. The
symptom condition keeps a burn that merely lingers from earlier windows from being explained by a
window that looks healthy; the gate keeps a lone think-time spike that happens to burn a latency
objective from being explained as a cause (the violation itself is still reported by the SLO
layer).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from otelprobe.attribution.evidence import Evidence, evidence_of, strongest_positive
from otelprobe.attribution.features import FEATURE_NAMES, feature_matrix
from otelprobe.attribution.frame_rows import FrameRows
from otelprobe.attribution.model import AttributionModel, gate_input_matrix
from otelprobe.attribution.shap_by_cause import contributions_for
from otelprobe.causes import ROOT_CAUSES, SCOPES

if TYPE_CHECKING:
    import pandas as pd

EVIDENCE_FOR_TOP: Final = 3
"""Causes that get evidence; the rest are listed with their score and scope only."""
EVIDENCE_MIN_SCORE: Final = 0.05
"""Below the top cause, a cause scored under this gets no evidence either (DESIGN §6's example:
a 0.05 cause with `"evidence": []`): what pushed the model a little toward a cause it thinks
unlikely says little, and each cause's SHAP values are most of an attributed window's CPU (one
TreeSHAP pass of its trees per cause; ~1.5 causes a window instead of 3 on eval-402)."""


@dataclass(frozen=True, slots=True)
class RankedCause:
    cause: str
    scope: str
    score: float
    scope_scores: dict[str, float]
    evidence: tuple[Evidence, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "scope": self.scope,
            "score": round(self.score, 6),
            "scope_scores": {k: round(v, 4) for k, v in self.scope_scores.items()},
            "evidence": [e.to_json() for e in self.evidence],
        }


@dataclass(frozen=True, slots=True)
class Attribution:
    """One DESIGN §6 record."""

    slo: str
    slos: tuple[str, ...]
    target: str
    vantage: str
    window_start_ns: int
    window_end_ns: int
    probes: int
    failed: int
    causes: tuple[RankedCause, ...]
    model: str

    def to_json(self) -> dict[str, Any]:
        return {
            "slo": self.slo,
            "slos": list(self.slos),
            "target": self.target,
            "vantage": self.vantage,
            "window_start": iso(self.window_start_ns),
            "window_end": iso(self.window_end_ns),
            "window_start_unix_nano": self.window_start_ns,
            "probes": self.probes,
            "failed": self.failed,
            "model": self.model,
            "causes": [c.to_json() for c in self.causes],
        }


def iso(epoch_ns: int) -> str:
    stamp = datetime.fromtimestamp(epoch_ns / 1e9, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def attributable(frame: pd.DataFrame) -> np.ndarray:
    """Which rows are candidates: warm, violating an SLO and symptomatic (before the gate)."""
    return np.asarray(frame["warm"] & frame["violating"] & frame["symptomatic"], dtype=bool)


def attributed(model: AttributionModel, frame: pd.DataFrame) -> np.ndarray:
    """Which rows are attributed: candidates the model's gate judges a fault (module docstring)."""
    mask = attributable(frame).copy()
    if mask.any():
        fault = model.fault_probability(gate_input_matrix(frame[mask]))
        mask[np.flatnonzero(mask)] = fault >= model.metadata.gate_threshold
    return mask


@dataclass(frozen=True, slots=True)
class Scored:
    """Scores for a set of windows: causes (n × 11) and the scope of each cause (n × 11 × 3)."""

    causes: np.ndarray
    scopes: np.ndarray


def score_windows(model: AttributionModel, frame: pd.DataFrame, features: np.ndarray | None = None) -> Scored:
    """Cause and scope scores of `frame`'s rows (`features`: its feature_matrix, if already made)."""
    if frame.empty:
        return Scored(np.zeros((0, len(ROOT_CAUSES))), np.zeros((0, len(ROOT_CAUSES), len(SCOPES))))
    causes = model.cause_scores(feature_matrix(frame) if features is None else features)
    scopes = model.scopes_for_every_cause(frame)
    return Scored(causes, scopes)


def model_label(model: AttributionModel) -> str:
    """`name@data.model`: the training name, the first 12 hex digits of its training data's digest
    and the first 8 of the model's own (two models trained on the same data differ in the last)."""
    files = model.metadata.training.get("name") or "model"
    data = str(model.metadata.training.get("digest", ""))[:12]
    own = model.digest()[:8]
    return f"{files}@{data}.{own}" if data else f"{files}@{own}"


def attribute(model: AttributionModel, frame: pd.DataFrame) -> Iterator[Attribution]:
    """One Attribution per attributable window of `frame` (dataset.window_table's output).

    The numbers are made for all rows at once (scores, scopes, SHAP values and which of them are
    evidence); the loop over rows only builds the records and words the evidence."""
    rows = frame[attributed(model, frame)]
    if rows.empty:
        return
    features = feature_matrix(rows)
    scored = score_windows(model, rows, features)
    orders = np.argsort(-scored.causes, axis=1, kind="stable")
    # SHAP values of the causes that get evidence only (the same numbers, a fraction of the work):
    # the top EVIDENCE_FOR_TOP, without those below EVIDENCE_MIN_SCORE but the first (-1: none).
    asked = orders[:, :EVIDENCE_FOR_TOP].copy()
    unlikely = np.take_along_axis(scored.causes, asked, axis=1) < EVIDENCE_MIN_SCORE
    unlikely[:, 0] = False
    asked[unlikely] = -1
    contributions = contributions_for(model.cause_booster, features, asked)
    shap = contributions[:, :, :-1]  # the last column is the bias
    chosen, chosen_count = strongest_positive(shap)
    chosen_values = np.take_along_axis(shap, chosen, axis=2).tolist()
    chosen_lists, chosen_counts = chosen.tolist(), chosen_count.tolist()
    cause_lists, score_lists = orders.tolist(), scored.causes.tolist()
    scope_lists = scored.scopes.tolist()
    best_scopes = np.argmax(scored.scopes, axis=2).tolist()
    label = model_label(model)
    table = FrameRows(rows)
    for i in range(len(rows)):
        row = table[i]
        ranked = []
        for rank, c in enumerate(cause_lists[i]):
            evidence: tuple[Evidence, ...] = ()
            if rank < EVIDENCE_FOR_TOP:
                count = chosen_counts[i][rank]
                evidence = evidence_of(
                    FEATURE_NAMES, chosen_lists[i][rank][:count], chosen_values[i][rank][:count], row
                )
            ranked.append(
                RankedCause(
                    cause=ROOT_CAUSES[c],
                    scope=SCOPES[best_scopes[i][c]],
                    score=score_lists[i][c],
                    scope_scores=dict(zip(SCOPES, scope_lists[i][c], strict=True)),
                    evidence=evidence,
                )
            )
        slos = tuple(s for s in str(row.get("violating_slos") or "").split(",") if s)
        yield Attribution(
            slo=slos[0] if slos else "",
            slos=slos,
            target=str(row["target"]),
            vantage=str(row["vantage"]),
            window_start_ns=int(row["window_start_ns"]),
            window_end_ns=int(row["window_end_ns"]),
            probes=int(row["n"]),
            failed=int(row["n_fail"]),
            causes=tuple(ranked),
            model=label,
        )
