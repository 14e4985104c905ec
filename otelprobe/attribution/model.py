"""The attribution model: LightGBM boosters saved as LightGBM's text format plus JSON metadata.

Three boosters, all on window features (features.py):
- the gate, binary: does this window show a fault at all, or only the series' own noise (a lone
  backend think-time spike, resolver jitter)? An SLO violation is attributed only when the gate
  agrees, so noise that happens to burn an objective is not explained as a cause;
- the cause model, multiclass over DESIGN §5's 11 causes, trained on windows where a fault was on
  and visible; its probabilities are calibrated by one temperature fitted on held-out incidents,
  so scores sum to 1 and a 0.8 means right about 8 times in 10;
- the scope model, multiclass over vantage / target / path, from cross-series evidence plus the
  candidate cause, so every cause gets its own most likely scope.

Files: `<stem>.gate.txt`, `<stem>.cause.txt`, `<stem>.scope.txt` (Booster.save_model text) and
`<stem>.json` (feature schema, classes, window, training-data digest, metrics, versions). Never
pickle. `load_model` checks the schema against this code's FEATURE_NAMES and refuses a mismatch
with a clear message.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from otelprobe import __version__
from otelprobe.attribution.features import FEATURE_NAMES
from otelprobe.attribution.scope_evidence import (
    CAUSE_EVIDENCE_FEATURES,
    SAME_WINDOW_EVIDENCE_FEATURES,
    column_of,
)
from otelprobe.causes import ROOT_CAUSES, SCOPES

if TYPE_CHECKING:
    import lightgbm as lgb
    import pandas as pd

FORMAT_VERSION: Final = 1
LEGACY_SCOPE_FEATURES: Final[tuple[str, ...]] = (
    "vantage_fail_share",
    "vantage_slow_share",
    "vantage_connect_share",
    "vantage_dns_share",
    "vantage_ttfb_share",
    "vantage_tls_share",
    "target_fail_share",
    "target_slow_share",
    "target_connect_share",
    "target_dns_share",
    "target_ttfb_share",
    "target_tls_share",
    "vantage_fail_recent_share",
    "vantage_slow_recent_share",
    "target_fail_recent_share",
    "target_slow_recent_share",
    "success_ratio",
    "added_mag",
    "kind_code",
    "cause_code",
)
"""The scope inputs of models trained before the cause-specific neighbour shares; such a model
still loads and scores exactly as it did."""
SAME_WINDOW_SCOPE_FEATURES: Final[tuple[str, ...]] = (
    *LEGACY_SCOPE_FEATURES[:-1],
    *SAME_WINDOW_EVIDENCE_FEATURES,
    "cause_code",
)
"""The scope inputs of models trained before the cause-specific shares over recent windows; such a
model still loads and scores exactly as it did."""
SCOPE_FEATURES: Final[tuple[str, ...]] = (
    *LEGACY_SCOPE_FEATURES[:-1],
    *CAUSE_EVIDENCE_FEATURES,
    "cause_code",
)
"""The scope model's inputs: neighbours' symptoms, the share of neighbours showing the candidate
cause's own symptom in this window and over the last three (scope_evidence.py), how bad this
series is, and the candidate cause."""
KNOWN_SCOPE_FEATURES: Final = (SCOPE_FEATURES, SAME_WINDOW_SCOPE_FEATURES, LEGACY_SCOPE_FEATURES)

GATE_FEATURES: Final[tuple[str, ...]] = FEATURE_NAMES + tuple(
    f"{phase}_p50_z" for phase in ("dns", "connect", "tls", "request", "ttfb", "transfer", "other", "total")
)
"""The gate's inputs: the cause schema plus how far each phase is from the series' own noise
(robust z-scores against its baseline spread)."""
GATE_THRESHOLD: Final = 0.5

DEFAULT_PARAMS: Final[dict[str, Any]] = {
    "objective": "multiclass",
    "learning_rate": 0.08,
    "num_leaves": 15,
    "min_data_in_leaf": 10,
    "feature_fraction": 0.5,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_threads": 1,  # deterministic, and OpenMP spinning on a shared 2-core box costs 5x
    "deterministic": True,
    "verbosity": -1,
    "seed": 7,
}
DEFAULT_ROUNDS: Final = 150
DEFAULT_MEMBERS: Final = 3
"""Seeds averaged into each booster by `otelprobe train` (train.py; booster_mean.py)."""


class ModelError(ValueError):
    """A model file that cannot be used: missing, unreadable, or built for another schema."""


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    feature_names: tuple[str, ...]
    causes: tuple[str, ...]
    scopes: tuple[str, ...]
    scope_features: tuple[str, ...]
    gate_features: tuple[str, ...]
    gate_threshold: float
    window_intervals: float
    temperature: float
    training: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "feature_names": list(self.feature_names),
            "causes": list(self.causes),
            "scopes": list(self.scopes),
            "scope_features": list(self.scope_features),
            "gate_features": list(self.gate_features),
            "gate_threshold": self.gate_threshold,
            "window_intervals": self.window_intervals,
            "temperature": self.temperature,
            "training": dict(self.training),
            "metrics": dict(self.metrics),
            "versions": dict(self.versions),
            "params": dict(self.params),
        }


@dataclass(slots=True)
class AttributionModel:
    gate_booster: lgb.Booster
    cause_booster: lgb.Booster
    scope_booster: lgb.Booster
    metadata: ModelMetadata
    booster_sha256: tuple[str, str, str] | None = field(default=None, repr=False)
    """The SHA-256 of the gate, cause and scope boosters' text: the files' (as the metadata
    vouches for them) once loaded; worked out from the boosters on first use otherwise."""

    def digest(self) -> str:
        """What tells this model from another trained on the same data: a digest of its three
        boosters' text (identical to their saved files) and its calibration."""
        if self.booster_sha256 is None:
            gate, cause, scope = (
                hashlib.sha256(b.model_to_string().encode()).hexdigest()
                for b in (self.gate_booster, self.cause_booster, self.scope_booster)
            )
            self.booster_sha256 = (gate, cause, scope)
        parts = [*self.booster_sha256, repr(self.metadata.temperature), repr(self.metadata.gate_threshold)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def fault_probability(self, gate_inputs: np.ndarray) -> np.ndarray:
        """P(the window shows a fault, not noise) per row of `gate_input_matrix`."""
        return np.asarray(self.gate_booster.predict(gate_inputs), dtype=np.float64)

    def cause_scores(self, features: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n × 11, rows sum to 1) in ROOT_CAUSES order."""
        raw = np.asarray(self.cause_booster.predict(features, raw_score=True), dtype=np.float64)
        return softmax(raw / self.metadata.temperature)

    def cause_contributions(self, features: np.ndarray) -> np.ndarray:
        """SHAP values from LightGBM itself: n × 11 × (features + 1), the last column the bias."""
        flat = np.asarray(self.cause_booster.predict(features, pred_contrib=True), dtype=np.float64)
        return flat.reshape(
            features.shape[0], len(self.metadata.causes), len(self.metadata.feature_names) + 1
        )

    def scopes_for_every_cause(self, windows: pd.DataFrame | np.ndarray) -> np.ndarray:
        """n × 11 × 3 scope probabilities: the scope of each candidate cause. `windows` is a window
        table (each cause's row gets that cause's neighbour evidence), or a `scope_inputs` matrix
        (rows repeated with only the cause changed: the cause-specific evidence stays missing)."""
        n_causes = len(self.metadata.causes)
        features = self.metadata.scope_features
        if isinstance(windows, np.ndarray):
            n = windows.shape[0]
            stacked = np.repeat(windows, n_causes, axis=0)
            stacked[:, len(features) - 1] = np.tile(np.arange(n_causes), n)
        else:
            n = len(windows)
            stacked = scope_inputs_per_cause(windows, n_causes, features).reshape(n * n_causes, len(features))
        probs = np.asarray(self.scope_booster.predict(stacked), dtype=np.float64)
        return probs.reshape(n, n_causes, len(self.metadata.scopes))

    def save(self, stem: str | Path) -> tuple[Path, Path, Path, Path]:
        base = Path(stem)
        base.parent.mkdir(parents=True, exist_ok=True)
        gate_path = base.with_name(base.name + ".gate.txt")
        cause_path = base.with_name(base.name + ".cause.txt")
        scope_path = base.with_name(base.name + ".scope.txt")
        meta_path = base.with_name(base.name + ".json")
        self.gate_booster.save_model(str(gate_path))
        self.cause_booster.save_model(str(cause_path))
        self.scope_booster.save_model(str(scope_path))
        meta = self.metadata.to_json()
        meta["files"] = {
            "gate": {"path": gate_path.name, "sha256": _sha256(gate_path)},
            "cause": {"path": cause_path.name, "sha256": _sha256(cause_path)},
            "scope": {"path": scope_path.name, "sha256": _sha256(scope_path)},
        }
        self.booster_sha256 = (
            meta["files"]["gate"]["sha256"],
            meta["files"]["cause"]["sha256"],
            meta["files"]["scope"]["sha256"],
        )
        meta_path.write_text(json.dumps(meta, indent=2, sort_keys=False, allow_nan=False) + "\n")
        return gate_path, cause_path, scope_path, meta_path


def softmax(raw: np.ndarray) -> np.ndarray:
    shifted = raw - raw.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float64)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stem(path: str | Path) -> Path:
    """`models/default`, `models/default.json` and `models/default.cause.txt` all name one model."""
    p = Path(path)
    for suffix in (".gate.txt", ".cause.txt", ".scope.txt", ".json"):
        if p.name.endswith(suffix):
            return p.with_name(p.name[: -len(suffix)])
    return p


def load_model(path: str | Path) -> AttributionModel:
    """Load a model saved by `AttributionModel.save`, checking files, digests and the schema."""
    import lightgbm as lgb

    stem = _stem(path)
    meta_path = stem.with_name(stem.name + ".json")
    meta = _read_metadata(meta_path)
    _check_schema(meta_path, "feature_names", meta.get("feature_names"), FEATURE_NAMES)
    _check_schema(meta_path, "causes", meta.get("causes"), ROOT_CAUSES)
    _check_schema(meta_path, "scopes", meta.get("scopes"), SCOPES)
    found_scope = meta.get("scope_features")
    if not any(found_scope == list(known) for known in KNOWN_SCOPE_FEATURES):
        _check_schema(meta_path, "scope_features", found_scope, SCOPE_FEATURES)
    _check_schema(meta_path, "gate_features", meta.get("gate_features"), GATE_FEATURES)
    boosters, digests = [], []
    for role in ("gate", "cause", "scope"):
        entry = meta.get("files", {}).get(role, {})
        file = meta_path.with_name(str(entry.get("path", f"{stem.name}.{role}.txt")))
        if not file.is_file():
            raise ModelError(f"{file}: the {role} model named by {meta_path.name} is missing")
        if not entry.get("sha256"):
            # LightGBM aborts the process on some damaged texts instead of raising: load only
            # what the metadata vouches for.
            raise ModelError(
                f"{file}: {meta_path.name} gives no sha256 for it; refusing an unverified model file"
            )
        if _sha256(file) != entry["sha256"]:
            raise ModelError(
                f"{file}: contents differ from the sha256 in {meta_path.name} (edited or truncated?)"
            )
        try:
            booster = lgb.Booster(model_file=str(file))
        except lgb.basic.LightGBMError as exc:
            raise ModelError(f"{file}: not a LightGBM text model: {exc}") from None
        boosters.append(booster)
        digests.append(str(entry["sha256"]))
    gate_booster, cause_booster, scope_booster = boosters
    if cause_booster.num_feature() != len(FEATURE_NAMES) or cause_booster.feature_name() != list(
        FEATURE_NAMES
    ):
        raise ModelError(f"{stem}.cause.txt: its features differ from the metadata's feature_names")
    metadata = ModelMetadata(
        feature_names=tuple(meta["feature_names"]),
        causes=tuple(meta["causes"]),
        scopes=tuple(meta["scopes"]),
        scope_features=tuple(meta["scope_features"]),
        gate_features=tuple(meta["gate_features"]),
        gate_threshold=float(meta.get("gate_threshold", GATE_THRESHOLD)),
        window_intervals=float(meta.get("window_intervals", 2.0)),
        temperature=float(meta.get("temperature", 1.0)),
        training=meta.get("training", {}),
        metrics=meta.get("metrics", {}),
        versions=meta.get("versions", {}),
        params=meta.get("params", {}),
    )
    if not (math.isfinite(metadata.temperature) and metadata.temperature > 0):
        raise ModelError(f"{meta_path}: temperature must be a positive number")
    if not 0.0 <= metadata.gate_threshold <= 1.0:
        raise ModelError(f"{meta_path}: gate_threshold must be between 0 and 1")
    return AttributionModel(
        gate_booster,
        cause_booster,
        scope_booster,
        metadata,
        booster_sha256=(digests[0], digests[1], digests[2]),
    )


def record_metrics(path: str | Path, updates: Mapping[str, Any]) -> Path:
    """Merge `updates` into a saved model's metadata `metrics` (e.g. held-out figures measured
    after training: `otelprobe evaluate --record-in-model`); nothing else in the files changes.

    A key whose old and new values are both objects is merged one level down (`held_out` keeps
    the campaigns not named again); any other key is replaced. The boosters and their digests are
    untouched, so the model loads and predicts exactly as before.

    Returns:
        The metadata file written.

    Raises:
        ModelError: the metadata is missing, unreadable or not of this format.
    """
    stem = _stem(path)
    meta_path = stem.with_name(stem.name + ".json")
    meta = _read_metadata(meta_path)
    metrics = dict(meta.get("metrics") or {})
    for key, value in updates.items():
        old = metrics.get(key)
        metrics[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, Mapping) else value
    meta["metrics"] = metrics
    text = json.dumps(meta, indent=2, sort_keys=False, allow_nan=False) + "\n"
    partial = meta_path.with_name(meta_path.name + ".partial")
    partial.write_text(text)
    partial.replace(meta_path)  # a reader sees the old file or the new one, never half of one
    return meta_path


def _read_metadata(meta_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{meta_path}: no such model metadata file") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{meta_path}: unreadable model metadata: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{meta_path}: not an otelprobe model metadata file of format {FORMAT_VERSION}")
    return meta


def _check_schema(meta_path: Path, key: str, found: object, expected: Sequence[str]) -> None:
    if found == list(expected):
        return
    if not isinstance(found, list):
        raise ModelError(f"{meta_path}: `{key}` is missing or not a list")
    missing = [name for name in expected if name not in found]
    extra = [name for name in found if name not in expected]
    detail = []
    if missing:
        detail.append(f"missing {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if extra:
        detail.append(f"unknown {', '.join(extra[:5])}{' …' if len(extra) > 5 else ''}")
    if not detail:
        detail.append("same names in another order")
    raise ModelError(
        f"{meta_path}: the model's {key} do not match this otelprobe ({__version__}): {'; '.join(detail)}. "
        "Retrain it with `otelprobe train` or use a model made for this version."
    )


def versions() -> dict[str, str]:
    import lightgbm as lgb

    return {"otelprobe": __version__, "lightgbm": str(lgb.__version__)}


def scope_inputs(
    frame: pd.DataFrame,
    cause_codes: np.ndarray | None = None,
    features: Sequence[str] = SCOPE_FEATURES,
) -> np.ndarray:
    """The scope model's input rows, `features` in order (cause_code NaN unless given). A
    cause-specific feature (scope_evidence.py) takes each row's value for the row's cause: NaN
    without a cause, or when the table lacks the column (a table built before it existed)."""
    n = len(frame)
    codes = np.full(n, np.nan) if cause_codes is None else np.asarray(cause_codes, dtype=np.float64)
    out = np.full((n, len(features)), np.nan)
    for j, name in enumerate(features):
        if name == "cause_code":
            out[:, j] = codes
        elif name in CAUSE_EVIDENCE_FEATURES:
            for c, cause in enumerate(ROOT_CAUSES):
                rows = codes == c
                column = column_of(name, cause)
                if rows.any() and column in frame:
                    out[rows, j] = frame[column].to_numpy(dtype=np.float64)[rows]
        else:
            out[:, j] = frame[name].to_numpy(dtype=np.float64)
    out[~np.isfinite(out)] = np.nan
    return out


def scope_inputs_per_cause(
    frame: pd.DataFrame, n_causes: int = len(ROOT_CAUSES), features: Sequence[str] = SCOPE_FEATURES
) -> np.ndarray:
    """n × n_causes × features: `scope_inputs(frame, [c] * n, features)` for every cause c at
    once, each column of the frame read once (not once per cause)."""
    n = len(frame)
    out = np.full((n, n_causes, len(features)), np.nan)
    for j, name in enumerate(features):
        if name == "cause_code":
            out[:, :, j] = np.arange(n_causes, dtype=np.float64)
        elif name in CAUSE_EVIDENCE_FEATURES:
            for c, cause in enumerate(ROOT_CAUSES[:n_causes]):
                column = column_of(name, cause)
                if n and column in frame:
                    out[:, c, j] = frame[column].to_numpy(dtype=np.float64)
        else:
            out[:, :, j] = frame[name].to_numpy(dtype=np.float64)[:, None]
    out[~np.isfinite(out)] = np.nan
    return out


def gate_input_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The gate's input rows: GATE_FEATURES in order (z-scores clipped to ±1000)."""
    matrix = np.array(
        frame.loc[:, list(GATE_FEATURES)].to_numpy(dtype=np.float64), dtype=np.float64, copy=True
    )
    matrix[~np.isfinite(matrix)] = np.nan
    return np.clip(matrix, -1e3, 1e3)
