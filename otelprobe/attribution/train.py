"""Fit the attribution model on labeled lab windows.

Which windows teach the cause model: warm series (a baseline exists), labeled with a cause (at
least half of the window's probes overlapped the fault) and symptomatic (some phase off its
baseline or a failed probe) — a fault the window could not see teaches nothing about its shape.
The scope model learns from the same windows with their true cause as input.

The temperature that calibrates the cause scores is fitted on held-out incidents (a split by
incident, never by window), then both boosters are refit on all the data with the same rounds.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from otelprobe.attribution.features import FEATURE_NAMES, feature_matrix
from otelprobe.attribution.labels import AMBIGUOUS, HEALTHY
from otelprobe.attribution.model import (
    DEFAULT_PARAMS,
    DEFAULT_ROUNDS,
    GATE_FEATURES,
    GATE_THRESHOLD,
    SCOPE_FEATURES,
    AttributionModel,
    ModelMetadata,
    gate_input_matrix,
    scope_inputs,
    softmax,
    versions,
)
from otelprobe.attribution.splits import split_by_incident
from otelprobe.attribution.windows import WINDOW_INTERVALS
from otelprobe.causes import ROOT_CAUSES, SCOPES

if TYPE_CHECKING:
    import pandas as pd

CAUSE_INDEX: dict[str, int] = {cause: i for i, cause in enumerate(ROOT_CAUSES)}
SCOPE_INDEX = {scope: i for i, scope in enumerate(SCOPES)}


WEIGHT_COLUMN = "sample_weight"
"""An optional column of a training table: how much each window counts (1 when absent)."""


BIN_COLUMN = "sets_bins"
"""An optional boolean column: only these rows set LightGBM's feature bins, the others are binned
with them. A retrain that appends rows (confirmed windows) to the table a model was fit on keeps
that model's bins, so it differs from it by those rows alone (new bin edges reshuffle every split)."""


class TrainingError(ValueError):
    """The data cannot train a model (no labels, a class missing, ...)."""


@dataclass(frozen=True, slots=True)
class TrainingSet:
    frame: pd.DataFrame
    causes: np.ndarray  # class index per row
    scopes: np.ndarray
    weights: np.ndarray  # 1, or 1/k for each of the k rows of a compound window
    teaches_scope: np.ndarray  # the row's scope label is its cause's own (see teaching_windows)


def teaching_windows(frame: pd.DataFrame) -> TrainingSet:
    """The windows that teach the cause and scope models (see the module docstring)."""
    if "label" not in frame:
        raise TrainingError("the recording carries no lab labels (lab.fault.cause): nothing to learn from")
    chosen = frame[
        frame["warm"]
        & frame["symptomatic"]
        & ~frame["label"].isin([HEALTHY, AMBIGUOUS])
        & frame["label"].isin(list(ROOT_CAUSES))
    ]
    if chosen.empty:
        raise TrainingError("no labeled, symptomatic window to learn from")
    missing = [cause for cause in ROOT_CAUSES if cause not in set(chosen["label"])]
    if missing:
        raise TrainingError(f"no labeled window of {', '.join(missing)}: every class needs examples")
    # A compound window (two faults at once) teaches each of its causes, at half weight each, so
    # the model learns to share its score between them instead of hiding the second.
    all_causes = chosen["label_causes"].where(chosen["label_causes"].notna(), chosen["label"])
    cause_lists = [
        [c for c in str(value).split(",") if c in CAUSE_INDEX] or [label]
        for value, label in zip(all_causes, chosen["label"], strict=True)
    ]
    repeat = np.array([len(causes) for causes in cause_lists])
    expanded = chosen.loc[chosen.index.repeat(repeat)].reset_index(drop=True)
    causes = np.array([CAUSE_INDEX[c] for lst in cause_lists for c in lst], dtype=np.int64)
    weights = np.repeat(1.0 / repeat, repeat)
    if WEIGHT_COLUMN in expanded:  # e.g. operator-confirmed windows counting more than lab ones
        weights = weights * expanded[WEIGHT_COLUMN].fillna(1.0).to_numpy(dtype=np.float64)
    scopes = expanded["label_scope"].map(SCOPE_INDEX).fillna(SCOPE_INDEX["path"]).to_numpy(dtype=np.int64)
    # The scope on the spans is that of the window's labeled cause: in a compound window the other
    # fault often has another scope (a path 5xx during a vantage's loss), so its row teaches the
    # cause model but not the scope model.
    own = np.array([CAUSE_INDEX.get(str(label), -1) for label in expanded["label"]]) == causes
    teaches_scope = own | (repeat == 1).repeat(repeat)
    return TrainingSet(expanded, causes, scopes, weights, teaches_scope)


def gate_windows(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The gate's teaching windows: warm and symptomatic, labeled with a cause (1) or healthy (0)."""
    candidates = frame[frame["warm"] & frame["symptomatic"]]
    chosen = candidates[candidates["label"].isin([*ROOT_CAUSES, HEALTHY])]
    return chosen.reset_index(drop=True), (chosen["label"] != HEALTHY).to_numpy(dtype=np.int64)


def _balanced_weights(classes: np.ndarray, count: int, base: np.ndarray) -> np.ndarray:
    freq = np.bincount(classes, weights=base, minlength=count).astype(np.float64)
    weights = base / np.maximum(freq[classes], 1e-9)
    return np.asarray(weights / weights.mean(), dtype=np.float64)


def _fit(
    features: np.ndarray,
    classes: np.ndarray,
    weights: np.ndarray,
    count: int,
    names: Sequence[str],
    rounds: int,
    params: dict[str, Any],
    bin_rows: np.ndarray | None = None,
) -> Any:
    import lightgbm as lgb

    objective = {"objective": "binary"} if count == 2 else {"num_class": count}
    reference = None
    if bin_rows is not None and not bin_rows.all():  # see BIN_COLUMN
        # With the training parameters, as lgb.train would bin these rows alone.
        reference = lgb.Dataset(
            features[bin_rows],
            feature_name=list(names),
            free_raw_data=True,
            params={**params, **objective, "verbosity": -1},
        )
    data = lgb.Dataset(
        features,
        label=classes,
        weight=_balanced_weights(classes, count, weights),
        feature_name=list(names),
        free_raw_data=True,
        params={"verbosity": -1},
        reference=reference,
    )
    return lgb.train({**params, **objective}, data, num_boost_round=rounds)


def _bin_rows(frame: pd.DataFrame) -> np.ndarray | None:
    return frame[BIN_COLUMN].fillna(True).to_numpy(dtype=bool) if BIN_COLUMN in frame else None


def _scope_rows(train: TrainingSet) -> np.ndarray:
    return scope_inputs(train.frame, train.causes.astype(np.float64))


def fit_temperature(raw_scores: np.ndarray, classes: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of held-out windows (grid + refine)."""

    def nll(t: float) -> float:
        probs = softmax(raw_scores / t)
        picked = probs[np.arange(len(classes)), classes]
        return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))

    grid = np.exp(np.linspace(math.log(0.25), math.log(8.0), 41))
    best = min(grid, key=nll)
    for step in (1.1, 1.02):
        candidates = [best / step, best, best * step]
        best = min(candidates, key=nll)
    return float(best)


def data_digest(paths: Sequence[str | Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(str(p) for p in paths):
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def fit_cause_booster(
    frame: pd.DataFrame, *, rounds: int = DEFAULT_ROUNDS, params: dict[str, Any] | None = None, seed: int = 7
) -> Any:
    """The cause booster alone, fit as `train_model` fits it (to score windows it left out)."""
    params = {**DEFAULT_PARAMS, **(params or {}), "seed": seed}
    train = teaching_windows(frame)
    features = feature_matrix(train.frame)
    n_causes = len(ROOT_CAUSES)
    return _fit(
        features, train.causes, train.weights, n_causes, FEATURE_NAMES, rounds, params, _bin_rows(train.frame)
    )


def train_model(
    frame: pd.DataFrame,
    *,
    window_s: float,
    window_intervals: float = WINDOW_INTERVALS,
    rounds: int = DEFAULT_ROUNDS,
    params: dict[str, Any] | None = None,
    training_info: dict[str, Any] | None = None,
    seed: int = 7,
) -> AttributionModel:
    """Fit cause and scope boosters on the teaching windows of `frame` (window_table's output)."""
    params = {**DEFAULT_PARAMS, **(params or {}), "seed": seed}
    train = teaching_windows(frame)
    features = feature_matrix(train.frame)
    bins = _bin_rows(train.frame)
    n_causes, n_scopes = len(ROOT_CAUSES), len(SCOPES)

    # Temperature from held-out incidents.
    incidents = train.frame["label_incident"].fillna(-1).to_numpy()
    temperature = 1.0
    if len(np.unique(incidents)) >= 10:
        fit_part, held_part = split_by_incident(
            train.frame.assign(_incident=incidents), "_incident", 0.25, seed
        )
        fit_idx, held_idx = fit_part.index.to_numpy(), held_part.index.to_numpy()
        present = np.unique(train.causes[fit_idx])
        if len(present) == n_causes and len(held_idx):
            probe = _fit(
                features[fit_idx],
                train.causes[fit_idx],
                train.weights[fit_idx],
                n_causes,
                FEATURE_NAMES,
                rounds,
                params,
                None if bins is None else bins[fit_idx],
            )
            raw = np.asarray(probe.predict(features[held_idx], raw_score=True), dtype=np.float64)
            temperature = fit_temperature(raw, train.causes[held_idx])

    gate_frame, gate_labels = gate_windows(frame)
    if gate_labels.min(initial=1) == 1:
        raise TrainingError("no healthy symptomatic window: the gate needs examples of noise")
    gate_weights = (
        gate_frame[WEIGHT_COLUMN].fillna(1.0).to_numpy(dtype=np.float64)
        if WEIGHT_COLUMN in gate_frame
        else np.ones(len(gate_labels))
    )
    gate_booster = _fit(
        gate_input_matrix(gate_frame),
        gate_labels,
        gate_weights,
        2,
        GATE_FEATURES,
        rounds,
        params,
        _bin_rows(gate_frame),
    )
    cause_booster = _fit(features, train.causes, train.weights, n_causes, FEATURE_NAMES, rounds, params, bins)
    scoped = train.teaches_scope
    scope_booster = _fit(
        _scope_rows(train)[scoped],
        train.scopes[scoped],
        train.weights[scoped],
        n_scopes,
        SCOPE_FEATURES,
        max(50, rounds // 2),
        params,
        None if bins is None else bins[scoped],
    )
    info = dict(training_info or {})
    info.update(
        {
            "windows": len(train.frame),
            "gate_windows": {"fault": int(gate_labels.sum()), "healthy": int((gate_labels == 0).sum())},
            "windows_per_cause": {c: int((train.causes == i).sum()) for i, c in enumerate(ROOT_CAUSES)},
            "windows_per_scope": {s: int((train.scopes[scoped] == i).sum()) for i, s in enumerate(SCOPES)},
            "incidents": len(np.unique(incidents[incidents >= 0])),
            "window_s": window_s,
            "rounds": rounds,
        }
    )
    metadata = ModelMetadata(
        feature_names=FEATURE_NAMES,
        causes=tuple(ROOT_CAUSES),
        scopes=tuple(SCOPES),
        scope_features=SCOPE_FEATURES,
        gate_features=GATE_FEATURES,
        gate_threshold=GATE_THRESHOLD,
        window_intervals=window_intervals,
        temperature=temperature,
        training=info,
        versions=versions(),
        params={k: v for k, v in params.items() if k != "verbosity"},
    )
    return AttributionModel(gate_booster, cause_booster, scope_booster, metadata)
