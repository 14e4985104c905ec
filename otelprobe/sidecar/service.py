"""The running sidecar: OTLP in, windows closed, attributions out, state kept, API served.

The process behind `otelprobe sidecar CONFIG` (DESIGN §2, the sidecar row). It wires the parts,
each in its own module: receiver.py (bounded queue, retryable answers when full) -> ingest.py
(traces joined, retries dropped) -> windower.py (event-time slots, watermark) -> pipeline.py
(features, SLOs, incidents, model) -> emitter.py (OTLP), a JSON-lines file, view.py (what the API
reads) and state_store.py (SQLite). Slots are processed one at a time in a worker thread so the
receiver keeps answering meanwhile. The model and the config file are polled for changes (and
re-read on SIGHUP); a stop closes every pending window, saves, and flushes the exporters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelprobe.attribution.incidents import WindowIncidents
from otelprobe.attribution.records import ProbeRecord, records_frame
from otelprobe.attribution.slo import SeriesWindow
from otelprobe.attribution.slo_file import DEFAULT_SLOS, SLOFile, load_slo_file
from otelprobe.attribution.windows import auto_window_s
from otelprobe.errors import ConfigError
from otelprobe.settings.secrets import redact
from otelprobe.sidecar import snapshot
from otelprobe.sidecar.config import AUTO, SidecarConfig, load_sidecar_config
from otelprobe.sidecar.emitter import ViolationEmitter
from otelprobe.sidecar.ingest import Ingest
from otelprobe.sidecar.learning import Learning
from otelprobe.sidecar.model_watch import ModelHolder
from otelprobe.sidecar.pipeline import LiveAttribution, SlotProcessor, SlotResult
from otelprobe.sidecar.receiver import OTLPReceiver, ReceiverTLS
from otelprobe.sidecar.state_store import StateStore
from otelprobe.sidecar.view import MemoryView
from otelprobe.sidecar.windower import EventTimeWindower, Slot

_logger = logging.getLogger(__name__)

TICK_S: Final = 0.1
"""How often the watermark is checked for slots to close."""
WINDOWS_TASK: Final = "sidecar-windows"
INGEST_PAUSE_MAX_S: Final = 2.0
"""Longest ingestion waits for a window being attributed (a heavy one then shares the CPU)."""
POLL_S: Final = 2.0
"""How often the config file and the model files are checked for changes."""
AUTO_MIN_PROBES: Final = 3
"""First probes of one series needed to tell the probe interval (window: auto)."""
AUTO_MAX_BUFFER: Final = 20_000


class SidecarService:
    """One sidecar: `await start()`, `await run_until_stopped()` (or `stop()`).

    Args:
        config: the validated config.
        config_path: re-read on change and on `request_reload()`; None: no reload.
    """

    def __init__(self, config: SidecarConfig, config_path: str | Path | None = None) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self._config_stamp = _stamp(self.config_path)
        self.models = ModelHolder.load(config.model)
        self.slo_file: SLOFile | None = load_slo_file(config.slo_file) if config.slo_file else None
        limits = config.limits
        self.view = MemoryView(
            self.slo_file or DEFAULT_SLOS,
            max_attributions=limits.max_recent,
            max_recent_incidents=limits.max_recent,
            max_series=limits.max_series,
        )
        self.ingest = Ingest(
            max_seen_traces=limits.max_seen_traces, max_pending_traces=limits.max_pending_traces
        )
        self.store = (
            StateStore(
                config.state_dir,
                max_recent=limits.max_recent,
                max_window_rows=config.learning.max_window_rows,
            )
            if config.state_dir
            else None
        )
        self.emitter = ViolationEmitter(config.export, self.view, self._objectives)
        self.learning: Learning | None = None
        tls = config.receiver.tls
        token = config.receiver.bearer_token
        self.receiver = OTLPReceiver(
            host=config.receiver.host,
            http_port=config.receiver.http_port,
            grpc_port=config.receiver.grpc_port,
            max_queue=config.receiver.max_queue,
            max_body_bytes=config.receiver.max_body_bytes,
            when_full="retry",
            retry_after_s=config.receiver.retry_after_s,
            bearer_token=token.get_secret_value() if token else None,
            tls=ReceiverTLS(tls.cert_file, tls.key_file, tls.client_ca_file) if tls else None,
        )
        self.windower: EventTimeWindower | None = None
        self.processor: SlotProcessor | None = None
        self._auto_buffer: list[ProbeRecord] = []
        self._api_runner: web.AppRunner | None = None
        self.api_port: int | None = None
        self._stop = asyncio.Event()
        self._stopping_windows = asyncio.Event()
        self._window_check = asyncio.Event()
        self._window_idle = asyncio.Event()  # clear while a window is attributed
        self._window_idle.set()
        self._reload = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.results = 0
        self._state_saved_s = -math.inf
        health = self.view.health_state
        health.model_path, health.model_version = str(self.models.path), self.models.label
        health.queue_capacity = config.receiver.max_queue
        if self.store is not None and config.state_dir and config.learning.enabled:
            self.learning = Learning(
                config.learning,
                Path(config.state_dir),
                self.store,
                self.models,
                self.view,
                self.emitter.emit_model_event,
            )
            self.learning.adopt()
        self._restore()

    # --- set-up ---------------------------------------------------------------------------------

    def _objectives(self) -> dict[str, float]:
        slo_file = self.processor.slo_file if self.processor else self.slo_file
        return {slo.name: slo.objective for slo in slo_file.slos} if slo_file else {}

    def _start_windows(self, window_s: float) -> None:
        limits = self.config.limits
        self.windower = EventTimeWindower(
            window_s, self.config.allowed_lateness_s, max_open_slots=limits.max_open_windows
        )
        self.ingest.attach(self.windower)  # late phases join their record while its slot is open
        self.processor = SlotProcessor(
            self.models.live,
            self.slo_file,
            window_s,
            max_series=limits.max_series,
            close_after_windows=self.config.close_after_windows,
        )
        self.view.set_slo_file(self.processor.slo_file)
        self.view.health_state.window_s = window_s
        _logger.info("windows of %g s, allowed lateness %g s", window_s, self.config.allowed_lateness_s)

    def _restore(self) -> None:
        if self.store is None:
            if self.config.window_s != AUTO:
                self._start_windows(float(self.config.window_s))
            return
        saved = self.store.load()
        window_s = self.config.window_s
        if saved is not None and (window_s == AUTO or math.isclose(float(window_s), saved.window_s)):
            window_s = saved.window_s
        elif saved is not None:
            _logger.warning("window changed from %g s: the saved state is not used", saved.window_s)
            saved = None
        if window_s == AUTO:
            return
        self._start_windows(float(window_s))
        if saved is None:
            return
        assert self.processor is not None and self.windower is not None
        state = saved.pipeline
        try:
            snapshot.load_engine(self.processor.engine, state["engine"])
            snapshot.load_evaluator(self.processor.evaluator, state["evaluator"])
            snapshot.load_tracker(self.processor.tracker, state["tracker"])
        except (KeyError, TypeError, ValueError) as exc:
            # State of another otelprobe version: start afresh rather than not at all.
            _logger.error(
                "state in %s not restored (%s: %s); starting afresh", self.store.path, type(exc).__name__, exc
            )
            self._start_windows(float(window_s))
            return
        if saved.closed_until_ns is not None:
            self.windower.resume_after(saved.closed_until_ns)
        open_now = snapshot.open_incidents(self.processor.tracker)
        end_ns = saved.closed_until_ns or 0
        self.view.update_incidents(WindowIncidents(end_ns, end_ns, open_now, (), ()))
        self.view.add_attributions(saved.attributions)
        _logger.warning(
            "state restored from %s: %d series baselines, %d open incidents, %d attributions",
            self.store.path,
            len(self.processor.engine.baselines),
            len(open_now),
            len(saved.attributions),
        )

    async def start(self) -> None:
        await self.receiver.start()
        if self.config.api.port is not None:
            from otelprobe.sidecar.api import build_api_app
            from otelprobe.sidecar.view_metrics import Intake

            token = self.config.api.bearer_token
            intake = Intake(self.receiver.stats, {"ingest": self.ingest.stats, "reader": self.ingest.reader})
            app = build_api_app(
                self.view,
                token=token.get_secret_value() if token else None,
                control=self.learning,
                intake=intake,
            )
            self._api_runner = web.AppRunner(app, access_log=None)
            await self._api_runner.setup()
            site = web.TCPSite(self._api_runner, self.config.api.host, self.config.api.port)
            await site.start()
            self.api_port = int(self._api_runner.addresses[0][1])
        self._tasks = [
            asyncio.create_task(self._consume(), name="sidecar-consume"),
            asyncio.create_task(self._close_slots(), name=WINDOWS_TASK),
            asyncio.create_task(self._watch(), name="sidecar-watch"),
        ]
        if self.learning is not None:
            self._tasks.append(
                asyncio.create_task(self.learning.run_schedule(), name="sidecar-retrain-schedule")
            )
        _logger.warning(
            "sidecar listening: OTLP gRPC %s, OTLP HTTP %s, API %s; model %s",
            self.receiver.grpc_port,
            self.receiver.http_port,
            self.api_port,
            self.models.label,
        )

    # --- the flow -------------------------------------------------------------------------------

    async def _consume(self) -> None:
        queue = self.receiver.queue
        while True:
            request = await queue.get()
            if not self._window_idle.is_set():
                # A window being attributed has the interpreter first (one GIL: ingesting beside
                # it doubled its time); the queue and the senders' retries absorb the pause.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._window_idle.wait(), INGEST_PAUSE_MAX_S)
            self._ingest([request])
            self._window_check.set()  # a slot may be ready to close now, not at the next tick
            # get() of a non-empty queue does not yield: let the windows task close that slot
            # before the next queued request is ingested.
            await asyncio.sleep(0)

    def _ingest(self, requests: Sequence[ExportTraceServiceRequest]) -> None:
        for request in requests:
            records = self.ingest.add(request)
            if self.windower is None:
                self._auto_window(records)
            else:
                self.windower.add(records)
        self._update_counters()

    def _auto_window(self, records: list[ProbeRecord]) -> None:
        """Buffer records until the probe interval shows, then fix the window (window: auto)."""
        self._auto_buffer.extend(records)
        counts: dict[tuple[str, str], int] = {}
        for record in self._auto_buffer:
            if record.attempt <= 1:
                key = (record.target, record.vantage)
                counts[key] = counts.get(key, 0) + 1
        if max(counts.values(), default=0) < AUTO_MIN_PROBES and len(self._auto_buffer) < AUTO_MAX_BUFFER:
            return
        intervals = self.models.model.metadata.window_intervals
        window_s = auto_window_s(records_frame(self._auto_buffer), intervals)
        self._start_windows(window_s)
        assert self.windower is not None
        buffered, self._auto_buffer = self._auto_buffer, []
        self.windower.add(buffered)

    async def _close_slots(self) -> None:
        """Close ready windows every tick until `stop` asks; never cancelled, so a slot taken from
        the windower is always processed, and never beside the drain's (SlotProcessor is one
        thread's at a time)."""
        while not self._stopping_windows.is_set():
            # Woken after each ingested request, else every tick (the watermark also moves with
            # the clock while no probe arrives).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._window_check.wait(), TICK_S)
            self._window_check.clear()
            if self.windower is not None and not self._stopping_windows.is_set():
                ready = self.windower.close_ready()
                closed_s = time.monotonic()  # every slot of the batch closed now; later ones wait
                for slot in ready:
                    await self._process(slot, closed_s)

    async def _process(self, slot: Slot, closed_s: float) -> None:
        loop = asyncio.get_running_loop()
        self._window_idle.clear()
        try:
            result = await asyncio.to_thread(self._process_in_worker, slot, loop, closed_s)
        finally:
            self._window_idle.set()
        if result is None:
            return
        health = self.view.health_state
        health.windows_closed += 1
        health.series, health.warm_series = result.series, _warm(self.processor)
        self.results += 1
        for live in result.attributions:
            top = live.attribution.causes[0]
            _logger.warning(
                "SLO violation %s on %s from %s: %s (%s, %.2f)",
                live.attribution.slo,
                live.attribution.target,
                live.attribution.vantage,
                top.cause,
                top.scope,
                top.score,
            )

    def _process_in_worker(
        self, slot: Slot, loop: asyncio.AbstractEventLoop, closed_s: float
    ) -> SlotResult | None:
        assert self.processor is not None and self.windower is not None

        def decided(verdicts: Sequence[SeriesWindow], incidents: WindowIncidents) -> None:
            # Not waited for either: the loop takes it before this slot's records (one queue).
            loop.call_soon_threadsafe(self._observe_decided, verdicts, incidents)

        def verdicts_ready(verdicts: Sequence[SeriesWindow]) -> None:
            # Every series' verdict (the violating ones came with `decided`), after the records.
            loop.call_soon_threadsafe(self.view.add_verdicts, verdicts)

        def emit(live: LiveAttribution) -> None:
            # Handed to the loop without waiting for it: a record costs this thread no round trip
            # (the loop may be busy decoding a request), and records still go out in order.
            loop.call_soon_threadsafe(self._publish, live, closed_s)

        try:
            # Each record goes out as soon as it is made: a slot with many violations does not hold
            # back its first ones.
            result = self.processor.process(slot, emit=emit, decided=decided, verdicts_ready=verdicts_ready)
        except Exception:
            _logger.exception("window slot %d failed", slot.start_ns)
            return None
        self._save(slot.end_ns, result)
        return result

    def _save(self, closed_until_ns: int, result: SlotResult | None, *, final: bool = False) -> None:
        """The slot's attributions always; the baselines (a few KB per series) every window or,
        with `state_interval`, at most that often and at shutdown."""
        if self.store is None or self.processor is None:
            return
        now_s = time.monotonic()
        due = final or now_s - self._state_saved_s >= self.config.state_interval_s
        try:
            self.store.save(
                window_s=self.processor.window_s,
                closed_until_ns=closed_until_ns,
                pipeline=self._pipeline_state() if due else None,
                attributions=[live.to_json() for live in result.attributions] if result else [],
                incident_rows=result.incident_rows if result else (),
            )
        except Exception:
            _logger.exception("saving state to %s failed", self.store.path)
        else:
            if due:
                self._state_saved_s = now_s

    def _pipeline_state(self) -> dict[str, Any]:
        assert self.processor is not None
        return {
            "engine": snapshot.dump_engine(self.processor.engine),
            "evaluator": snapshot.dump_evaluator(self.processor.evaluator),
            "tracker": snapshot.dump_tracker(self.processor.tracker),
        }

    def _observe_decided(self, verdicts: Sequence[SeriesWindow], incidents: WindowIncidents) -> None:
        self.view.add_verdicts(verdicts)
        self.view.update_incidents(incidents)

    def _publish(self, live: LiveAttribution, closed_s: float) -> None:
        """One record out, on the loop: the API knows it before the file and the Collector do, so
        whoever reads one and asks the API about its incident finds it."""
        self.view.add_attributions((live,))
        self._emit(live)
        self.view.health_state.attribution_latency.observe(time.monotonic() - closed_s)

    def _emit(self, live: LiveAttribution) -> None:
        self.emitter.emit(live)
        self._write_jsonl(live)

    def _write_jsonl(self, live: LiveAttribution) -> None:
        path = self.config.output.jsonl
        if not path:
            return
        lines = json.dumps(live.to_json(), separators=(",", ":")) + "\n"
        try:
            with open(path, "a", encoding="utf-8") as out:
                out.write(lines)
        except OSError as exc:
            _logger.error("cannot append attributions to %s: %s", path, exc)

    def _update_counters(self) -> None:
        counters = self.view.health_state.counters
        reader, windows = self.ingest.reader, self.windower.stats if self.windower else None
        counters["received_spans"] = self.receiver.stats.spans
        counters["received_requests"] = self.receiver.stats.trace_requests
        counters["records"] = reader.records
        counters["late"] = (windows.late_records if windows else 0) + reader.late_spans
        counters["duplicate"] = self.ingest.stats.duplicate_traces
        counters["evicted"] = self.processor.stats.evicted_series if self.processor else 0
        counters["rejected"] = self.receiver.stats.retry_answers + sum(self.receiver.stats.rejected.values())
        counters["out_of_order"] = windows.out_of_order_records if windows else 0
        counters["future"] = windows.future_records if windows else 0
        counters["orphan_traces"] = reader.orphan_traces
        self.view.health_state.queue_depth = self.receiver.queue.qsize()

    # --- reloads --------------------------------------------------------------------------------

    def request_reload(self) -> None:
        self._reload.set()

    def request_stop(self) -> None:
        self._stop.set()

    async def _watch(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._reload.wait(), POLL_S)
                forced = True
            except TimeoutError:
                forced = False
            self._reload.clear()
            if forced or _stamp(self.config_path) != self._config_stamp:
                self.reload_config()
            if await asyncio.to_thread(self.models.check, force=forced):
                self._model_file_swapped()
            # The old model keeps running, but the operator's new one is not: /healthz says so.
            self.view.health_state.degraded = self.models.rejection

    def _model_file_swapped(self) -> None:
        if self.learning is not None:
            self.learning.model_file_swapped()  # versioned in the registry, and made live
        self.view.health_state.model_version = self.models.label
        self.view.health_state.model_path = str(self.models.path)

    def reload_config(self) -> bool:
        """Re-read the config file; a bad file is rejected and the running config kept."""
        if self.config_path is None:
            return False
        self._config_stamp = _stamp(self.config_path)
        try:
            new = load_sidecar_config(self.config_path)
        except ConfigError as exc:
            problems = redact(str(exc))  # a problem may quote a substituted (secret) value
            _logger.error("config %s rejected, keeping the running one:\n%s", self.config_path, problems)
            return False
        old, self.config = self.config, new
        if new.model != old.model and self.models.check(new.model):
            self._model_file_swapped()
        if self.windower is not None:
            self.windower.lateness_ns = round(new.allowed_lateness_s * 1e9)
        restart_only = [
            key
            for key in (
                "receiver",
                "api",
                "window_s",
                "state_dir",
                "export",
                "slo_file",
                "limits",
                "learning",
            )
            if getattr(new, key) != getattr(old, key)
        ]
        if restart_only:
            _logger.warning("config reloaded; %s change only after a restart", ", ".join(restart_only))
        else:
            _logger.warning("config %s reloaded", self.config_path)
        return True

    # --- shutdown -------------------------------------------------------------------------------

    async def run_until_stopped(self) -> None:
        await self._stop.wait()
        await self.stop()

    async def stop(self) -> None:
        """Stop receiving, close every pending window, save, flush the exporters."""
        await self.receiver.stop()
        if self.learning is not None:
            await self.learning.stop()  # a running retrain is stopped; its version stays unused
        # The windows task finishes the slots it has taken (their worker thread cannot be
        # cancelled); the others stop where they are.
        self._stopping_windows.set()
        self._window_check.set()
        for task in self._tasks:
            if task.get_name() != WINDOWS_TASK:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        pending = []
        while not self.receiver.queue.empty():
            pending.append(self.receiver.queue.get_nowait())
        self._ingest(pending)
        if self.windower is not None:
            for slot in self.windower.drain():
                await self._process(slot, time.monotonic())
            if self.windower.closed_until_ns is not None:
                await asyncio.to_thread(self._save, self.windower.closed_until_ns, None, final=True)
        self._update_counters()
        if self._api_runner is not None:
            await self._api_runner.cleanup()
            self._api_runner = None
        await asyncio.to_thread(self.emitter.shutdown)
        if self.store is not None:
            self.store.close()
        _logger.warning("sidecar stopped: %d windows closed", self.results)


def _warm(processor: SlotProcessor | None) -> int:
    if processor is None:
        return 0
    # Counted on the baselines' arrays: a snapshot per series after every slot cost ~0.08 s.
    return processor.engine.baselines.warm_count()


def _stamp(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size
