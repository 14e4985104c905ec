"""The scheduler: runs every target's probe on its interval, with jitter, a global concurrency bound,
retries with backoff, an outer safety deadline and per-target UP/DOWN state.

With tenants or a per-destination limit (tenancy.py), attempts start through the fair gate
(fair_share.py) instead of the one semaphore: tenants share the bound by weight, each within its
own quota, rate and circuit, and an attempt that cannot start before its run's next due time is
skipped. Without them the per-attempt path is the semaphore alone, as before.

It sits between config and telemetry: `runtime.py` hands it target configs (and again on every
reload); it creates one probe per target and passes every `ProbeResult` to a `ResultSink`.
All timers live in the event loop's own heap (one `loop.call_at` handle per target); a task exists
only while a run is in flight.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final, Protocol

from otelprobe.errors import ConnectTimeout, ProbeTimeout
from otelprobe.probes.base import Probe, ProbeContext
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.scheduling.fair_share import Destination, FairGate, TenantLimits, TenantShare
from otelprobe.scheduling.health import Health, TargetState, backoff_s
from otelprobe.scheduling.stats import SchedulerStats
from otelprobe.scheduling.tenancy import Tenancy, destination_of
from otelprobe.settings.common import ProbeConfigBase
from otelprobe.targets import spread_offset
from otelprobe.timing import PhaseClock

__all__ = ["ProbeFactory", "ResultSink", "Scheduler", "SchedulerStats", "TargetState"]

log = logging.getLogger(__name__)

START_GRID_S: Final = 0.01
"""Jittered starts land on this grid (of the loop's clock), so that targets due within the same
10 ms start in one wake-up of the loop instead of one wake-up each. Measured with two workers at
100 probes/s each: ~7 % less CPU per probe (bench/README.md, Workers). Never outside the target's
own jitter window, which is random anyway; a target without jitter starts exactly on time."""


def on_start_grid(when: float, earliest: float, latest: float) -> float:
    """`when` moved to the next START_GRID_S boundary, or the one before if that passes `latest`;
    `when` itself if no boundary lies in [earliest, latest]."""
    grid = START_GRID_S
    up = math.ceil(when / grid) * grid
    if up <= latest:
        return up
    down = up - grid
    return down if down >= earliest else when


SAFETY_MARGIN_S: Final = 1.0
"""The outer deadline is the target's timeout plus this: probes enforce their own timeout, this
only catches a probe that ignores it."""


class ResultSink(Protocol):
    """Where results go (telemetry in production, a list in tests)."""

    def record(self, result: ProbeResult, link: TraceRef | None) -> TraceRef | None:
        """Export one attempt; `link` is the first attempt's trace when this is a retry."""
        ...


ProbeFactory = Callable[[ProbeConfigBase, ProbeContext], Probe]
_TIMEOUT_TYPES: Final = frozenset({ProbeTimeout.error_type, ConnectTimeout.error_type})


@dataclass(eq=False, slots=True)
class _Target:
    config: ProbeConfigBase
    probe: Probe
    health: Health
    anchor: float
    """Loop time of deadline number 0; deadline k = anchor + k × interval (no drift)."""
    seq: int = 0
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None
    share: TenantShare | None = None
    """Its tenant's share of the fair gate (None: no tenancy, the semaphore alone)."""
    destination: Destination | None = None
    queued: bool = False
    """Its run is waiting at the fair gate (it gives up its place at the next due time)."""


def _run_done(t: _Target, _task: asyncio.Task[None]) -> None:
    t.task = None


class Scheduler:
    """Runs a set of targets until `aclose()`; `apply()` replaces the set (hot reload).

    Args:
        sink: receives every result.
        factory: builds the probe of a target (called once per target and config version).
        ctx: passed to the factory.
        concurrency: the most attempts in flight at once, over all targets.
        rng: source of jitter (seed it in tests).
        tenancy: tenants' limits and the per-destination limit; None = the one bound only.
    """

    def __init__(
        self,
        sink: ResultSink,
        factory: ProbeFactory,
        ctx: ProbeContext | None = None,
        *,
        concurrency: int = 256,
        rng: random.Random | None = None,
        tenancy: Tenancy | None = None,
    ) -> None:
        self._sink = sink
        self._factory = factory
        self._ctx = ctx or ProbeContext()
        self._rng = rng or random.Random()
        self._semaphore = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._targets: dict[str, _Target] = {}
        self._orphans: set[asyncio.Task[list[ProbeResult]]] = set()
        self._epoch: float | None = None
        self._closed = False
        self._tenancy = tenancy
        self._gate: FairGate | None = None
        self.stats = SchedulerStats()

    # -- public API -------------------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        return self._concurrency

    def set_concurrency(self, concurrency: int) -> None:
        """Change the bound; runs already waiting keep the old one, new runs use the new one."""
        if concurrency != self._concurrency:
            self._semaphore = asyncio.Semaphore(concurrency)
            self._concurrency = concurrency
            if self._gate is not None:
                self._gate.capacity = concurrency

    @property
    def gate(self) -> FairGate | None:
        """The fair gate when the scheduler has tenancy (its tenants' counters are read from it)."""
        return self._gate

    def set_tenancy(self, tenancy: Tenancy | None) -> None:
        """Replace the tenancy; takes effect for the targets at the next `apply()`."""
        self._tenancy = tenancy

    def targets(self) -> Mapping[str, ProbeConfigBase]:
        return {name: t.config for name, t in self._targets.items()}

    def states(self) -> Mapping[str, TargetState]:
        return {name: t.health.state for name, t in self._targets.items()}

    def next_run_at(self, name: str) -> float | None:
        """Loop time at which the target's next run is due (None when it has no timer)."""
        timer = self._targets[name].timer
        return timer.when() if timer is not None else None

    @property
    def in_flight(self) -> int:
        return sum(1 for t in self._targets.values() if t.task is not None)

    async def apply(self, configs: Sequence[ProbeConfigBase]) -> None:
        """Make `configs` the running set.

        Unchanged targets keep their probe, state and schedule phase; changed ones are rebuilt;
        removed ones are stopped (an in-flight run is cancelled) and their probe closed.
        """
        if self._closed:
            raise RuntimeError("scheduler is closed")
        loop = asyncio.get_running_loop()
        if self._epoch is None:
            self._epoch = loop.time()
        wanted = {c.name: c for c in configs}
        if len(wanted) != len(configs):
            raise ValueError("target names must be unique")
        stale = [t for name, t in self._targets.items() if wanted.get(name) != t.config]
        for t in stale:
            del self._targets[t.config.name]
        await asyncio.gather(*(self._stop(t) for t in stale))
        for name, config in wanted.items():
            if name in self._targets:
                continue
            try:
                probe = self._factory(config, self._ctx)
            except Exception:
                self.stats.build_errors += 1
                log.exception(
                    "cannot build the %s probe of target %s; it is not scheduled", config.kind, name
                )
                continue
            target = _Target(config, probe, Health(name, config.failure_threshold), self._anchor(config))
            self._targets[name] = target
            self._arm(target, loop)
        self._bind_tenants()
        log.info("scheduling %d targets (%d rebuilt or removed)", len(self._targets), len(stale))

    def _bind_tenants(self) -> None:
        """Give every target its tenant's share and its destination (or none without tenancy)."""
        tenancy = self._tenancy
        if tenancy is None:
            self._gate = None
            for t in self._targets.values():
                t.share = t.destination = None
            self._label_telemetry({})
            return
        gate = self._gate
        if gate is None:
            gate = self._gate = FairGate(self._concurrency, tenancy.per_destination, tenancy.circuit)
            observe = getattr(self._sink, "observe_tenants", None)
            if observe is not None:
                observe(self._tenant_snapshot)
        gate.capacity, gate.per_destination, gate.circuit = (
            self._concurrency,
            tenancy.per_destination,
            tenancy.circuit,
        )
        for name in {*gate.tenants, *tenancy.limits}:
            gate.tenant(name, tenancy.limits.get(name, TenantLimits()))  # an unlisted tenant: no limits
        tenants: dict[str, str] = {}
        for name, t in self._targets.items():
            tenant = tenancy.tenant_of(t.config)
            t.share = gate.tenant(tenant)
            t.destination = gate.destination(destination_of(t.config))
            tenants[name] = tenant
        self._label_telemetry(tenants if tenancy.labelled else {})

    def _tenant_snapshot(self) -> list[tuple[str, dict[str, float]]]:
        gate = self._gate
        return gate.snapshot() if gate is not None else []

    def _label_telemetry(self, tenants: Mapping[str, str]) -> None:
        # A sink may label telemetry by tenant and export the gate's counters (`Telemetry` does:
        # set_target_tenants, observe_tenants); a plain ResultSink (tests, benches) need not.
        label = getattr(self._sink, "set_target_tenants", None)
        if label is not None:
            label(tenants)

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Stop all timers, let in-flight runs finish within `grace_s`, cancel the rest, close probes."""
        if self._closed:
            return
        self._closed = True
        if self._gate is not None:
            # Runs queued at the gate are dropped, as those given the semaphore after a stop (_run).
            self._gate.close()
        targets = list(self._targets.values())
        self._targets.clear()
        for t in targets:
            if t.timer is not None:
                t.timer.cancel()
        running = [t.task for t in targets if t.task is not None]
        if running:
            log.info(
                "stopping: %d probe runs in flight get up to %.1fs; no new ones are scheduled",
                len(running),
                grace_s,
            )
            _, pending = await asyncio.wait(running, timeout=grace_s)
            if pending:
                log.warning("cancelling %d probe runs still going after %.1fs", len(pending), grace_s)
        await asyncio.gather(*(self._stop(t) for t in targets))
        if self._orphans:
            for task in self._orphans:
                task.cancel()
            await asyncio.wait(self._orphans, timeout=SAFETY_MARGIN_S)

    # -- timing -----------------------------------------------------------------------------

    def _anchor(self, config: ProbeConfigBase) -> float:
        # Deadlines are epoch + offset + k × interval: a new target starts at its own phase, and
        # a target rebuilt with the same interval stays on the phase it had.
        assert self._epoch is not None
        interval = config.interval_s
        first = self._epoch + spread_offset(config.name, interval)
        now = asyncio.get_running_loop().time()
        if first < now:
            first += math.ceil((now - first) / interval) * interval
        return first

    def _jittered(self, due: float, config: ProbeConfigBase) -> float:
        """`due` plus the target's random jitter, on the start grid when the jitter window spans it."""
        jitter = min(config.effective_jitter_s, config.interval_s)
        if jitter <= 0:
            return due  # no jitter asked for: exactly on time
        return on_start_grid(due + self._rng.uniform(0.0, jitter), due, due + jitter)

    def _arm(self, t: _Target, loop: asyncio.AbstractEventLoop) -> None:
        """Set the timer for run number t.seq, skipping deadlines already missed entirely."""
        interval = t.config.interval_s
        now = loop.time()
        missed = math.floor((now - (t.anchor + t.seq * interval)) / interval)
        if missed > 0:
            t.seq += missed
            self.stats.skipped_runs += missed
            log.warning("target %s skipped %d runs: the event loop was blocked", t.config.name, missed)
        when = self._jittered(t.anchor + t.seq * interval, t.config)
        t.timer = loop.call_at(when, self._fire, t, when)

    def _fire(self, t: _Target, scheduled: float) -> None:
        loop = asyncio.get_running_loop()
        t.seq += 1
        self._arm(t, loop)
        assert t.timer is not None
        if t.task is not None and t.queued:
            # The previous run is still waiting at the gate and expires now (counted there):
            # this run starts as soon as that one has ended.
            t.task.add_done_callback(partial(self._start_after, t, scheduled))
            return
        if t.task is not None:
            self.stats.skipped_runs += 1
            if t.share is not None:
                # Expected while its tenant is throttled or shed: counted per tenant, not logged each time.
                t.share.skipped += 1
                log.debug("target %s: previous run still going, skipping this one", t.config.name)
            else:
                log.warning("target %s: previous run still going, skipping this one", t.config.name)
            return
        t.task = loop.create_task(self._run(t, scheduled, t.timer.when()), name=f"probe {t.config.name}")
        t.task.add_done_callback(partial(_run_done, t))

    def _start_after(self, t: _Target, scheduled: float, _previous: asyncio.Task[None]) -> None:
        if self._closed or t.task is not None or self._targets.get(t.config.name) is not t or t.timer is None:
            return
        loop = asyncio.get_running_loop()
        t.task = loop.create_task(self._run(t, scheduled, t.timer.when()), name=f"probe {t.config.name}")
        t.task.add_done_callback(partial(_run_done, t))

    # -- one run ----------------------------------------------------------------------------

    async def _run(self, t: _Target, scheduled: float, next_run: float) -> None:
        """The first attempt and its retries; never raises except on cancellation."""
        loop = asyncio.get_running_loop()
        config = t.config
        self.stats.runs += 1
        success = False
        links: list[TraceRef | None] = []
        for attempt in range(1, config.retries.count + 2):
            if attempt > 1:
                pause = backoff_s(config.retries, attempt - 1, self._rng)
                # A retry must finish before the next scheduled run starts; none start at shutdown.
                if self._closed or loop.time() + pause + config.timeout_s > next_run:
                    break
                await asyncio.sleep(pause)
                self.stats.retries += 1
            share = t.share
            if share is None:
                async with self._semaphore:
                    if self._closed:  # got its slot after a stop: not started
                        self.stats.skipped_runs += 1
                        return
                    if attempt == 1:
                        self.stats.lateness.add(loop.time() - scheduled)
                    self.stats.attempts += 1
                    results = await self._attempt(t, attempt)
            else:
                due = scheduled if attempt == 1 else loop.time()
                expires = next_run if attempt == 1 else next_run - config.timeout_s
                granted, results = await self._gated_attempt(t, share, attempt, due, expires)
                if not granted and attempt == 1:
                    self.stats.skipped_runs += 1
                    return  # not run at all: neither a failure nor a success of the target
                if not granted:
                    break  # no time left for this retry
            if results is None:  # the probe raised: a bug, logged; retrying would repeat it
                break
            refs = [
                self._record(r, links[i] if i < len(links) else (links[0] if links else None))
                for i, r in enumerate(results)
            ]
            if attempt == 1:
                links = refs
            success = bool(results) and all(r.success for r in results)
            if success:
                break
        if not success:
            self.stats.failed_runs += 1
        t.health.observe(success)

    async def _gated_attempt(
        self, t: _Target, share: TenantShare, attempt: int, due: float, expires: float
    ) -> tuple[bool, list[ProbeResult] | None]:
        """One attempt through the fair gate: (False, None) when it could not start before `expires`."""
        gate = self._gate
        assert gate is not None
        destination = t.destination
        t.queued = True
        try:
            granted = await gate.acquire(share, destination, due, expires)
        finally:
            t.queued = False
        if not granted:
            return False, None
        try:
            if attempt == 1:
                self.stats.lateness.add(asyncio.get_running_loop().time() - due)
            self.stats.attempts += 1
            results = await self._attempt(t, attempt)
        finally:
            gate.release(share, destination)
        if results is not None:
            timed_out = any(r.error is not None and r.error.error_type in _TIMEOUT_TYPES for r in results)
            gate.observe(share, timed_out)
        return True, results

    async def _attempt(self, t: _Target, attempt: int) -> list[ProbeResult] | None:
        """One probe.run under the outer safety deadline; None if the probe raised."""
        config = t.config
        clock = PhaseClock()
        start_ns = clock.now_ns()
        # A separate task, so that a probe that swallows cancellation cannot hang the run either.
        task = asyncio.get_running_loop().create_task(t.probe.run(attempt))
        try:
            done, _ = await asyncio.wait({task}, timeout=config.timeout_s + SAFETY_MARGIN_S)
        except asyncio.CancelledError:
            # Shutdown or removal: give the probe a moment to unwind (close its sockets).
            task.cancel()
            await asyncio.wait({task}, timeout=SAFETY_MARGIN_S)
            self._orphan(task)
            raise
        if not done:
            task.cancel()
            self._orphan(task)
            self.stats.probes_hung += 1
            log.warning(
                "target %s: %s probe ignored its %.3gs timeout; cut off at the outer deadline",
                config.name,
                t.probe.kind,
                config.timeout_s,
            )
            error = ProbeTimeout("probe_unresponsive", "probe did not return by its timeout + 1 s")
            return [ProbeResult.of_attempt(t.probe.kind, config.name, attempt, clock, start_ns, error, {})]
        exc = asyncio.CancelledError("the probe cancelled itself") if task.cancelled() else task.exception()
        if exc is not None:
            self.stats.probe_exceptions += 1
            log.error("target %s: %s probe raised", config.name, t.probe.kind, exc_info=exc)
            return None
        return task.result()

    def _record(self, result: ProbeResult, link: TraceRef | None) -> TraceRef | None:
        try:
            return self._sink.record(result, link)
        except Exception:
            self.stats.sink_errors += 1
            log.exception("recording the result of target %s failed", result.target)
            return None

    def _orphan(self, task: asyncio.Task[list[ProbeResult]]) -> None:
        # Keep a reference until the cancelled probe actually ends, and collect its outcome.
        self._orphans.add(task)
        task.add_done_callback(self._orphan_done)

    def _orphan_done(self, task: asyncio.Task[list[ProbeResult]]) -> None:
        self._orphans.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("cancelled probe ended with %r", task.exception())

    async def _stop(self, t: _Target) -> None:
        if t.timer is not None:
            t.timer.cancel()
            t.timer = None
        if t.task is not None:
            t.task.cancel()
            await asyncio.wait({t.task})
        try:
            await t.probe.aclose()
        except Exception:
            log.exception("closing the probe of target %s failed", t.config.name)
