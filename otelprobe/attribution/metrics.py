"""How well an attributor ranks root causes: AC@k, scope accuracy, per-class scores, calibration.

The scoring half of `otelprobe evaluate` (issue 8): the model and every baseline hand their ranked
score matrices for the same windows to `score_cases`, and `report.py` renders what comes back. Pure
functions over arrays; nothing here reads files, trains or imports the prober.

Definitions (RCAEval / BARO for the ranking metrics):

- A *case* is one scored window with a known true cause. Its row of `scores` holds one score per
  cause (columns in `ROOT_CAUSES` order), non-negative and summing to 1.
- The *rank* of the true cause is 1 + the number of other causes scoring at least as high: ties are
  broken against the attributor, so a flat or one-hot answer earns no credit for the causes it
  left tied (a uniform row ranks every cause last).
- AC@k = fraction of cases whose true cause has rank <= k. Avg@5 = mean of AC@1 .. AC@5.
- Cause+scope AC@k (`scope_ac1`, ...) counts a case only when its true cause has rank <= k AND the
  scope predicted *for that cause* equals the true scope.
- The *top-1 prediction* is the highest-scoring cause (ties: the first in `ROOT_CAUSES` order). It
  feeds the confusion matrix (rows true, columns predicted), per-class recall / precision / F1 and
  the calibration error; AC@1 equals the confusion matrix's accuracy unless a top score is tied.
- Per-class recall = diagonal / row sum, precision = diagonal / column sum (NaN when the class
  never occurs / is never predicted), F1 = 2 TP / (2 TP + FP + FN). Macro-F1 is the unweighted
  mean F1 over the classes that occur as a true cause or a top-1 prediction (scikit-learn's label
  set), so a class the attributor predicts but never sees counts as F1 0.
- Compound (`compound_both_at3`): over the cases with two or more true causes, the fraction whose
  true causes all rank within the top 3 (NaN when there are no such cases).
- ECE (Guo et al. 2017): top-1 scores are put into 10 equal-width bins ((0, 0.1], ..., (0.9, 1]);
  ECE = sum over bins of (cases in bin / all cases) * |accuracy in bin - mean top-1 score in bin|.
- False attribution rate: over healthy (series, window) pairs, the fraction on which an attribution
  was emitted.
- Time to attribution: per incident, first attribution time - fault onset; the median and p90 (linear
  interpolation) are over the incidents ever attributed. "Within one window" is the fraction of the
  detected incidents attributed no later than detection + one window length.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from otelprobe.causes import ROOT_CAUSES, SCOPES

AC_K_MAX: Final = 5
"""Avg@5 averages AC@1 .. AC@5."""
COMPOUND_TOP_K: Final = 3
"""A compound case counts when all of its true causes rank within this many."""
ECE_BINS: Final = 10
_ROW_SUM_TOLERANCE: Final = 1e-6


class ScoringInputError(ValueError):
    """The arrays handed to a scoring function disagree in shape or hold values it cannot score."""


@dataclass(frozen=True, slots=True)
class ClassScores:
    """Top-1 scores of one cause: `support` cases are truly it, `predicted` were called it."""

    cause: str
    recall: float
    precision: float
    f1: float
    support: int
    predicted: int


@dataclass(frozen=True, slots=True)
class AttributionScores:
    """Everything `score_cases` measures on one attributor's answers (definitions: module doc)."""

    n_cases: int
    classes: tuple[str, ...]
    ac1: float
    ac3: float
    avg5: float
    scope_ac1: float
    scope_ac3: float
    scope_avg5: float
    per_class: tuple[ClassScores, ...]
    macro_f1: float
    compound_both_at3: float
    n_compound: int
    ece: float
    confusion: tuple[tuple[int, ...], ...]
    """Counts, rows the true cause, columns the top-1 prediction, both in `classes` order."""

    def class_scores(self, cause: str) -> ClassScores:
        """The per-class scores of `cause`."""
        for scores in self.per_class:
            if scores.cause == cause:
                return scores
        raise KeyError(cause)

    def worst_class(self) -> ClassScores | None:
        """The class with the lowest recall among those that occur (None if no class occurs)."""
        occurring = [scores for scores in self.per_class if scores.support > 0]
        return min(occurring, key=lambda scores: scores.recall, default=None)

    def confusion_array(self) -> npt.NDArray[np.int64]:
        """`confusion` as an integer array."""
        return np.array(self.confusion, dtype=np.int64).reshape(len(self.classes), len(self.classes))


@dataclass(frozen=True, slots=True)
class AttributionDelays:
    """How long incidents waited for their first attribution (seconds; definitions: module doc)."""

    n_incidents: int
    n_attributed: int
    n_detected: int
    median_delay_s: float
    p90_delay_s: float
    within_one_window: float


def score_cases(
    scores: npt.ArrayLike,
    true_causes: Sequence[str],
    *,
    true_cause_sets: Sequence[Collection[str]] | None = None,
    true_scopes: Sequence[str] | None = None,
    predicted_scopes: npt.ArrayLike | None = None,
    classes: Sequence[str] = ROOT_CAUSES,
) -> AttributionScores:
    """Score one attributor's ranked answers against the truth.

    Args:
        scores: n_cases x len(classes) scores, rows summing to 1, columns in `classes` order.
        true_causes: the true (primary) cause of each case.
        true_cause_sets: per case every true cause (compound incidents); each set must contain the
            case's primary cause. None: every case has one cause and `compound_both_at3` is NaN.
        true_scopes: the true scope of each case; with `predicted_scopes`, or the scope metrics
            are NaN (an attributor that predicts no scope).
        predicted_scopes: n_cases x len(classes) scope names, the scope predicted for each cause.
        classes: the cause of each column; DESIGN §5's ROOT_CAUSES unless scoring a subset.

    Returns:
        The scores; see the module docstring for each definition.

    Raises:
        ScoringInputError: shapes disagree, scores are not distributions, or a name is unknown.
    """
    class_names = tuple(classes)
    score_matrix = _score_matrix(scores, len(class_names))
    n_cases = score_matrix.shape[0]
    true_index = _class_indices(true_causes, class_names, n_cases, "true_causes")
    ranks = _pessimistic_ranks(score_matrix, true_index)
    top1_index = np.argmax(score_matrix, axis=1)

    ac = [float(np.mean(ranks <= k)) for k in range(1, AC_K_MAX + 1)]
    scope_ac = _scope_accuracies(ranks, true_index, true_scopes, predicted_scopes, n_cases, len(class_names))
    per_class, macro_f1 = _per_class(true_index, top1_index, class_names)
    labels = np.arange(len(class_names))
    confusion = confusion_matrix(true_index, top1_index, labels=labels)
    return AttributionScores(
        n_cases=n_cases,
        classes=class_names,
        ac1=ac[0],
        ac3=ac[2],
        avg5=float(np.mean(ac)),
        scope_ac1=scope_ac[0],
        scope_ac3=scope_ac[2],
        scope_avg5=float(np.mean(scope_ac)),
        per_class=per_class,
        macro_f1=macro_f1,
        compound_both_at3=_compound_both(score_matrix, true_index, true_cause_sets, class_names),
        n_compound=_count_compound(true_cause_sets),
        # A row may sum to 1 + tolerance; a one-hot top score must still be a confidence.
        ece=expected_calibration_error(np.clip(score_matrix.max(axis=1), 0.0, 1.0), top1_index == true_index),
        confusion=tuple(tuple(int(count) for count in row) for row in confusion),
    )


def expected_calibration_error(
    confidence: npt.ArrayLike, correct: npt.ArrayLike, n_bins: int = ECE_BINS
) -> float:
    """ECE of top-1 confidences over `n_bins` equal-width bins (0, 1/n], ..., ((n-1)/n, 1].

    Args:
        confidence: the top-1 score of each case, in [0, 1].
        correct: whether each case's top-1 prediction was right.
        n_bins: number of equal-width bins.

    Returns:
        sum over bins of (share of cases) * |accuracy - mean confidence|; NaN for no cases.
    """
    confidence_array = np.asarray(confidence, dtype=np.float64)
    correct_array = np.asarray(correct, dtype=bool)
    if confidence_array.shape != correct_array.shape or confidence_array.ndim != 1:
        raise ScoringInputError("confidence and correct must be 1-d arrays of the same length")
    if confidence_array.size == 0:
        return math.nan
    if not np.all((confidence_array >= 0.0) & (confidence_array <= 1.0)):
        raise ScoringInputError("confidences must lie in [0, 1]")
    # right=True puts a confidence on an edge into the bin below: (0.2, 0.3] holds 0.3.
    bin_of = np.digitize(confidence_array, np.linspace(0.0, 1.0, n_bins + 1)[1:-1], right=True)
    confidence_sum = np.bincount(bin_of, weights=confidence_array, minlength=n_bins)
    correct_sum = np.bincount(bin_of, weights=correct_array.astype(np.float64), minlength=n_bins)
    # |correct_sum - confidence_sum| / N is the bin's share times its accuracy-confidence gap.
    return float(np.sum(np.abs(correct_sum - confidence_sum)) / confidence_array.size)


def false_attribution_rate(emitted: npt.ArrayLike) -> float:
    """The fraction of healthy (series, window) pairs on which an attribution was emitted.

    Args:
        emitted: one bool per healthy series-window.

    Returns:
        The fraction emitted; NaN when there are no healthy windows.
    """
    emitted_array = np.asarray(emitted)
    if emitted_array.ndim != 1 or (emitted_array.size and emitted_array.dtype != np.bool_):
        raise ScoringInputError("emitted must be a 1-d array of bools, one per healthy window")
    return float(np.mean(emitted_array)) if emitted_array.size else math.nan


def attribution_delays(
    onset_s: npt.ArrayLike,
    first_attribution_s: npt.ArrayLike,
    *,
    detection_s: npt.ArrayLike | None = None,
    window_s: float | None = None,
) -> AttributionDelays:
    """Time from fault onset to the first attribution, per incident.

    Args:
        onset_s: each incident's fault onset (seconds on any clock shared by the three arrays).
        first_attribution_s: its first attribution, NaN if it was never attributed.
        detection_s: its SLO detection, NaN if never detected; with `window_s`, or
            `within_one_window` is NaN.
        window_s: the window length.

    Returns:
        Median and p90 delay over the attributed incidents (NaN if none), and the fraction of
        detected incidents attributed by detection + `window_s`.
    """
    onset = _float_vector(onset_s, "onset_s")
    attributed = _float_vector(first_attribution_s, "first_attribution_s")
    if onset.shape != attributed.shape:
        raise ScoringInputError("onset_s and first_attribution_s must have one value per incident")
    if np.isnan(onset).any():
        raise ScoringInputError("every incident needs an onset time (onset_s has NaN)")
    delays = (attributed - onset)[~np.isnan(attributed)]
    within = math.nan
    n_detected = 0
    if detection_s is not None and window_s is not None:
        detected = _float_vector(detection_s, "detection_s")
        if detected.shape != onset.shape:
            raise ScoringInputError("detection_s must have one value per incident")
        was_detected = ~np.isnan(detected)
        n_detected = int(was_detected.sum())
        # NaN compares False: a detected incident never attributed is not within the window.
        in_time = attributed[was_detected] <= detected[was_detected] + window_s
        within = float(np.mean(in_time)) if n_detected else math.nan
    return AttributionDelays(
        n_incidents=int(onset.size),
        n_attributed=int(delays.size),
        n_detected=n_detected,
        median_delay_s=float(np.median(delays)) if delays.size else math.nan,
        p90_delay_s=float(np.percentile(delays, 90)) if delays.size else math.nan,
        within_one_window=within,
    )


def to_json(scores: AttributionScores | AttributionDelays) -> dict[str, Any]:
    """A JSON-serialisable dict of `scores` for model metadata (NaN becomes null).

    `per_class` becomes an object keyed by cause; everything else keeps its field name.
    """
    result: dict[str, Any] = {}
    for field in dataclasses.fields(scores):
        value = getattr(scores, field.name)
        if field.name == "per_class":
            result[field.name] = {
                class_scores.cause: {
                    key: _json_value(item)
                    for key, item in dataclasses.asdict(class_scores).items()
                    if key != "cause"
                }
                for class_scores in value
            }
        else:
            result[field.name] = _json_value(value)
    return result


def _json_value(value: object) -> object:
    if isinstance(value, tuple | list):
        return [_json_value(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _score_matrix(scores: npt.ArrayLike, n_classes: int) -> npt.NDArray[np.float64]:
    try:
        matrix = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ScoringInputError(f"scores must be numbers: {exc}") from exc
    if matrix.ndim != 2 or matrix.shape[1] != n_classes:
        raise ScoringInputError(
            f"scores must be n_cases x {n_classes} (one column per cause), got shape {matrix.shape}"
        )
    if matrix.shape[0] == 0:
        raise ScoringInputError("there are no cases to score")
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise ScoringInputError("scores must be finite and non-negative")
    bad_rows = np.flatnonzero(np.abs(matrix.sum(axis=1) - 1.0) > _ROW_SUM_TOLERANCE)
    if bad_rows.size:
        raise ScoringInputError(
            f"each case's scores must sum to 1; {bad_rows.size} rows do not"
            f" (first: case {bad_rows[0]}, summing to {matrix[bad_rows[0]].sum():.6g})"
        )
    return matrix


def _class_indices(
    names: Sequence[str], classes: tuple[str, ...], n_cases: int, what: str
) -> npt.NDArray[np.intp]:
    name_list = list(names)
    if len(name_list) != n_cases:
        raise ScoringInputError(f"{what} has {len(name_list)} entries for {n_cases} cases")
    index_of = {name: index for index, name in enumerate(classes)}
    unknown = sorted({str(name) for name in name_list if name not in index_of})
    if unknown:
        raise ScoringInputError(f"{what} holds unknown causes {unknown}; known: {list(classes)}")
    return np.array([index_of[name] for name in name_list], dtype=np.intp)


def _pessimistic_ranks(
    matrix: npt.NDArray[np.float64], true_index: npt.NDArray[np.intp]
) -> npt.NDArray[np.int64]:
    """1-based rank of each true cause, placed after every cause that ties with it."""
    true_score = matrix[np.arange(matrix.shape[0]), true_index]
    # >= counts the true cause itself, so the count is the rank.
    ties_or_better: npt.NDArray[np.bool_] = matrix >= true_score[:, None]
    return np.asarray(np.count_nonzero(ties_or_better, axis=1), dtype=np.int64)


def _scope_accuracies(
    ranks: npt.NDArray[np.int64],
    true_index: npt.NDArray[np.intp],
    true_scopes: Sequence[str] | None,
    predicted_scopes: npt.ArrayLike | None,
    n_cases: int,
    n_classes: int,
) -> list[float]:
    if true_scopes is None or predicted_scopes is None:
        return [math.nan] * AC_K_MAX
    truth = np.array(list(true_scopes), dtype=object)
    predicted = np.asarray(predicted_scopes, dtype=object)
    if truth.shape != (n_cases,) or predicted.shape != (n_cases, n_classes):
        raise ScoringInputError(
            f"true_scopes must have {n_cases} entries and predicted_scopes be {n_cases} x {n_classes},"
            f" got {truth.shape} and {predicted.shape}"
        )
    unknown = sorted({str(scope) for scope in (*truth, *predicted.ravel()) if scope not in SCOPES})
    if unknown:
        raise ScoringInputError(f"unknown scopes {unknown}; known: {list(SCOPES)}")
    scope_right = predicted[np.arange(n_cases), true_index] == truth
    return [float(np.mean((ranks <= k) & scope_right)) for k in range(1, AC_K_MAX + 1)]


def _per_class(
    true_index: npt.NDArray[np.intp], top1_index: npt.NDArray[np.intp], classes: tuple[str, ...]
) -> tuple[tuple[ClassScores, ...], float]:
    labels = np.arange(len(classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        true_index, top1_index, labels=labels, zero_division=np.nan
    )
    predicted = np.bincount(top1_index, minlength=len(classes))
    per_class = tuple(
        ClassScores(
            cause=cause,
            recall=float(recall[index]),
            precision=float(precision[index]),
            f1=float(f1[index]),
            support=int(support[index]),
            predicted=int(predicted[index]),
        )
        for index, cause in enumerate(classes)
    )
    # Classes neither true nor predicted have F1 NaN and stay out of the mean.
    return per_class, float(np.nanmean(f1))


def _compound_both(
    matrix: npt.NDArray[np.float64],
    true_index: npt.NDArray[np.intp],
    true_cause_sets: Sequence[Collection[str]] | None,
    classes: tuple[str, ...],
) -> float:
    if true_cause_sets is None:
        return math.nan
    cause_sets = list(true_cause_sets)
    if len(cause_sets) != matrix.shape[0]:
        raise ScoringInputError(f"true_cause_sets has {len(cause_sets)} entries for {matrix.shape[0]} cases")
    hits: list[bool] = []
    for case, (cause_set, primary) in enumerate(zip(cause_sets, true_index, strict=True)):
        members = _class_indices(sorted(set(cause_set)), classes, len(set(cause_set)), "true_cause_sets")
        if primary not in members:
            raise ScoringInputError(
                f"case {case}: true cause {classes[primary]!r} is missing from its true_cause_sets entry"
            )
        if members.size >= 2:
            rows = np.repeat(matrix[case : case + 1], members.size, axis=0)
            hits.append(bool(np.all(_pessimistic_ranks(rows, members) <= COMPOUND_TOP_K)))
    return float(np.mean(hits)) if hits else math.nan


def _count_compound(true_cause_sets: Sequence[Collection[str]] | None) -> int:
    return 0 if true_cause_sets is None else sum(len(set(causes)) >= 2 for causes in true_cause_sets)


def _float_vector(values: npt.ArrayLike, what: str) -> npt.NDArray[np.float64]:
    try:
        vector = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ScoringInputError(f"{what} must be numbers (NaN for missing): {exc}") from exc
    if vector.ndim != 1:
        raise ScoringInputError(f"{what} must be a 1-d array, got shape {vector.shape}")
    return vector
