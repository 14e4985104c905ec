"""The prober process behind `otelprobe run FILE`: config in, scheduler running, reloads and shutdown.

It loads the config file, keeps this replica's shard of the targets, runs them on a `Scheduler`
that records into telemetry, re-reads the file when it changes (polled) or on SIGHUP, and on
SIGTERM/SIGINT lets in-flight probes finish within a grace period before flushing telemetry.
A file that fails validation is rejected with every problem logged; the running config stays.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from otelprobe.config import load
from otelprobe.config.file_references import unreadable_in
from otelprobe.config.models import Config
from otelprobe.config.problems import shorten
from otelprobe.errors import ConfigError
from otelprobe.net.kernel_time import hold_rx_timestamping
from otelprobe.probes import PROBE_TYPES
from otelprobe.probes.base import Probe, ProbeContext
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.scheduling.loop_signals import signals_on_loop
from otelprobe.scheduling.scheduler import ProbeFactory, Scheduler
from otelprobe.scheduling.tenancy import tenancy_of
from otelprobe.settings.common import ProbeConfigBase
from otelprobe.targets import Shard, parse_shard, select, worker_of
from otelprobe.telemetry.pipeline import Telemetry

__all__ = ["Runtime", "TelemetrySink", "default_probe_factory", "default_sink", "main", "run"]

log = logging.getLogger(__name__)

POLL_INTERVAL_S: Final = 1.0
GRACE_S: Final = 10.0


class TelemetrySink(Protocol):
    """A ResultSink that must be flushed at exit (`otelprobe.telemetry.pipeline.Telemetry`)."""

    def record(self, result: ProbeResult, link: TraceRef | None) -> TraceRef | None: ...

    async def shutdown(self) -> None:
        """Flush everything recorded and stop exporting."""
        ...


ConfigLoader = Callable[[Path], "Config"]
SinkFactory = Callable[["Config"], TelemetrySink]


def default_probe_factory(config: ProbeConfigBase, ctx: ProbeContext) -> Probe:
    """Build the probe of `config.kind` from the one table of kinds."""
    probe_type: Callable[[ProbeConfigBase, ProbeContext], Probe] = PROBE_TYPES[config.kind]
    return probe_type(config, ctx)


def default_sink(config: Config) -> TelemetrySink:
    """The telemetry pipeline the config describes (exporters, service name, vantage)."""
    return Telemetry(config.telemetry, vantage=config.vantage)


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path (loading it says so)
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Runtime:
    """One prober process's life: `serve()` runs until `request_stop()` (or a signal, via `run`).

    Args:
        path: the config file.
        loader: path -> config; raises ConfigError on an invalid file.
        sink_factory: builds the telemetry sink from the first valid config.
        probe_factory: builds each target's probe.
        ctx: the probe context (vantage, default resolver).
        shard: "i/n" overriding the config's shard (ValueError if malformed).
        vantage: overrides the config's vantage name.
        worker: this process's index and count among the worker processes of one replica
            (`otelprobe run --workers`): it probes the part of the replica's shard that
            `targets.worker_of` gives it.
        poll_interval_s: how often the file's mtime/size is checked.
        grace_s: how long in-flight probes may run after a stop request.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        loader: ConfigLoader | None = None,
        sink_factory: SinkFactory | None = None,
        probe_factory: ProbeFactory = default_probe_factory,
        ctx: ProbeContext | None = None,
        shard: str | None = None,
        vantage: str | None = None,
        worker: Shard | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        grace_s: float = GRACE_S,
        rng: random.Random | None = None,
    ) -> None:
        self.path = Path(path)
        self._loader: ConfigLoader = loader or load
        self._sink_factory = sink_factory or default_sink
        self._probe_factory = probe_factory
        self._ctx = ctx
        # An invalid override is the caller's error: raise ValueError now, not at the first load.
        self._shard_override = parse_shard(shard) if shard else None
        self._vantage_override = vantage
        self._worker = worker
        self._poll_interval_s = poll_interval_s
        self._grace_s = grace_s
        self._rng = rng
        self._stamp: tuple[int, int, int] | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._sink: TelemetrySink | None = None
        self._scheduler: Scheduler | None = None
        self.config: Config | None = None
        self.reloads = 0
        """Reloads applied (the first load is not counted)."""
        self.rejected_reloads = 0

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise RuntimeError("the runtime has not started")
        return self._scheduler

    def request_reload(self) -> None:
        self._reload.set()

    def request_stop(self) -> None:
        self._stop.set()

    async def start(self) -> None:
        """Load the file and start probing.

        Raises:
            ConfigError: the file is invalid (every problem is logged too).
        """
        self._stamp = _file_stamp(self.path)
        try:
            config = self._load()
        except ConfigError as exc:
            self._log_problems(exc)
            raise
        self._sink = self._sink_factory(config)
        self._scheduler = Scheduler(
            self._sink,
            self._probe_factory,
            self._ctx or ProbeContext(vantage=config.vantage),
            concurrency=config.concurrency,
            rng=self._rng,
            tenancy=tenancy_of(config, self._processes(config)),
        )
        # Receive stamps on before the first probe, and kept on (net/kernel_time.py).
        hold_rx_timestamping(wait_s=0.1)
        await self._apply(config)
        settle_long_lived()

    async def reload(self) -> bool:
        """Re-read the file; apply it if valid, else log every problem and keep the running config."""
        self._stamp = _file_stamp(self.path)
        try:
            config = self._load()
            targets = self._select(config)
        except ConfigError as exc:
            self.rejected_reloads += 1
            self._log_problems(exc)
            log.error("config %s rejected; still running the previous config", self.path)
            return False
        except (OSError, ValueError) as exc:
            self.rejected_reloads += 1
            log.error("config %s rejected (%s); still running the previous config", self.path, exc)
            return False
        if self.config is not None and (config.vantage, config.telemetry) != (
            self.config.vantage,
            self.config.telemetry,
        ):
            log.warning("vantage and telemetry changes take effect at the next restart")
        self.scheduler.set_concurrency(config.concurrency)
        self.scheduler.set_tenancy(tenancy_of(config, self._processes(config)))
        await self.scheduler.apply(targets)
        settle_long_lived()
        self.config = config
        self.reloads += 1
        log.info("config %s reloaded: %d targets on this replica", self.path, len(targets))
        _warn_unreadable_files(targets)
        return True

    async def serve(self) -> None:
        """start(), then handle reloads until a stop is requested, then shutdown()."""
        try:
            await self.start()
            await self._watch()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop the scheduler (in-flight probes get `grace_s`), then flush telemetry."""
        if self._scheduler is not None:
            await self._scheduler.aclose(self._grace_s)
        if self._sink is not None:
            sink, self._sink = self._sink, None
            try:
                await sink.shutdown()
            except Exception:
                log.exception("flushing telemetry failed")
        log.info("prober stopped")

    async def _watch(self) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                reload = asyncio.ensure_future(self._reload.wait())
                await asyncio.wait(
                    {stop, reload}, timeout=self._poll_interval_s, return_when=asyncio.FIRST_COMPLETED
                )
                reload.cancel()
                if self._stop.is_set():
                    break
                if self._reload.is_set():
                    self._reload.clear()
                    log.info("reload requested")
                    await self.reload()
                elif _file_stamp(self.path) != self._stamp:
                    log.info("config %s changed on disk", self.path)
                    await self.reload()
        finally:
            stop.cancel()

    async def _apply(self, config: Config) -> None:
        targets = self._select(config)
        await self.scheduler.apply(targets)
        self.config = config
        log.info("probing %d targets from %s", len(targets), self.path)
        if not config.targets:
            log.warning("no targets to probe in %s; waiting for a reload", self.path)
        _warn_unreadable_files(targets)

    def _load(self) -> Config:
        config = self._loader(self.path)
        if self._vantage_override:
            config = config.model_copy(update={"vantage": self._vantage_override})
        return config

    def _select(self, config: Config) -> list[ProbeConfigBase]:
        shard = self._shard_override or config.shard
        mine: list[ProbeConfigBase] = list(config.targets)
        if shard is not None:
            mine = select(mine, shard.index, shard.count)
            log.info("shard %s: %d of %d targets", shard, len(mine), len(config.targets))
        if self._worker is not None:
            index, count = self._worker.index, self._worker.count
            mine = [target for target in mine if worker_of(target.name, count) == index]
            log.info("worker %s: %d targets", self._worker, len(mine))
        return mine

    def _processes(self, config: Config) -> int:
        """Prober processes sharing the file's targets (shards x workers): fleet-wide tenant quotas
        are divided by it."""
        shard = self._shard_override or config.shard
        return (shard.count if shard else 1) * (self._worker.count if self._worker else 1)

    def _log_problems(self, exc: ConfigError) -> None:
        for problem in exc.problems:
            log.error("invalid config: %s", problem)


def _warn_unreadable_files(targets: list[ProbeConfigBase]) -> None:
    # Files are loaded per attempt (a renewed or late-mounted one is picked up); say it once here.
    for path, (reason, count) in unreadable_in(targets).items():
        log.warning(
            "TLS file %s cannot be read (%s): %d target(s) fail with tls_config_invalid until it can",
            shorten(repr(path)),
            reason,
            count,
        )


def settle_long_lived() -> None:
    """Move what the config built (probes, TLS contexts, timers) out of the collector's generations.

    Full GC passes then scan only what probing allocates, not every long-lived object: they ran
    for ~60-220 ms at 10,000 targets, delaying every probe due meanwhile. Unfrozen first, so the
    probes a reload dropped are collected rather than kept frozen forever.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def run(
    path: str | os.PathLike[str],
    *,
    runtime_factory: Callable[[Path], Runtime] | None = None,
) -> int:
    """Run the prober until SIGTERM/SIGINT; SIGHUP reloads. Returns the process exit code.

    0 after a clean shutdown, 1 when the config file is invalid at start-up.
    """

    async def main() -> int:
        runtime = runtime_factory(Path(path)) if runtime_factory else Runtime(path)
        callbacks = {
            signal.SIGHUP: runtime.request_reload,
            signal.SIGTERM: runtime.request_stop,
            signal.SIGINT: runtime.request_stop,
        }
        # Not loop.add_signal_handler: it loses a signal when the loop is behind (loop_signals.py).
        with signals_on_loop(asyncio.get_running_loop(), callbacks):
            try:
                await runtime.serve()
            except ConfigError:
                return 1
        return 0

    return asyncio.run(main())


def main(path: str | os.PathLike[str], *, shard: str | None = None, vantage: str | None = None) -> int:
    """`otelprobe run FILE`: 0 after a clean shutdown, 1 on an invalid config, 2 on a bad --shard."""
    try:
        runtime = Runtime(path, shard=shard, vantage=vantage)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    return run(path, runtime_factory=lambda _path: runtime)
