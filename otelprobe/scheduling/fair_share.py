"""The fair gate: who may start a probe attempt when there are tenants, quotas and politeness limits.

Used by scheduler.py instead of its one semaphore when the config has `tenants:` or
`scheduler.per_destination`. An attempt first takes a slot of its destination (host, port), then
a slot of the global capacity through its tenant:

- A tenant may start an attempt when it is under its concurrency (cut by its circuit,
  tenant_circuit.py) and its token bucket (rate, burst) has a token. A tenant over its own
  limits waits; the others do not wait for it.
- When the global capacity is full, waiting attempts are granted by start-time fair queuing over
  tenants (each grant advances the tenant's tag by 1/weight; the smallest tag among tenants that
  may start goes first), so backlogged tenants share the capacity in proportion to their weights;
  within a tenant, the attempt due earliest goes first (earliest deadline first).
- Every wait has an expiry (the run's next due time): an attempt not started by then is dropped,
  and counted as skipped, or as shed when its tenant's circuit was open.
- Closing the gate (the prober is stopping) drops every waiting attempt at once, counted the same
  way, and refuses new ones: nothing starts after a stop, whatever the capacity freed in the grace.

Synchronous bookkeeping around futures: no task of its own; timers only for expiries and for
the moment a rate-limited tenant has a token again.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Final

from otelprobe.config.tenants import CircuitConfig
from otelprobe.scheduling.stats import LatencyStats
from otelprobe.scheduling.tenant_circuit import CircuitState, TenantCircuit

__all__ = ["Destination", "FairGate", "TenantLimits", "TenantShare", "TokenBucket"]

_LATENESS_WINDOW: Final = 8192


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """One tenant's limits in this process (fleet-wide ones already divided)."""

    concurrency: int | None = None
    rate: float | None = None
    burst: float | None = None
    weight: float = 1.0


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; starts full."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def refill(self, now: float) -> float:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        return self.tokens

    def ready_at(self, now: float) -> float:
        """When a whole token is there (now if it is)."""
        missing = 1.0 - self.refill(now)
        return now if missing <= 0 else now + missing / self.rate


@dataclass(eq=False, slots=True)
class _Waiter:
    due: float
    future: asyncio.Future[bool]
    timer: asyncio.TimerHandle | None = None


class Destination:
    """Slots of one (host, port): at most `limit` attempts in flight, waiters served earliest due first."""

    __slots__ = ("_heap", "in_use", "key", "waiting")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.in_use = 0
        self.waiting = 0
        self._heap: list[tuple[float, int, _Waiter]] = []


@dataclass(eq=False, slots=True)
class TenantShare:
    """One tenant's queue, usage and counters (read by telemetry as plain numbers)."""

    name: str
    limits: TenantLimits
    circuit: TenantCircuit
    bucket: TokenBucket | None = None
    in_use: int = 0
    tag: float = 0.0
    """Start-time fair queuing tag: the virtual time of its next grant."""
    waiting: int = 0
    heap: list[tuple[float, int, _Waiter]] = field(default_factory=list)
    lateness: LatencyStats = field(default_factory=lambda: LatencyStats(_LATENESS_WINDOW))
    started: int = 0
    delayed: int = 0
    """Attempts that waited in the queue before starting or being dropped."""
    throttled: int = 0
    """Of those, the ones held back by the tenant's own rate or concurrency (not by others)."""
    skipped: int = 0
    """Attempts dropped because they could not start before their run's next due time."""
    shed: int = 0
    """Attempts dropped while the tenant's circuit was open or half-open."""

    def limit(self, capacity: int, now: float) -> int:
        base = self.limits.concurrency or capacity
        return self.circuit.limit(base, now)

    def may_start(self, capacity: int, now: float) -> bool:
        if self.in_use >= self.limit(capacity, now):
            return False
        return self.bucket is None or self.bucket.refill(now) >= 1.0


class FairGate:
    """The global capacity shared by tenants, and the per-destination limit.

    Args:
        capacity: attempts in flight at most, over every tenant (config `concurrency`).
        per_destination: attempts in flight at most per destination; None = no limit.
        circuit: the circuit settings of every tenant.
    """

    def __init__(self, capacity: int, per_destination: int | None, circuit: CircuitConfig) -> None:
        self.capacity = capacity
        self.per_destination = per_destination
        self.circuit = circuit
        self.in_use = 0
        self.tenants: dict[str, TenantShare] = {}
        self._destinations: dict[Hashable, Destination] = {}
        self._vtime = 0.0
        self._order = itertools.count()
        self._wakeup: asyncio.TimerHandle | None = None
        self._closed = False

    # -- set-up -----------------------------------------------------------------------------

    def tenant(self, name: str, limits: TenantLimits | None = None) -> TenantShare:
        """The share of tenant `name`, created on first use; `limits` (when given) replace its own."""
        share = self.tenants.get(name)
        now = asyncio.get_running_loop().time()
        if share is None:
            share = self.tenants[name] = TenantShare(
                name, limits or TenantLimits(), TenantCircuit(name, self.circuit)
            )
        elif limits is not None:
            share.limits = limits
        share.circuit.config = self.circuit
        rate = share.limits.rate
        if rate is None:
            share.bucket = None
        else:
            burst = share.limits.burst or max(1.0, rate)
            if share.bucket is None:
                share.bucket = TokenBucket(rate, burst, now)
            else:
                share.bucket.rate, share.bucket.burst = rate, burst
        return share

    def destination(self, key: Hashable | None) -> Destination | None:
        if key is None or self.per_destination is None:
            return None
        found = self._destinations.get(key)
        if found is None:
            found = self._destinations[key] = Destination(key)
        return found

    def snapshot(self) -> list[tuple[str, dict[str, float]]]:
        """Every tenant's counters and usage now (telemetry/tenant_metrics.py reads this on its thread)."""
        out = []
        for share in list(self.tenants.values()):
            base = share.limits.concurrency or self.capacity
            values: dict[str, float] = {
                "started": share.started,
                "delayed": share.delayed,
                "throttled": share.throttled,
                "skipped": share.skipped,
                "shed": share.shed,
                "in_flight": share.in_use,
                "limit": share.circuit.shed_limit(base),
                "circuit_open": int(share.circuit.state is not CircuitState.CLOSED),
            }
            out.append((share.name, values))
        return out

    # -- acquiring and releasing ------------------------------------------------------------

    async def acquire(
        self, share: TenantShare, destination: Destination | None, due: float, expires: float
    ) -> bool:
        """Wait for a slot; True when it is held (release it), False when `expires` came first.

        Args:
            share: the attempt's tenant.
            destination: its (host, port), None when not limited.
            due: when it should start (earliest due first within a tenant and a destination).
            expires: loop time after which it is dropped.
        """
        loop = asyncio.get_running_loop()
        if self._closed:
            self._dropped(share, delayed=False)
            return False
        if destination is not None and not await self._acquire_destination(destination, due, expires, loop):
            self._dropped(share, delayed=True)
            return False
        if self._closed:  # closed while it waited for its destination, which it now holds
            if destination is not None:
                self._release_destination(destination)
            self._dropped(share, delayed=True)
            return False
        now = loop.time()
        within_own_limits = share.may_start(self.capacity, now)
        if not share.waiting and self.in_use < self.capacity and within_own_limits:
            self._grant(share, now)
            share.lateness.add(now - due)
            return True
        share.delayed += 1
        if not within_own_limits:
            share.throttled += 1  # its own rate or concurrency holds it back, not the others
        waiter = _Waiter(due, loop.create_future())
        if not share.waiting:
            share.tag = max(share.tag, self._vtime)  # a tenant idle until now earns no credit
        share.waiting += 1
        heapq.heappush(share.heap, (due, next(self._order), waiter))
        waiter.timer = loop.call_at(expires, self._expire, share, waiter)
        self._dispatch(loop)
        try:
            granted = await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.result():
                self.release(share, None)  # granted, but its run was cancelled before it resumed
            elif not waiter.future.done() or waiter.future.cancelled():
                self._forget(share, waiter)
            if destination is not None:
                self._release_destination(destination)
            raise
        if not granted:
            if destination is not None:
                self._release_destination(destination)
            return False
        share.lateness.add(loop.time() - due)
        return True

    def release(self, share: TenantShare, destination: Destination | None) -> None:
        """Give back the slots of one finished attempt."""
        self.in_use -= 1
        share.in_use -= 1
        if destination is not None:
            self._release_destination(destination)
        self._dispatch(asyncio.get_running_loop())

    def observe(self, share: TenantShare, timed_out: bool) -> None:
        """One finished attempt of the tenant, for its circuit."""
        loop = asyncio.get_running_loop()
        share.circuit.observe(timed_out, loop.time())
        self._dispatch(loop)  # a closed circuit may let waiting attempts start

    def close(self) -> None:
        """Stop granting: every waiting attempt is dropped now (counted as skipped or shed, as an
        expired one) and later ones are refused; attempts in flight finish and release as usual."""
        if self._closed:
            return
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        for share in self.tenants.values():
            for _, _, waiter in list(share.heap):  # _expire may clear the heap
                self._expire(share, waiter)
            share.heap.clear()
        for dest in self._destinations.values():
            for _, _, waiter in list(dest._heap):
                self._expire_destination(dest, waiter)
            dest._heap.clear()

    # -- internals --------------------------------------------------------------------------

    def _grant(self, share: TenantShare, now: float) -> None:
        self.in_use += 1
        share.in_use += 1
        share.started += 1
        if share.bucket is not None:
            share.bucket.tokens -= 1.0
        self._vtime = max(self._vtime, share.tag)
        share.tag += 1.0 / share.limits.weight

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Grant waiting attempts while there is capacity, smallest tag first among those that may start."""
        if self._closed:
            return
        now = loop.time()
        wake_at = math.inf
        while self.in_use < self.capacity:
            best: TenantShare | None = None
            for share in self.tenants.values():
                if not share.waiting:
                    continue
                if not share.may_start(self.capacity, now):
                    if share.bucket is not None and share.in_use < share.limit(self.capacity, now):
                        wake_at = min(wake_at, share.bucket.ready_at(now))
                    continue
                if best is None or share.tag < best.tag:
                    best = share
            if best is None:
                break
            waiter = self._pop(best)
            self._grant(best, now)
            if waiter.timer is not None:
                waiter.timer.cancel()
            waiter.future.set_result(True)
        if wake_at < math.inf and (self._wakeup is None or self._wakeup.when() > wake_at):
            if self._wakeup is not None:
                self._wakeup.cancel()
            self._wakeup = loop.call_at(wake_at, self._wake)

    def _wake(self) -> None:
        self._wakeup = None
        self._dispatch(asyncio.get_running_loop())

    def _pop(self, share: TenantShare) -> _Waiter:
        while True:
            _, _, waiter = heapq.heappop(share.heap)
            if not waiter.future.done():
                share.waiting -= 1
                return waiter

    def _expire(self, share: TenantShare, waiter: _Waiter) -> None:
        if waiter.future.done():
            return
        self._forget(share, waiter)
        self._dropped(share, delayed=False)
        waiter.future.set_result(False)

    def _dropped(self, share: TenantShare, *, delayed: bool) -> None:
        if delayed:
            share.delayed += 1
        if share.circuit.state is CircuitState.CLOSED:
            share.skipped += 1
        else:
            share.shed += 1

    def _forget(self, share: TenantShare, waiter: _Waiter) -> None:
        # Lazy removal: the heap entry stays until popped; only the count changes now.
        share.waiting -= 1
        if waiter.timer is not None:
            waiter.timer.cancel()
        if not share.waiting:
            share.heap.clear()

    async def _acquire_destination(
        self, dest: Destination, due: float, expires: float, loop: asyncio.AbstractEventLoop
    ) -> bool:
        assert self.per_destination is not None
        if not dest.waiting and dest.in_use < self.per_destination:
            dest.in_use += 1
            return True
        waiter = _Waiter(due, loop.create_future())
        dest.waiting += 1
        heapq.heappush(dest._heap, (due, next(self._order), waiter))
        waiter.timer = loop.call_at(expires, self._expire_destination, dest, waiter)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.result():
                self._release_destination(dest)
            elif not waiter.future.done() or waiter.future.cancelled():
                dest.waiting -= 1
                if waiter.timer is not None:
                    waiter.timer.cancel()
            raise

    def _expire_destination(self, dest: Destination, waiter: _Waiter) -> None:
        if not waiter.future.done():
            dest.waiting -= 1
            waiter.future.set_result(False)

    def _release_destination(self, dest: Destination) -> None:
        dest.in_use -= 1
        assert self.per_destination is not None
        while dest.waiting and dest.in_use < self.per_destination and not self._closed:
            _, _, waiter = heapq.heappop(dest._heap)
            if waiter.future.done():
                continue
            dest.waiting -= 1
            dest.in_use += 1
            if waiter.timer is not None:
                waiter.timer.cancel()
            waiter.future.set_result(True)
        if not dest.waiting:
            dest._heap.clear()
