"""The sidecar's model registry: every model version it ran or trained, the live one, rollback.

A directory in the state directory (`<state_dir>/models`): each version is `vNNNN.json` plus its
boosters `vNNNN.{gate,cause,scope}.txt` (AttributionModel.save: LightGBM text and JSON metadata
with SHA-256s, never pickle), and `registry.json` indexes them: per version its label, where it
came from (imported model file or retrained), the data it learned from, the gate's metrics and
decision, and its status (live, retired, refused, rolled_back). `registry.json` is written to a
temporary file and renamed, so a crash leaves the old index or the new one.

The live history is a stack: promoting pushes, rolling back pops (or jumps to a named version
that ran before). The last `keep` versions are kept, never the live one or the one a rollback would
go back to.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from otelprobe.attribution.attribute import iso, model_label
from otelprobe.attribution.model import AttributionModel

_logger = logging.getLogger(__name__)
INDEX: Final = "registry.json"
FORMAT: Final = 1
BOOSTER_SUFFIXES: Final = (".json", ".gate.txt", ".cause.txt", ".scope.txt")


class RegistryError(ValueError):
    """A registry operation that cannot be done: `status` is the HTTP status it answers."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass(slots=True)
class ModelRegistry:
    directory: Path
    keep: int
    index: dict[str, Any]

    @classmethod
    def open(cls, directory: str | Path, *, keep: int = 5) -> ModelRegistry:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            index = json.loads((path / INDEX).read_text())
            if index.get("format") != FORMAT:
                raise ValueError(f"format {index.get('format')}")
        except FileNotFoundError:
            index = {"format": FORMAT, "live": None, "history": [], "next": 1, "versions": {}}
        except (OSError, ValueError) as exc:
            # An unreadable index must not stop the sidecar: start a new one beside the old files.
            _logger.error("model registry index %s unreadable (%s); starting a new index", path / INDEX, exc)
            index = {"format": FORMAT, "live": None, "history": [], "next": 1, "versions": {}}
        return cls(path, keep, index)

    # --- reading ---------------------------------------------------------------------------------

    @property
    def live(self) -> str | None:
        live = self.index.get("live")
        return str(live) if live else None

    def stem(self, version: str) -> Path:
        return self.directory / version

    def entry(self, version: str) -> dict[str, Any]:
        found = self.index["versions"].get(version)
        if found is None:
            raise RegistryError(404, f"no model version {version[:40]!r} in the registry")
        return dict(found)

    def listing(self) -> list[dict[str, Any]]:
        """Every kept version, newest first."""
        return [
            dict(v) for v in sorted(self.index["versions"].values(), key=lambda v: v["seq"], reverse=True)
        ]

    def rollback_target(self) -> str | None:
        history = self.index["history"]
        return str(history[-2]) if len(history) >= 2 else None

    def imported_from(self) -> dict[str, Any] | None:
        """The model file the latest imported version came from (path and metadata SHA-256)."""
        imports = [v for v in self.index["versions"].values() if v.get("source") == "imported"]
        return dict(max(imports, key=lambda v: v["seq"])["imported_from"]) if imports else None

    # --- writing ---------------------------------------------------------------------------------

    def reserve(self) -> str:
        """A new version name (the number is never reused)."""
        number = int(self.index["next"])
        self.index["next"] = number + 1
        self._write()
        return f"v{number:04d}"

    def add(self, version: str, model: AttributionModel, **info: Any) -> dict[str, Any]:
        """Register a model already saved at `stem(version)` (or save it there) with `info`."""
        if not self.stem(version).with_suffix(".json").exists():
            model.save(self.stem(version))
        now_ns = time.time_ns()
        entry = {
            "version": version,
            "seq": int(version.lstrip("v")),
            "label": model_label(model),
            "status": "candidate",
            "created": iso(now_ns),
            "created_unix_nano": now_ns,
            "training": _training_summary(model),
            **info,
        }
        self.index["versions"][version] = entry
        self._write()
        return dict(entry)

    def update(self, version: str, **changes: Any) -> None:
        self.index["versions"][version].update(changes)
        self._write()

    def promote(self, version: str, reason: str) -> None:
        """Make `version` live (the previous live one is retired, and the rollback target)."""
        self.entry(version)
        previous = self.live
        if previous and previous in self.index["versions"]:
            self.index["versions"][previous]["status"] = "retired"
        self.index["versions"][version].update(status="live", promoted=iso(time.time_ns()), reason=reason)
        self.index["live"] = version
        self.index["history"] = [v for v in self.index["history"] if v != version] + [version]
        self._prune()
        self._write()

    def refuse(self, version: str, reason: str) -> None:
        self.index["versions"][version].update(status="refused", reason=reason)
        self._prune()
        self._write()

    def rollback(self, to: str | None = None) -> tuple[str, str]:
        """Make an earlier version live again: `to`, or the one live before the current one.

        Returns: (from, to). Raises: RegistryError (404 unknown, 409 nothing to roll back to or a
        refused candidate).
        """
        current = self.live
        if to is None:
            to = self.rollback_target()
            if to is None:
                raise RegistryError(409, "no earlier live version to roll back to")
        entry = self.entry(to)
        if entry["status"] in ("refused", "candidate"):
            raise RegistryError(
                409, f"{to} was never live (the gate {entry['status']} it); promote is not rollback"
            )
        if to == current:
            raise RegistryError(409, f"{to} is already live")
        history = self.index["history"]
        self.index["history"] = history[: history.index(to) + 1] if to in history else [*history, to]
        if current:
            self.index["versions"][current]["status"] = "rolled_back"
        self.index["versions"][to].update(
            status="live", promoted=iso(time.time_ns()), reason=f"rollback from {current}"
        )
        self.index["live"] = to
        self._write()
        return current or "", to

    def _prune(self) -> None:
        keep = {v for v in (self.live, self.rollback_target()) if v}
        versions = sorted(self.index["versions"].values(), key=lambda v: v["seq"], reverse=True)
        kept = 0
        for entry in versions:
            version = str(entry["version"])
            if version in keep or kept < self.keep:
                kept += 1
                continue
            del self.index["versions"][version]
            self.index["history"] = [v for v in self.index["history"] if v != version]
            for suffix in BOOSTER_SUFFIXES:
                self.stem(version).with_name(version + suffix).unlink(missing_ok=True)
            _logger.info("model %s removed from the registry (keeping %d)", version, self.keep)

    def _write(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=INDEX, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.index, handle, indent=1, allow_nan=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.directory / INDEX)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _training_summary(model: AttributionModel) -> dict[str, Any]:
    training = model.metadata.training
    keys = ("name", "digest", "recordings", "windows", "feedback", "incidents", "rounds", "window_s")
    return {key: training[key] for key in keys if key in training}
