"""The baselines the attribution model must beat: static thresholds, robust z-scores, neighbour
voting (the expert rule tree, which combines the last two, is in expert_rules.py).

`otelprobe evaluate` (issue 8) scores each of them on the same windows as the model. A baseline
maps a window table (`dataset.window_table` output) to an `Answer`: an n x 11 score matrix (columns
in ROOT_CAUSES order, rows summing to 1; ties allowed, and metrics.py counts ties against the
attributor) and the scope it predicts for each cause (n x 11 scope names).

- `StaticThresholds`: what a blackbox_exporter or Gatus user configures — one absolute limit per
  phase on the window's median duration, tuned on the training table, plus "a failure of class X
  means cause Y". It knows no neighbours: scope is always "path".
- `RobustZ` (BARO-style, Pham et al. 2024): every phase's median against the series' own robust
  baseline (`{phase}_p50_z`), failure rates likewise; the most anomalous signal names the cause.
  Scope "path".
- `NeighbourVoting`: `RobustZ`'s causes, with the scope voted from the neighbours' symptoms (many
  targets of this vantage -> vantage, many vantages of this target -> target, else path).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np

from otelprobe.attribution.labels import HEALTHY
from otelprobe.causes import ROOT_CAUSES

if TYPE_CHECKING:
    import pandas as pd

CAUSE_INDEX: Final[Mapping[str, int]] = {cause: index for index, cause in enumerate(ROOT_CAUSES)}

PHASE_CAUSES: Final[Mapping[str, str]] = {
    "dns": "dns_latency",
    "connect": "network_latency",
    "tls": "tls_slow",
    "ttfb": "backend_slow",
    "transfer": "bandwidth_limit",
}
"""The cause a phase's slowdown names when the phase is read alone (DESIGN §5)."""

ERROR_CAUSES: Final[Mapping[str, str]] = {
    "dns_error": "dns_failure",
    "connect_refused": "target_unreachable",
    "connect_timeout": "target_unreachable",
    "tls_error": "certificate_invalid",
    "timeout": "backend_slow",
    "http_status": "http_error",
    "assertion_failed": "content_mismatch",
    "protocol_error": "http_error",
}
"""The cause an error class (DESIGN §4) names when read alone: DESIGN §5's table, with the overall
deadline charged to the backend and resets mid-body to HTTP errors."""

ERROR_Z_PER_SHARE: Final = 100.0
"""A failure rate in robust z-units: healthy series fail about 1 % of the time at most (the lab's
baseline loss), so a spread of one percentage point is one z."""
Z_TEMPERATURE: Final = 4.0
"""Softmax temperature on z-scores: 4 z (the features' "off its baseline") is one e-fold."""
VOTE_SHARE: Final = 0.4
"""Two in five neighbours (one of two) with the same symptom make the scope theirs: not every
neighbour can show a symptom (only HTTP targets have a TTFB, only TLS ones a certificate)."""

_SYMPTOM_OF_CAUSE: Final[Mapping[str, tuple[str, ...]]] = {
    "dns_latency": ("dns",),
    "dns_failure": ("fail",),
    "network_latency": ("connect", "slow"),
    "packet_loss": ("slow", "fail"),
    "bandwidth_limit": ("slow",),
    "tls_slow": ("tls",),
    "certificate_invalid": ("fail",),
    "backend_slow": ("ttfb",),
    "http_error": ("fail",),
    "target_unreachable": ("fail",),
    "content_mismatch": ("fail",),
}
"""Which neighbour symptoms vote on the scope of each cause (features.py's sym_* flags)."""
_HAS_RECENT: Final = ("fail", "slow")


@dataclass(frozen=True, slots=True)
class Answer:
    """One attributor's answer for n windows."""

    causes: np.ndarray
    """n x 11 scores in ROOT_CAUSES order, rows summing to 1."""
    scopes: np.ndarray
    """n x 11 scope names (object array): the scope predicted for each cause."""


class Attributor(Protocol):
    """Anything `evaluate` can score: a name and an answer for a window table."""

    @property
    def name(self) -> str: ...

    def answer(self, frame: pd.DataFrame) -> Answer: ...


def column(frame: pd.DataFrame, name: str, fill: float = 0.0) -> np.ndarray:
    """`frame[name]` as float64 with NaN (and a missing column) replaced by `fill`."""
    if name not in frame:
        return np.full(len(frame), fill, dtype=np.float64)
    values = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(np.where(np.isfinite(values), values, fill), dtype=np.float64)


def error_evidence(frame: pd.DataFrame) -> np.ndarray:
    """n x 11: each cause's share of failed probes under ERROR_CAUSES (summed over its classes)."""
    evidence = np.zeros((len(frame), len(ROOT_CAUSES)))
    for error_class, cause in ERROR_CAUSES.items():
        evidence[:, CAUSE_INDEX[cause]] += column(frame, f"{error_class}_share")
    return evidence


def z_evidence(frame: pd.DataFrame) -> np.ndarray:
    """n x 11 robust z per cause: the phase's `{p}_p50_z` (negative: 0) and failure rates in z-units."""
    evidence = error_evidence(frame) * ERROR_Z_PER_SHARE
    for phase, cause in PHASE_CAUSES.items():
        z = np.clip(column(frame, f"{phase}_p50_z"), 0.0, None)
        evidence[:, CAUSE_INDEX[cause]] = np.maximum(evidence[:, CAUSE_INDEX[cause]], z)
    return evidence


def softmax_rows(values: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise softmax of `values / temperature` (equal values stay equal: ties are kept)."""
    scaled = values / temperature
    exp = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float64)


def proportional_rows(evidence: np.ndarray) -> np.ndarray:
    """Rows of non-negative evidence scaled to sum to 1; a row without evidence is uniform."""
    totals = evidence.sum(axis=1, keepdims=True)
    uniform = np.full_like(evidence, 1.0 / evidence.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(totals > 0, evidence / totals, uniform), dtype=np.float64)


def path_scopes(n: int) -> np.ndarray:
    """n x 11 scopes, all "path" (an attributor that knows no neighbours)."""
    return np.full((n, len(ROOT_CAUSES)), "path", dtype=object)


def voted_scope(vantage_share: float, target_share: float) -> str:
    """Scope from the shares of neighbours with the same symptom (NaN: no such neighbour)."""
    vantage = 0.0 if math.isnan(vantage_share) else vantage_share
    target = 0.0 if math.isnan(target_share) else target_share
    if vantage >= VOTE_SHARE and vantage >= target:
        return "vantage"
    if target >= VOTE_SHARE:
        return "target"
    return "path"


def voted_scopes(frame: pd.DataFrame) -> np.ndarray:
    """n x 11 scopes: for each cause, the vote of the neighbours showing that cause's symptoms
    (for failures and slowness also in the last few windows: a fault hitting 30 % of requests
    reaches every neighbour, not in every window)."""
    shares: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for symptom in {s for symptoms in _SYMPTOM_OF_CAUSE.values() for s in symptoms}:
        sides = []
        for side in ("vantage", "target"):
            share = column(frame, f"{side}_{symptom}_share", math.nan)
            if symptom in _HAS_RECENT:
                share = np.fmax(share, column(frame, f"{side}_{symptom}_recent_share", math.nan))
            sides.append(share)
        shares[symptom] = (sides[0], sides[1])
    scopes = path_scopes(len(frame))
    for cause, symptoms in _SYMPTOM_OF_CAUSE.items():
        vantage = np.nanmax(np.column_stack([shares[s][0] for s in symptoms]), axis=1, initial=-1.0)
        target = np.nanmax(np.column_stack([shares[s][1] for s in symptoms]), axis=1, initial=-1.0)
        scopes[:, CAUSE_INDEX[cause]] = [
            voted_scope(float(v), float(t)) for v, t in zip(vantage, target, strict=True)
        ]
    return scopes


@dataclass(frozen=True, slots=True)
class StaticThresholds:
    """One absolute limit per phase on the window's median (ms), tuned on training windows."""

    thresholds_ms: Mapping[str, float]
    error_alert_share: float = 0.1
    name: str = "static thresholds"

    @classmethod
    def fit(cls, train: pd.DataFrame) -> StaticThresholds:
        """Each phase's limit: the one maximising F1 of "median above the limit" for windows
        labeled with the phase's cause against healthy windows (warm series only).

        Raises:
            ValueError: the table has no labels or no absolute phase medians (`{p}_p50_ms`).
        """
        if "label" not in train:
            raise ValueError("static thresholds are tuned on labeled windows; the training table has none")
        warm = train[train["warm"].astype(bool)]
        thresholds: dict[str, float] = {}
        for phase, cause in PHASE_CAUSES.items():
            if f"{phase}_p50_ms" not in warm:
                raise ValueError(f"the window table has no {phase}_p50_ms column (features.py)")
            chosen = warm[warm["label"].isin([cause, HEALTHY])]
            values = chosen[f"{phase}_p50_ms"].to_numpy(dtype=np.float64, na_value=np.nan)
            positive = (chosen["label"] == cause).to_numpy()
            present = np.isfinite(values)
            thresholds[phase] = best_f1_threshold(values[present], positive[present])
        return cls(thresholds)

    def answer(self, frame: pd.DataFrame) -> Answer:
        evidence = error_evidence(frame) / self.error_alert_share
        evidence = np.where(evidence >= 1.0, evidence, 0.0)
        for phase, cause in PHASE_CAUSES.items():
            limit = self.thresholds_ms.get(phase, math.inf)
            ratio = column(frame, f"{phase}_p50_ms") / limit if math.isfinite(limit) else 0.0
            over = np.where(ratio > 1.0, ratio, 0.0)
            evidence[:, CAUSE_INDEX[cause]] = np.maximum(evidence[:, CAUSE_INDEX[cause]], over)
        return Answer(proportional_rows(evidence), path_scopes(len(frame)))


def best_f1_threshold(values: np.ndarray, positive: np.ndarray) -> float:
    """The limit t maximising F1 of `values > t` for `positive` (inf when there is no positive)."""
    if not positive.any():
        return math.inf
    order = np.argsort(-values, kind="stable")
    sorted_values, sorted_positive = values[order], positive[order]
    true_pos = np.cumsum(sorted_positive)
    flagged = np.arange(1, len(values) + 1)
    f1 = 2 * true_pos / (flagged + positive.sum())
    # Only cut between distinct values: everything equal to the limit is below it.
    distinct = np.append(sorted_values[1:] < sorted_values[:-1], True)
    best = int(np.argmax(np.where(distinct, f1, -1.0)))
    below = sorted_values[best + 1] if best + 1 < len(sorted_values) else sorted_values[best] - 1.0
    return float((sorted_values[best] + below) / 2)


@dataclass(frozen=True, slots=True)
class RobustZ:
    """BARO-style: causes ranked by the robust z of their signal against the series' baseline."""

    name: str = "robust z (BARO)"

    def answer(self, frame: pd.DataFrame) -> Answer:
        return Answer(softmax_rows(z_evidence(frame), Z_TEMPERATURE), path_scopes(len(frame)))


@dataclass(frozen=True, slots=True)
class NeighbourVoting:
    """Robust-z causes; scope voted from neighbours' symptoms."""

    name: str = "vantage/target voting"

    def answer(self, frame: pd.DataFrame) -> Answer:
        return Answer(softmax_rows(z_evidence(frame), Z_TEMPERATURE), voted_scopes(frame))
