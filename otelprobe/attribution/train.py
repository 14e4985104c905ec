"""Fit the attribution model on labeled lab windows.

Which windows teach the cause model: warm series (a baseline exists), labeled with a cause (at
least half of the window's probes overlapped the fault) and symptomatic (some phase off its
baseline or a failed probe) — a fault the window could not see teaches nothing about its shape.
The scope model learns from the same windows with their true cause as input.

The temperature that calibrates the cause scores is fitted on held-out incidents (a split by
incident, never by window), then both boosters are refit on all the data with the same rounds.

With `members` k > 1 every booster (the calibration probe's too) is the mean of k boosters fit
with seeds `seed`, `seed + 1`, ... (booster_mean.py): one seed's bagging and feature sampling move
held-out AC@1 by a point or two, their mean far less. The fits run on a thread pool, one LightGBM
thread each (LightGBM releases the GIL while it trains).
What that split measured (the held-out incidents' cause AC@1, AC@3, ECE and log-loss, of the
booster fit on the other incidents) is recorded in the metadata's `metrics`, with the counts of
what taught the model; no extra cross-validation is run.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from otelprobe.attribution.booster_mean import mean_booster
from otelprobe.attribution.features import FEATURE_NAMES, feature_matrix
from otelprobe.attribution.labels import AMBIGUOUS, HEALTHY
from otelprobe.attribution.metrics import score_cases
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
    window: np.ndarray  # which teaching window each row is (a compound window has one row per cause)


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
    window = np.repeat(np.arange(len(repeat)), repeat)
    return TrainingSet(expanded, causes, scopes, weights, teaches_scope, window)


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


class _MemberFits:
    """Fits each booster as the mean of `members` seeds, every fit a job on one thread pool."""

    def __init__(self, members: int, threads: int | None) -> None:
        if members < 1:
            raise TrainingError("members must be at least 1")
        self.members = members
        self.threads = max(1, threads if threads is not None else len(os.sched_getaffinity(0)))
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="lightgbm-fit")

    def submit(
        self,
        features: np.ndarray,
        classes: np.ndarray,
        weights: np.ndarray,
        count: int,
        names: Sequence[str],
        rounds: int,
        params: dict[str, Any],
        bin_rows: np.ndarray | None,
    ) -> Callable[[], Any]:
        """`_fit` once per member's seed, queued; the returned call waits for them and averages."""
        futures: list[Future[Any]] = [
            self.pool.submit(
                _fit, features, classes, weights, count, names, rounds, {**params, "seed": seed}, bin_rows
            )
            for seed in range(int(params["seed"]), int(params["seed"]) + self.members)
        ]
        return lambda: mean_booster([future.result() for future in futures])

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _bin_rows(frame: pd.DataFrame) -> np.ndarray | None:
    return frame[BIN_COLUMN].fillna(True).to_numpy(dtype=bool) if BIN_COLUMN in frame else None


def _scope_rows(train: TrainingSet) -> np.ndarray:
    return scope_inputs(train.frame, train.causes.astype(np.float64))


def fit_temperature(raw_scores: np.ndarray, classes: np.ndarray, windows: np.ndarray | None = None) -> float:
    """The temperature minimising the negative log-likelihood of held-out windows (grid + refine).

    A window is right when any of its true causes is the one named (`otelprobe evaluate` counts a
    compound window so), so its likelihood is the score of its set of causes: the sum over its
    rows (`windows` gives each row's window; rows of one window share their raw scores). Scored
    row by row instead, a compound window asks for two causes at once and pulls the temperature
    up: scores flatter than the single-cause windows warrant.
    """
    row_windows = np.arange(len(classes)) if windows is None else np.asarray(windows)
    _, first, inverse = np.unique(row_windows, return_index=True, return_inverse=True)
    truth = np.zeros((len(first), raw_scores.shape[1]), dtype=bool)
    truth[inverse, classes] = True
    raw = raw_scores[first]

    def nll(t: float) -> float:
        picked = (softmax(raw / t) * truth).sum(axis=1)
        return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))

    grid = np.exp(np.linspace(math.log(0.25), math.log(8.0), 41))
    best = min(grid, key=nll)
    for step in (1.1, 1.02):
        candidates = [best / step, best, best * step]
        best = min(candidates, key=nll)
    return float(best)


VALIDATION_SHARE: Final = 0.25
"""The share of incidents held out to fit the temperature (and measured: `validation_metrics`)."""


def validation_metrics(
    raw_scores: np.ndarray, temperature: float, train: TrainingSet, rows: np.ndarray
) -> dict[str, Any]:
    """What the calibration split measured: the held-out teaching windows (`rows` of `train`),
    scored by the booster fit on the other incidents, before and after the temperature.

    A compound window is one case, right at AC@k when any of its causes ranks within k (as
    `otelprobe evaluate` counts it), and its log-loss is that of the summed score of its causes
    (the likelihood the temperature is fitted to). NaN figures (no compound window) become None.
    """
    first: dict[int, int] = {}
    cause_sets: dict[int, list[str]] = {}
    for position, (window, cause) in enumerate(zip(train.window[rows], train.causes[rows], strict=True)):
        first.setdefault(int(window), position)
        cause_sets.setdefault(int(window), []).append(ROOT_CAUSES[int(cause)])
    windows = list(first)
    sets = [cause_sets[w] for w in windows]
    incidents = train.frame["label_incident"].fillna(-1).to_numpy()[rows]
    result: dict[str, Any] = {
        "split": {"by": "incident", "held_out_share": VALIDATION_SHARE},
        "incident_ids": len(np.unique(incidents[incidents >= 0])),
        "windows": len(windows),
        "rows": len(rows),
        "temperature": temperature,
    }
    for name, t in (("uncalibrated", 1.0), ("calibrated", temperature)):
        row_probs = softmax(raw_scores / t)
        probs = row_probs[[first[w] for w in windows]]
        # The true cause of a compound window: whichever of its causes ranks highest.
        truth = [max(s, key=lambda c: float(p[CAUSE_INDEX[c]])) for s, p in zip(sets, probs, strict=True)]
        scores = score_cases(probs, truth, true_cause_sets=sets)
        # Each window's likelihood is the score of its set of causes, as the temperature is fitted.
        picked = np.array(
            [sum(float(p[CAUSE_INDEX[c]]) for c in s) for s, p in zip(sets, probs, strict=True)]
        )
        result[name] = {
            "cause_ac1": scores.ac1,
            "cause_ac3": scores.ac3,
            "macro_f1": scores.macro_f1,
            "ece": scores.ece,
            "log_loss": float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0)))),
            "compound_windows": scores.n_compound,
            "compound_both_at3": scores.compound_both_at3,
        }
    finite: dict[str, Any] = _finite_or_none(result)
    return finite


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def file_sha256(path: str | Path) -> str:
    """One recording's SHA-256 (hex), as `training.recording_sha256` stores it."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def data_digest(paths: Sequence[str | Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(str(p) for p in paths):
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def fit_cause_booster(
    frame: pd.DataFrame,
    *,
    rounds: int = DEFAULT_ROUNDS,
    params: dict[str, Any] | None = None,
    seed: int = 7,
    members: int = 1,
    threads: int | None = None,
) -> Any:
    """The cause booster alone, fit as `train_model` fits it (to score windows it left out)."""
    params = {**DEFAULT_PARAMS, **(params or {}), "seed": seed}
    train = teaching_windows(frame)
    features = feature_matrix(train.frame)
    fits = _MemberFits(members, threads)
    try:
        booster = fits.submit(
            features,
            train.causes,
            train.weights,
            len(ROOT_CAUSES),
            FEATURE_NAMES,
            rounds,
            params,
            _bin_rows(train.frame),
        )
        return booster()
    finally:
        fits.close()


def train_model(
    frame: pd.DataFrame,
    *,
    window_s: float,
    window_intervals: float = WINDOW_INTERVALS,
    rounds: int = DEFAULT_ROUNDS,
    params: dict[str, Any] | None = None,
    training_info: dict[str, Any] | None = None,
    seed: int = 7,
    members: int = 1,
    threads: int | None = None,
) -> AttributionModel:
    """Fit the gate, cause and scope boosters on `frame` (window_table's output), each the mean of
    `members` seeds (module docstring), on `threads` threads (default: the cores this process may use)."""
    if members < 1:
        raise TrainingError("members must be at least 1")
    params = {**DEFAULT_PARAMS, **(params or {}), "seed": seed}
    train = teaching_windows(frame)
    features = feature_matrix(train.frame)
    bins = _bin_rows(train.frame)
    n_causes, n_scopes = len(ROOT_CAUSES), len(SCOPES)
    gate_frame, gate_labels = gate_windows(frame)
    if gate_labels.min(initial=1) == 1:
        raise TrainingError("no healthy symptomatic window: the gate needs examples of noise")
    gate_weights = (
        gate_frame[WEIGHT_COLUMN].fillna(1.0).to_numpy(dtype=np.float64)
        if WEIGHT_COLUMN in gate_frame
        else np.ones(len(gate_labels))
    )
    scoped = train.teaches_scope

    # The temperature comes from held-out incidents: a probe fit on the others.
    incidents = train.frame["label_incident"].fillna(-1).to_numpy()
    temperature = 1.0
    validation: dict[str, Any] = {"skipped": "fewer than 10 incidents, or a cause missing from the fit part"}
    held_idx = np.zeros(0, dtype=np.int64)
    fits = _MemberFits(members, threads)
    try:
        probe = None
        if len(np.unique(incidents)) >= 10:
            fit_part, held_part = split_by_incident(
                train.frame.assign(_incident=incidents), "_incident", VALIDATION_SHARE, seed
            )
            fit_idx, held_idx = fit_part.index.to_numpy(), held_part.index.to_numpy()
            if len(np.unique(train.causes[fit_idx])) == n_causes and len(held_idx):
                probe = fits.submit(
                    features[fit_idx],
                    train.causes[fit_idx],
                    train.weights[fit_idx],
                    n_causes,
                    FEATURE_NAMES,
                    rounds,
                    params,
                    None if bins is None else bins[fit_idx],
                )
        cause = fits.submit(
            features, train.causes, train.weights, n_causes, FEATURE_NAMES, rounds, params, bins
        )
        scope = fits.submit(
            _scope_rows(train)[scoped],
            train.scopes[scoped],
            train.weights[scoped],
            n_scopes,
            SCOPE_FEATURES,
            max(50, rounds // 2),
            params,
            None if bins is None else bins[scoped],
        )
        gate = fits.submit(
            gate_input_matrix(gate_frame),
            gate_labels,
            gate_weights,
            2,
            GATE_FEATURES,
            rounds,
            params,
            _bin_rows(gate_frame),
        )
        if probe is not None:
            raw = np.asarray(probe().predict(features[held_idx], raw_score=True), dtype=np.float64)
            temperature = fit_temperature(raw, train.causes[held_idx], train.window[held_idx])
            validation = validation_metrics(raw, temperature, train, held_idx)
        gate_booster, cause_booster, scope_booster = gate(), cause(), scope()
    finally:
        fits.close()
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
            "members": members,
            # The series the model saw: `otelprobe evaluate` warns when held-out data shares one.
            "targets": sorted({str(t) for t in frame["target"].dropna()}) if "target" in frame else [],
            "vantages": sorted({str(v) for v in frame["vantage"].dropna()}) if "vantage" in frame else [],
        }
    )
    # Incident ids are a recording's own (two recordings both have an incident 3), so these
    # count distinct ids, not incidents; a compound window is one window but a row per cause.
    metrics = {
        "training": {
            "teaching_windows": int(train.window.max()) + 1,
            "teaching_rows": len(train.frame),
            "incident_ids": info["incidents"],
            "rows_per_cause": info["windows_per_cause"],
            "scope_rows_per_scope": info["windows_per_scope"],
            "gate_windows": info["gate_windows"],
        },
        "validation": validation,
    }
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
        metrics=metrics,
        versions=versions(),
        params={k: v for k, v in params.items() if k != "verbosity"},
    )
    return AttributionModel(gate_booster, cause_booster, scope_booster, metadata)
