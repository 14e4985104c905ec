"""What the notebooks (notebooks/*.ipynb) run: the shipped recordings, their window tables, the
model trained and scored on them, feature importance, ablation, a tuning grid and per-window
errors. Notebooks only call these functions and plot, so everything they show is code that is
typed, tested and reused.

Recordings are found by what they are, not by their directory names: a recording's vantages
name its lab profile and split (otelprobe/lab/dataset/profiles.py), so new campaigns replace the shipped
ones without editing a notebook. Scoring follows DESIGN §6: the cases are the attributable
windows (warm, violating, symptomatic) labeled with a cause; metrics.py defines every number.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from otelprobe.attribution.aggregates import ERROR_CLASSES
from otelprobe.attribution.attribute import attributable, attribute, attributed, score_windows
from otelprobe.attribution.features import FEATURE_NAMES, feature_matrix
from otelprobe.attribution.metrics import AttributionScores, score_cases
from otelprobe.attribution.model import DEFAULT_PARAMS, DEFAULT_ROUNDS, AttributionModel
from otelprobe.attribution.otlp_files import TRACE_FILES
from otelprobe.attribution.table_cache import read_table_cached
from otelprobe.attribution.train import train_model
from otelprobe.causes import ROOT_CAUSES, SCOPES

if TYPE_CHECKING:
    import pandas as pd

    from otelprobe.attribution.dataset import WindowTable

CAUSE_INDEX: Final = {cause: i for i, cause in enumerate(ROOT_CAUSES)}
NO_INTENSITY: Final = "none"
"""The band of a fault without a magnitude (refused, blackhole, a bad certificate)."""


class ExperimentError(ValueError):
    """The recordings the notebooks need are missing or unrecognisable."""


@dataclass(frozen=True, slots=True)
class Recording:
    """One lab recording directory: its role (`profile`/`split`, from its vantage names), the lab
    environment it was recorded in (a digest of its vantage and target specs) and when."""

    name: str
    traces: Path
    labels: Path
    profile: str
    split: str
    environment: str
    started: str


@dataclass(frozen=True, slots=True)
class ShippedRecordings:
    """data/lab's recordings by role: train (every profile's train split: standard, wide, ...),
    held out (standard/eval), shifted (the eval splits of other profiles: other environments);
    `superseded`: recorded in an older lab environment than the newest recording of their
    profile and split; `unknown`: vantages that match no profile."""

    train: tuple[Recording, ...]
    held_out: tuple[Recording, ...]
    shifted: tuple[Recording, ...]
    superseded: tuple[Recording, ...]
    unknown: tuple[Recording, ...]

    def all(self) -> tuple[Recording, ...]:
        return self.train + self.held_out + self.shifted + self.superseded + self.unknown


def find_lab_dir(start: str | Path | None = None) -> Path:
    """`data/lab` in `start` (default: the working directory) or the nearest parent that has one,
    so notebooks run from the repository root and from notebooks/ alike."""
    here = Path(start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / "data" / "lab").is_dir():
            return directory / "data" / "lab"
    raise ExperimentError(f"no data/lab directory in {here} or above it: run from the otelprobe repository")


def read_recording(directory: Path) -> Recording | None:
    """The recording in `directory` (None without a traces file). Its role comes from the vantage
    names in scenario.yaml (lab/dataset/profiles.py's topologies); "" when they match none."""
    import yaml

    from otelprobe.lab.dataset.profiles import TOPOLOGIES

    traces = next((directory / f for f in TRACE_FILES if (directory / f).is_file()), None)
    if traces is None:
        return None
    scenario_path = directory / "scenario.yaml"
    loaded = yaml.safe_load(scenario_path.read_text()) if scenario_path.is_file() else None
    scenario: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
    vantages = {str(v.get("name")) for v in scenario.get("vantages") or [] if isinstance(v, dict)}
    profile, split = next(
        (
            (p, s)
            for (p, s), (known, _) in TOPOLOGIES.items()
            if vantages and vantages <= {str(v["name"]) for v in known}
        ),
        ("", ""),
    )
    spec = json.dumps([scenario.get("vantages"), scenario.get("targets")], sort_keys=True, default=str)
    environment = hashlib.sha256(spec.encode()).hexdigest()[:12]
    started = ""
    try:
        started = str(json.loads((directory / "lab.json").read_text()).get("started", ""))
    except (OSError, ValueError, AttributeError):
        pass  # no run metadata: sorts as the oldest
    return Recording(directory.name, traces, directory / "labels.jsonl", profile, split, environment, started)


def _newest_environment(recordings: list[Recording]) -> tuple[tuple[Recording, ...], tuple[Recording, ...]]:
    """(the recordings of the newest one's environment, the others)."""
    if not recordings:
        return (), ()
    newest = max(recordings, key=lambda r: (r.started, r.name))
    current = tuple(r for r in recordings if r.environment == newest.environment)
    return current, tuple(r for r in recordings if r.environment != newest.environment)


def shipped_recordings(lab_dir: str | Path | None = None) -> ShippedRecordings:
    """The recordings under `lab_dir` (default: `find_lab_dir()`) by role. Of each role only
    those recorded in the environment of its newest recording are used: a campaign recorded after
    the lab changed supersedes the older ones without anyone renaming or deleting them.

    Raises:
        ExperimentError: no training or no held-out recording.
    """
    from otelprobe.lab.dataset.profiles import TOPOLOGIES

    root = Path(lab_dir) if lab_dir is not None else find_lab_dir()
    found = [r for d in sorted(p for p in root.iterdir() if p.is_dir()) if (r := read_recording(d))]
    by_role = {
        role: _newest_environment([r for r in found if (r.profile, r.split) == role]) for role in TOPOLOGIES
    }
    roles = ShippedRecordings(
        train=tuple(r for (_, split), (current, _) in by_role.items() if split == "train" for r in current),
        held_out=by_role["standard", "eval"][0],
        shifted=tuple(
            r
            for (profile, split), (current, _) in by_role.items()
            if split == "eval" and profile != "standard"
            for r in current
        ),
        superseded=tuple(r for _, old in by_role.values() for r in old),
        unknown=tuple(r for r in found if not r.profile),
    )
    if not roles.train or not roles.held_out:
        raise ExperimentError(
            f"{root}: need a standard train and a standard eval recording, found "
            + (", ".join(f"{r.name} ({r.profile or '?'}/{r.split or '?'})" for r in found) or "none")
        )
    return roles


@dataclass(frozen=True, slots=True)
class Tables:
    train: WindowTable
    held_out: WindowTable


def load_tables(
    train: Sequence[Recording], held_out: Sequence[Recording], cache_dir: str | Path | None = None
) -> Tables:
    """The window tables of the training and the held-out recordings (table_cache.py caches them
    in `cache_dir` when given)."""
    return Tables(
        read_table_cached([r.traces for r in train], cache_dir),
        read_table_cached([r.traces for r in held_out], cache_dir),
    )


def feature_family(name: str) -> str:
    """The family of a model feature, for importance summaries and ablation."""
    if name.startswith(("vantage_", "target_")):
        return "cross-series"
    if name.startswith(("dominant_",)) or name.endswith(
        ("_uniformity", "_spread_ratio", "_delta_share", "_ratio_change")
    ):
        return "latency shapes"
    if name in ("stall_share", "shift_coherence", "connect_retry_share", "dns_retry_share"):
        return "latency shapes"
    if name.endswith(("_p50_mag", "_p50_rtt", "_present")) or name == "added_mag":
        return "latency magnitudes"
    error_shares = {f"{cls}_share" for cls in ERROR_CLASSES}
    if (
        name in error_shares
        or name == "success_ratio"
        or name.startswith(("detail_", "failed_in_", "status_"))
    ):
        return "error shares"
    return "payload, certificate, kind"


def feature_families() -> dict[str, tuple[str, ...]]:
    """Every family with its features, in FEATURE_NAMES order (together: every feature once)."""
    families: dict[str, list[str]] = {}
    for name in FEATURE_NAMES:
        families.setdefault(feature_family(name), []).append(name)
    return {family: tuple(names) for family, names in families.items()}


def without_features(frame: pd.DataFrame, names: Iterable[str]) -> pd.DataFrame:
    """A copy of `frame` with `names` set to NaN: LightGBM sees a feature that is always missing
    and can never split on it, so a model trained and scored on such copies is the model without
    those features. The scope model reads its inputs from the same columns and loses them too."""
    dropped = list(names)
    unknown = [n for n in dropped if n not in frame.columns]
    if unknown:
        raise ExperimentError(f"not columns of the window table: {', '.join(unknown)}")
    copy = frame.copy()
    copy[dropped] = np.nan
    return copy.copy()  # consolidated: each blanked column became a block of its own


def scoring_windows(frame: pd.DataFrame) -> np.ndarray:
    """The cases: attributable windows (warm, violating, symptomatic) whose label is a cause —
    the same windows for every model, so ablated and tuned models compare. evaluate.py's headline
    counts only those a model's gate passes (`predictions()`'s `attributed` column)."""
    return np.asarray(attributable(frame) & frame["label"].isin(list(ROOT_CAUSES)).to_numpy(), dtype=bool)


def _cause_sets(rows: pd.DataFrame) -> list[set[str]]:
    sets = []
    for label, causes in zip(rows["label"], rows["label_causes"], strict=True):
        names = {c for c in str(causes).split(",") if c in CAUSE_INDEX} if isinstance(causes, str) else set()
        sets.append(names | {str(label)})
    return sets


def score_model_on(model: AttributionModel, frame: pd.DataFrame) -> AttributionScores:
    """AC@k, scope AC@k, per-class scores, compound both@3 and ECE of `model` on `frame`'s cases."""
    rows = frame[scoring_windows(frame)]
    if rows.empty:
        raise ExperimentError("no attributable window labeled with a cause to score")
    scored = score_windows(model, rows)
    return score_cases(
        scored.causes,
        list(rows["label"]),
        true_cause_sets=_cause_sets(rows),
        true_scopes=list(rows["label_scope"].fillna("path")),
        predicted_scopes=np.asarray(SCOPES, dtype=object)[scored.scopes.argmax(axis=2)],
    )


def scores_row(scores: AttributionScores) -> dict[str, float]:
    """The headline numbers of `scores` as one table row."""
    return {
        "cases": scores.n_cases,
        "AC@1": scores.ac1,
        "AC@3": scores.ac3,
        "Avg@5": scores.avg5,
        "scope AC@1": scores.scope_ac1,
        "macro-F1": scores.macro_f1,
        "both@3": scores.compound_both_at3,
        "ECE": scores.ece,
    }


def ablation(
    tables: Tables,
    drops: Mapping[str, Sequence[str]],
    *,
    rounds: int = DEFAULT_ROUNDS,
    params: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Train without each group of features (`without_features`) and score on the held-out
    table; the first row is the model with every feature."""
    import pandas as pd

    rows = []
    for name, dropped in {"(none)": (), **drops}.items():
        train_frame = without_features(tables.train.frame, dropped)
        model = train_model(
            train_frame, window_s=tables.train.window_s, rounds=rounds, params=dict(params or {})
        )
        scores = score_model_on(model, without_features(tables.held_out.frame, dropped))
        rows.append({"dropped": name, "features dropped": len(dropped), **scores_row(scores)})
    return pd.DataFrame(rows)


def tuning_grid(tables: Tables, grid: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Train once per grid point (LightGBM params, plus `rounds`; what a point leaves out keeps
    model.DEFAULT_PARAMS) and score on the held-out table. One row per point: the effective value
    of every tuned parameter, the scores and the training time."""
    import pandas as pd

    points = [dict(point) for point in grid]
    tuned = list(dict.fromkeys(k for point in points for k in point if k != "rounds"))
    rows = []
    for point in points:
        params = {k: v for k, v in point.items() if k != "rounds"}
        rounds = int(point.get("rounds", DEFAULT_ROUNDS))
        started = time.perf_counter()
        model = train_model(tables.train.frame, window_s=tables.train.window_s, rounds=rounds, params=params)
        fit_s = time.perf_counter() - started
        scores = score_model_on(model, tables.held_out.frame)
        effective = {k: params.get(k, DEFAULT_PARAMS.get(k)) for k in tuned}
        row: dict[str, Any] = {"rounds": rounds, **effective, **scores_row(scores), "fit_s": fit_s}
        rows.append(row)
    return pd.DataFrame(rows)


def scope_cross_validation(
    table: WindowTable,
    dropped: Sequence[str] = (),
    *,
    folds: int = 4,
    rounds: int = DEFAULT_ROUNDS,
) -> float:
    """Scope accuracy for the true cause, by `folds`-fold cross-validation on `table` split by
    incident (scikit-learn's GroupKFold; a healthy window is grouped with its series' minute):
    each fold's model (`train_model`, the features in `dropped` removed as `without_features`
    does) gives the scope of the labeled cause on the left-out cases (`scoring_windows`). What the
    training recordings alone say about a scope input, before any held-out campaign is looked at."""
    from sklearn.model_selection import GroupKFold

    frame = without_features(table.frame, dropped).reset_index(drop=True)
    minute = (frame["window_start_ns"] // 60_000_000_000).astype(str)
    series = frame["target"].astype(str) + "|" + frame["vantage"].astype(str) + "|" + minute
    groups = np.where(
        frame["label_incident"].notna(), "incident " + frame["label_incident"].astype(str), series
    )
    cases = scoring_windows(frame)
    scope_index = {scope: i for i, scope in enumerate(SCOPES)}
    hits: list[np.ndarray] = []
    for fit_rows, test_rows in GroupKFold(folds).split(frame, groups=groups):
        model = train_model(frame.iloc[fit_rows], window_s=table.window_s, rounds=rounds)
        rows = frame.iloc[test_rows][cases[test_rows]]
        scopes = model.scopes_for_every_cause(rows)
        causes = rows["label"].map(CAUSE_INDEX).to_numpy(dtype=np.int64)
        predicted = scopes[np.arange(len(rows)), causes].argmax(axis=1)
        truth = rows["label_scope"].fillna("path").map(scope_index).to_numpy(dtype=np.int64)
        hits.append(predicted == truth)
    return float(np.concatenate(hits).mean())


def gain_importance(model: AttributionModel) -> pd.Series:
    """Total split gain per feature in the cause booster, largest first."""
    import pandas as pd

    gain = model.cause_booster.feature_importance(importance_type="gain")
    series = pd.Series(gain, index=list(model.metadata.feature_names), name="gain")
    return series.sort_values(ascending=False)


def shap_importance(model: AttributionModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Mean |SHAP| of every feature (rows) towards every cause's score (columns) over `frame`'s
    cases: which features move which cause."""
    import pandas as pd

    rows = frame[scoring_windows(frame)]
    contributions = model.cause_contributions(feature_matrix(rows))[:, :, :-1]  # drop the bias
    mean_abs = np.abs(contributions).mean(axis=0).T
    return pd.DataFrame(mean_abs, index=list(model.metadata.feature_names), columns=list(ROOT_CAUSES))


def predictions(model: AttributionModel, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per case: its truth, whether the model's gate attributes it, the top-1 cause and
    score, the rank and score of the true cause (ties counted against the model, as metrics.py
    does) and the scope predicted for it."""
    rows = frame[scoring_windows(frame)].reset_index(drop=True)
    scored = score_windows(model, rows)
    n = len(rows)
    truth = rows["label"].map(CAUSE_INDEX).to_numpy(dtype=np.int64)
    true_score = scored.causes[np.arange(n), truth]
    top = scored.causes.argmax(axis=1)
    scope_of_truth = np.asarray(SCOPES, dtype=object)[scored.scopes[np.arange(n), truth].argmax(axis=1)]
    context = ["target", "vantage", "window_start_ns", "window_end_ns", "n", "n_fail", "violating_slos"]
    labels = ["label", "label_scope", "label_causes", "label_incident"]
    out = rows[context + labels].copy()
    out["attributed"] = attributed(model, rows)  # False: the model's gate took it for noise
    out["predicted"] = np.asarray(ROOT_CAUSES, dtype=object)[top]
    out["predicted_score"] = scored.causes[np.arange(n), top]
    out["true_score"] = true_score
    out["true_rank"] = (scored.causes >= true_score[:, None]).sum(axis=1)
    out["predicted_is_a_cause"] = [  # compound windows: the top answer may be the other true cause
        cause in causes for cause, causes in zip(out["predicted"], _cause_sets(rows), strict=True)
    ]
    out["true_cause_scope"] = scope_of_truth
    out["scope_right"] = scope_of_truth == rows["label_scope"].fillna("path").to_numpy()
    return out


def misattributions(model: AttributionModel, frame: pd.DataFrame, limit: int = 20) -> pd.DataFrame:
    """The `limit` most confident wrong top-1 answers with the evidence attribute() gives for the
    predicted cause and, when it ranks in the top 3, for the true one (none for a window the
    model's gate does not attribute: see the `attributed` column)."""
    import pandas as pd

    pred = predictions(model, frame)
    wrong = pred[pred["true_rank"] > 1].sort_values("predicted_score", ascending=False).head(limit)
    if wrong.empty:
        return wrong.assign(predicted_evidence=[], true_evidence=[])
    keys = ["target", "vantage", "window_start_ns"]
    rows = frame.merge(wrong[keys], on=keys, how="inner")
    evidence: dict[tuple[str, str, int], tuple[str, str]] = {}
    for record in attribute(model, rows):
        said = {c.cause: "; ".join(e.text for e in c.evidence) for c in record.causes}
        key = (record.target, record.vantage, record.window_start_ns)
        label = wrong.set_index(keys).loc[key, "label"]
        evidence[key] = (said[record.causes[0].cause], said.get(str(label), ""))
    texts = [evidence.get(k, ("", "")) for k in zip(*(wrong[c] for c in keys), strict=True)]
    columns = pd.DataFrame(texts, columns=["predicted_evidence", "true_evidence"], index=wrong.index)
    return pd.concat([wrong, columns], axis=1)


def magnitude_band(fault: str, magnitude: float | None) -> str:
    """Where a magnitude lies in its recipe's range (lab/dataset/generator.py): subtle, low, medium, high,
    gross — for recordings whose labels predate the `band` field; NO_INTENSITY without one."""
    import math

    from otelprobe.lab.dataset.generator import MAGNITUDE_LEVELS, RECIPES
    from otelprobe.lab.scenario import BANDS

    recipe = next((r for rs in RECIPES.values() for r in rs if r.kind == fault), None)
    if recipe is None or recipe.magnitude is None or magnitude is None or not magnitude > 0:
        return NO_INTENSITY
    low, high = recipe.magnitude  # a rate range runs from faint (high) to gross (low): logs handle both
    position = (math.log(magnitude) - math.log(low)) / (math.log(high) - math.log(low))
    if position < 0:
        return "subtle"
    return BANDS[1 + min(int(position * MAGNITUDE_LEVELS), MAGNITUDE_LEVELS - 1)]


def read_incidents(recordings: Sequence[Recording]) -> pd.DataFrame:
    """One row per (incident, affected target, vantage) of the recordings' labels.jsonl, with the
    fault, its magnitude, its band and its time span."""
    import pandas as pd

    from otelprobe.lab.dataset.recording import read_labels

    rows = []
    for recording in recordings:
        for label in read_labels(recording.labels):
            band = label.get("band") or magnitude_band(str(label.get("fault")), label.get("magnitude"))
            for target, vantage in label.get("affected") or []:
                rows.append(
                    {
                        "recording": recording.name,
                        "incident": float(label["incident"]),
                        "target": target,
                        "vantage": vantage,
                        "fault": label.get("fault"),
                        "magnitude": label.get("magnitude"),
                        "band": band,
                        "start_ns": int(label["start_unix_nano"]),
                        "end_ns": int(label["end_unix_nano"]),
                    }
                )
    return pd.DataFrame(rows)


def with_incidents(pred: pd.DataFrame, incidents: pd.DataFrame) -> pd.DataFrame:
    """`pred` (predictions()) joined to the incident of each window: same incident id and series,
    and the incident's time span overlapping the window (ids repeat across recordings)."""
    joined = pred.reset_index().merge(
        incidents,
        left_on=["label_incident", "target", "vantage"],
        right_on=["incident", "target", "vantage"],
        how="left",
    )
    overlaps = joined["start_ns"].isna() | (
        (joined["start_ns"] < joined["window_end_ns"]) & (joined["end_ns"] > joined["window_start_ns"])
    )
    joined = joined[overlaps].drop_duplicates("index").set_index("index").sort_index()
    joined.index.name = None
    return joined


def errors_by_band(pred: pd.DataFrame, incidents: pd.DataFrame) -> pd.DataFrame:
    """Cases, AC@1, AC@3 and scope accuracy per cause and magnitude band."""
    joined = with_incidents(pred, incidents).assign(
        top1=lambda f: f["true_rank"] == 1, top3=lambda f: f["true_rank"] <= 3
    )
    joined["band"] = joined["band"].fillna(NO_INTENSITY)
    grouped = joined.groupby(["label", "band"], sort=True)
    return grouped.agg(
        cases=("top1", "size"),
        ac1=("top1", "mean"),
        ac3=("top3", "mean"),
        scope_right=("scope_right", "mean"),
    ).reset_index()
