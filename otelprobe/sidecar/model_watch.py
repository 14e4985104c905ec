"""The model in use, swapped without a restart: a new file is loaded and checked before it
replaces the running model; a bad one is rejected with a log line and the old one keeps running.

Beside the pipeline (pipeline.py asks `ModelHolder.live` once per slot, so a swap takes effect at
the next slot). The service calls `check()` every poll and on SIGHUP; it compares the configured
model files' mtimes and sizes, so copying the three files in place (metadata last, or all at once
with a rename) is all an operator does. The model registry (learning.py) swaps in a promoted or
rolled-back version with `swap_to`; the model and its registry version change together.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from otelprobe.attribution.attribute import model_label
from otelprobe.attribution.features import FEATURE_NAMES
from otelprobe.attribution.model import AttributionModel, ModelError, load_model
from otelprobe.causes import ROOT_CAUSES
from otelprobe.sidecar.pipeline import LiveModel

_logger = logging.getLogger(__name__)


def model_files(stem: str | Path) -> list[Path]:
    """The metadata file and every booster file it names (cause, scope, ...), metadata first."""
    base = Path(stem)
    for suffix in (".json", ".cause.txt", ".scope.txt", ".gate.txt"):
        if base.name.endswith(suffix):
            base = base.with_name(base.name[: -len(suffix)])
    meta = base.with_name(base.name + ".json")
    try:
        entries = json.loads(meta.read_text()).get("files", {})
        named = [meta.with_name(str(entry["path"])) for _, entry in sorted(entries.items())]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        named = []
    return [meta, *(named or [base.with_name(base.name + s) for s in (".cause.txt", ".scope.txt")])]


def _stamp(stem: str | Path) -> tuple[tuple[int, int], ...]:
    stamps = []
    for path in model_files(stem):
        try:
            info = path.stat()
        except OSError:
            stamps.append((-1, -1))
        else:
            stamps.append((info.st_mtime_ns, info.st_size))
    return tuple(stamps)


def load_checked(stem: str | Path) -> AttributionModel:
    """Load a model and make sure it scores: one all-missing window must give n x 11 finite scores
    that sum to 1 (a file that loads but cannot predict is caught here, not in the first incident).

    Raises:
        ModelError: the model is missing, corrupt, of another schema, or does not score.
    """
    model = load_model(stem)
    probe = np.full((1, len(FEATURE_NAMES)), np.nan)
    try:
        scores = model.cause_scores(probe)
    except Exception as exc:  # LightGBM raises several kinds for a broken booster
        raise ModelError(f"{stem}: the model does not score a window: {exc}") from exc
    if scores.shape != (1, len(ROOT_CAUSES)) or not np.isfinite(scores).all() or abs(scores.sum() - 1) > 1e-6:
        raise ModelError(f"{stem}: the model's scores are not {len(ROOT_CAUSES)} probabilities")
    return model


@dataclass(slots=True)
class ModelHolder:
    """The running model, its path, label and registry version; `check()` swaps in a changed,
    valid configured model (`watched`), `swap_to` a registry version."""

    path: Path
    model: AttributionModel
    label: str
    _stamp: tuple[tuple[int, int], ...]
    swaps: int = 0
    rejected: int = 0
    rejection: str | None = None
    """Why the watched model files were last rejected, until valid ones replace them."""
    version: str | None = None
    watched: Path | None = None
    _live: LiveModel | None = None

    @classmethod
    def load(cls, path: str | Path) -> ModelHolder:
        """Raises: ModelError when the model cannot be used (at start-up: fatal)."""
        stamp = _stamp(path)
        model = load_checked(path)
        return cls(Path(path), model, model_label(model), stamp, watched=Path(path), _live=LiveModel(model))

    def current(self) -> AttributionModel:
        return self.model

    def live(self) -> LiveModel:
        """The model and its version, read together (a swap replaces both at once)."""
        return self._live or LiveModel(self.model, self.version)

    def swap_to(self, stem: str | Path, version: str | None, model: AttributionModel | None = None) -> None:
        """Run the model at `stem` (checked first, unless `model` is it, loaded with
        `load_checked`) as `version`.

        Raises: ModelError (the running model stays).
        """
        model = model or load_checked(stem)
        self.path, self.model, self.label, self.version = Path(stem), model, model_label(model), version
        self._live = LiveModel(model, version)
        self.swaps += 1
        _logger.warning("model now %s (%s, %s)", self.label, version or "unversioned", stem)

    def set_version(self, version: str | None) -> None:
        self.version = version
        self._live = LiveModel(self.model, version)

    def check(self, path: str | Path | None = None, *, force: bool = False) -> bool:
        """Swap in the model at `path` (default: the watched path) if its files changed; True if it did."""
        watched = self.watched or self.path
        target = Path(path) if path is not None else watched
        stamp = _stamp(target)
        if not force and target == watched and stamp == self._stamp:
            return False
        try:
            model = load_checked(target)
        except ModelError as exc:
            if stamp != self._stamp or target != watched:
                self.rejected += 1
                self.rejection = f"model {target} rejected, keeping {self.label}: {exc}"
                _logger.error("%s", self.rejection)
            self._stamp = stamp  # do not retry the same bad files every poll
            return False
        self.path, self.watched, self.model, self._stamp = target, target, model, stamp
        self.label, self.version, self.rejection = model_label(model), None, None
        self._live = LiveModel(model)
        self.swaps += 1
        _logger.warning("model swapped: now %s (%s)", self.label, target)
        return True
