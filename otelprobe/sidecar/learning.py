"""The sidecar learns: operator feedback in, retraining in the background, the gate, the registry.

Wires feedback.py (verdicts stored with their windows), retrain.py (a job in its own low-priority
process), promotion.py (the gate, run inside the job) and model_registry.py (versions, live,
rollback) to the running service: the API calls `record_feedback`, `models`, `retrain` and
`rollback`; `run_schedule` retrains on a schedule when new feedback arrived; the model holder
(model_watch.py) runs whatever the registry says is live. Every promotion, refusal, rollback and
failed job is logged and emitted (emitter.py: a log record and a counter).

At start the configured model file is imported into the registry as a version (and made live)
unless that same file was imported before, in which case the registry's live version runs — a
model the sidecar promoted survives a restart. An operator who copies a new model file over the
configured one gets it imported and made live as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from otelprobe.attribution.attribute import iso
from otelprobe.attribution.model import AttributionModel, ModelError
from otelprobe.sidecar.config import LearningConfig
from otelprobe.sidecar.feedback import FeedbackError, parse_feedback, record_feedback
from otelprobe.sidecar.model_registry import ModelRegistry, RegistryError
from otelprobe.sidecar.model_watch import ModelHolder, load_checked, model_files
from otelprobe.sidecar.retrain import job_spec
from otelprobe.sidecar.state_store import StateStore
from otelprobe.sidecar.view import MAX_LIMIT, MemoryView

_logger = logging.getLogger(__name__)
SCHEDULE_TICK_S: Final = 30.0
JOBS: Final = "jobs"

ModelEvent = Callable[[str, dict[str, Any]], None]
"""(outcome, details) -> emitted: promoted, refused, rolled_back, imported, failed."""


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class Learning:
    """Feedback, retraining and the registry of one sidecar (state in `state_dir`)."""

    def __init__(
        self,
        config: LearningConfig,
        state_dir: Path,
        store: StateStore,
        holder: ModelHolder,
        view: MemoryView,
        on_event: ModelEvent,
    ) -> None:
        self.config = config
        self.store = store
        self.holder = holder
        self.view = view
        self._on_event = on_event
        self.registry = ModelRegistry.open(state_dir / "models", keep=config.keep_models)
        self.jobs_dir = self.registry.directory / JOBS
        self.table_cache = Path(config.table_cache) if config.table_cache else state_dir / "tables"
        self.running: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self.counts: dict[str, int] = {}
        view.feedback = {str(f["incident"]): f for f in store.feedback()}

    # --- the live model ------------------------------------------------------------------------

    def adopt(self) -> None:
        """Run the registry's live version, or import the configured model (module docstring)."""
        configured = self.holder.watched or self.holder.path
        digest = _sha256(model_files(configured)[0])
        imported = self.registry.imported_from()
        live = self.registry.live
        if live and imported and imported.get("sha256") == digest:
            if live == self.registry.index["versions"].get(live, {}).get("version") and self._run_version(
                live
            ):
                return
        self._import(configured, digest, "start-up")

    def _run_version(self, version: str) -> bool:
        try:
            self.holder.swap_to(self.registry.stem(version), version)
        except ModelError as exc:
            _logger.error("registry model %s unusable, running the configured model: %s", version, exc)
            return False
        self._publish()
        return True

    def _import(self, path: Path, digest: str | None, why: str) -> None:
        version = self.registry.reserve()
        self.registry.add(
            version,
            self.holder.model,
            source="imported",
            imported_from={"path": str(path), "sha256": digest},
        )
        reason = f"imported from {path} ({why})"
        self.registry.promote(version, reason)
        self.holder.set_version(version)
        self._publish()
        self._event("imported", {"version": version, "label": self.holder.label, "reason": reason})

    def model_file_swapped(self) -> None:
        """The operator replaced the configured model file and the holder loaded it: version it."""
        path = self.holder.watched or self.holder.path
        digest = _sha256(model_files(path)[0])
        imported = self.registry.imported_from()
        live = self.registry.live
        if imported and imported.get("sha256") == digest and live and self._run_version(live):
            return  # the same file (a forced reload): the registry's live version keeps running
        self._import(path, digest, "model file replaced")

    def _publish(self) -> None:
        health = self.view.health_state
        health.model_version, health.model_path = self.holder.label, str(self.holder.path)
        health.model_registry_version = self.holder.version

    # --- feedback ------------------------------------------------------------------------------

    async def record_feedback(self, incident_id: str, body: object) -> dict[str, Any]:
        """Raises: FeedbackError (4xx; nothing stored)."""
        verdict = parse_feedback(body)
        incident = next(
            (i for i in self.view.incidents("all", limit=MAX_LIMIT) if i["id"] == incident_id), None
        )
        record = await asyncio.to_thread(record_feedback, self.store, incident_id, verdict, incident)
        self.view.feedback[incident_id] = record
        what = "not an incident" if record["not_an_incident"] else f"{record['cause']} ({record['scope']})"
        _logger.warning(
            "feedback on incident %s by %s: %s; %d windows kept",
            incident_id,
            record["by"],
            what,
            record["windows"],
        )
        return record

    def feedback_list(self, limit: int) -> list[dict[str, Any]]:
        return self.store.feedback(limit)

    # --- models --------------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        last = self.registry.index.get("last_job")
        return {
            "live": self.registry.live,
            "rollback_to": self.registry.rollback_target(),
            "models": self.registry.listing(),
            "retrain": {
                "running": self.running,
                "last": last,
                "every_s": self.config.retrain_every_s,
                "feedback": len(self.view.feedback),
            },
        }

    async def retrain(self, trigger: str = "api") -> dict[str, Any]:
        """Start a retraining job in the background. Raises: RegistryError 409 (one already runs)."""
        if self.running is not None:
            raise RegistryError(409, f"retraining {self.running['version']} is already running")
        live = self.registry.live
        if live is None:
            raise RegistryError(409, "no live model in the registry to compare a candidate with")
        version = self.registry.reserve()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        windows_file = self.jobs_dir / f"{version}.windows.json"
        verdicts = self.store.feedback()
        windows = await asyncio.to_thread(self.store.feedback_windows)
        await asyncio.to_thread(windows_file.write_text, json.dumps(windows, separators=(",", ":")))
        spec = job_spec(
            self.config,
            version=version,
            registry_dir=self.registry.directory,
            live_stem=self.registry.stem(live),
            lab_recordings=self._lab_recordings(),
            eval_recordings=[self._beside_model(p) for p in self.config.eval_recordings],
            table_cache=self.table_cache,
            verdicts=verdicts,
            windows_file=windows_file,
        )
        spec_file = self.jobs_dir / f"{version}.spec.json"
        spec_file.write_text(json.dumps(spec, indent=1))
        now_ns = time.time_ns()
        self.running = {
            "version": version,
            "trigger": trigger,
            "started": iso(now_ns),
            "started_unix_nano": now_ns,
            "live": live,
            "verdicts": len(verdicts),
            "windows": len(windows),
        }
        self._task = asyncio.create_task(self._run(spec_file, version), name=f"retrain-{version}")
        _logger.warning(
            "retraining %s started (%s): %d verdicts, %d confirmed windows",
            version,
            trigger,
            len(verdicts),
            len(windows),
        )
        return dict(self.running)

    def _lab_recordings(self) -> list[str]:
        if self.config.lab_recordings is not None:
            return [self._beside_model(p) for p in self.config.lab_recordings]
        # The configured model's own training data (the registry's copies of retrained models
        # name the same recordings).
        return [self._beside_model(str(p)) for p in self.holder.model.metadata.training.get("recordings", [])]

    def _beside_model(self, name: str) -> str:
        """A relative path as `otelprobe train` wrote it (from where it ran, usually the
        repository): from the working directory, else from the configured model's repository."""
        path = Path(name)
        if path.is_absolute() or path.exists():
            return str(path)
        return str((self.holder.watched or self.holder.path).resolve().parent.parent / path)

    async def _run(self, spec_file: Path, version: str) -> None:
        result_file = self.jobs_dir / f"{version}.result.json"
        log_file = self.jobs_dir / f"{version}.log"
        started = time.perf_counter()
        result: dict[str, Any]
        try:
            with open(log_file, "wb") as log:  # noqa: ASYNC230 (creating a log file: instant)
                self._process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "otelprobe.sidecar.retrain",
                    str(spec_file),
                    str(result_file),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
                try:
                    async with asyncio.timeout(self.config.timeout_s):
                        await self._process.wait()
                except TimeoutError:
                    self._process.kill()
                    await self._process.wait()
                    raise RuntimeError(
                        f"stopped after {self.config.timeout_s:g} s (learning.timeout)"
                    ) from None
            result = json.loads(result_file.read_text())
            if "error" in result:
                raise RuntimeError(str(result["error"]))
            candidate = await asyncio.to_thread(load_checked, self.registry.stem(version))
            self._conclude(version, result, candidate)
        except asyncio.CancelledError:
            if self._process is not None and self._process.returncode is None:
                self._process.kill()
                with contextlib.suppress(Exception):
                    await self._process.wait()
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, RuntimeError) else str(exc)
            _logger.error("retraining %s failed: %s (log: %s)", version, reason, log_file)
            self._record_job({"version": version, "outcome": "failed", "reason": reason})
            self._event("failed", {"version": version, "reason": reason})
        finally:
            self.running = None
            self._process = None
            _logger.info("retraining %s took %.1f s", version, time.perf_counter() - started)

    def _conclude(self, version: str, result: dict[str, Any], candidate: AttributionModel) -> None:
        """Register the candidate; promote it (and run it) if the gate passed it. In the event
        loop's thread, like every registry change (the API reads the registry there)."""
        stem = self.registry.stem(version)
        live = self.registry.live
        metrics = result["metrics"]
        info = {
            "source": "retrained",
            "parent": live,
            "metrics": {name: scores["candidate"] for name, scores in metrics.items()},
            "gate": {"passed": result["passed"], "reason": result["reason"], "compared_with": live},
            "data": result["training"],
            "took": result["took"],
        }
        self.registry.add(version, candidate, **info)
        if live is not None:
            self.registry.update(live, metrics={name: scores["live"] for name, scores in metrics.items()})
        details = {
            "version": version,
            "label": self.registry.entry(version)["label"],
            "previous": live,
            "reason": result["reason"],
            "metrics": metrics,
        }
        if result["passed"]:
            self.registry.promote(version, result["reason"])
            self.holder.swap_to(stem, version, candidate)
            self._publish()
            outcome = "promoted"
            _logger.warning("model %s promoted over %s: %s", version, live, result["reason"])
        else:
            self.registry.refuse(version, result["reason"])
            outcome = "refused"
            _logger.warning(
                "model %s refused by the gate, %s stays live: %s", version, live, result["reason"]
            )
        self._record_job(
            {"version": version, "outcome": outcome, "reason": result["reason"], "took": result["took"]}
        )
        self._event(outcome, details)

    def _record_job(self, job: dict[str, Any]) -> None:
        self.registry.index["last_job"] = {**job, "finished": iso(time.time_ns())}
        with contextlib.suppress(KeyError):
            self.registry.update(job["version"])  # writes the index
        self.registry._write()

    async def rollback(self, to: str | None) -> dict[str, Any]:
        """Run an earlier version again. Raises: RegistryError (404 / 409)."""
        current = self.registry.live
        target = to or self.registry.rollback_target()
        if target is None:
            raise RegistryError(409, "no earlier live version to roll back to")
        entry = self.registry.entry(target)
        if entry["status"] in ("refused", "candidate"):
            raise RegistryError(409, f"{target} was never live (the gate {entry['status']} it)")
        if target == current:
            raise RegistryError(409, f"{target} is already live")
        try:
            model = await asyncio.to_thread(load_checked, self.registry.stem(target))
        except ModelError as exc:
            raise RegistryError(409, f"{target} cannot be loaded: {exc}") from None
        self.holder.swap_to(self.registry.stem(target), target, model)
        self.registry.rollback(target)
        self._publish()
        reason = f"rollback from {current} to {target}"
        _logger.warning("model rolled back: %s now live (was %s)", target, current)
        self._event(
            "rolled_back", {"version": target, "previous": current, "label": entry["label"], "reason": reason}
        )
        return {"live": target, "previous": current, "model": self.registry.entry(target)}

    # --- the schedule --------------------------------------------------------------------------

    async def run_schedule(self) -> None:
        every = self.config.retrain_every_s
        if every is None:
            return
        while True:
            await asyncio.sleep(min(SCHEDULE_TICK_S, every))
            last = self.registry.index.get("last_scheduled_unix", 0.0)
            if time.time() - float(last) < every or self.running is not None:
                continue
            trained = set()
            for entry in self.registry.listing():
                trained.update(entry.get("data", {}).get("feedback", {}).get("trained_incidents", []))
                trained.update(entry.get("data", {}).get("feedback", {}).get("held_out_incidents", []))
            new = len(set(self.view.feedback) - trained)
            self.registry.index["last_scheduled_unix"] = time.time()
            self.registry._write()
            if new < self.config.min_new_feedback:
                _logger.info(
                    "scheduled retraining skipped: %d new verdicts (min %d)",
                    new,
                    self.config.min_new_feedback,
                )
                continue
            with contextlib.suppress(RegistryError):
                await self.retrain("schedule")

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _event(self, outcome: str, details: dict[str, Any]) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        self.view.model_events[outcome] = self.view.model_events.get(outcome, 0) + 1
        try:
            self._on_event(outcome, details)
        except Exception:
            _logger.exception("emitting the model event %s failed", outcome)


__all__ = ["FeedbackError", "Learning", "RegistryError"]
