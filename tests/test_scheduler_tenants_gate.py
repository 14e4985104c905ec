"""The fair gate (scheduling/fair_share.py) and a tenant's circuit, without probes: who starts when."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from otelprobe.config.tenants import CircuitConfig
from otelprobe.scheduling.fair_share import FairGate, TenantLimits, TokenBucket
from otelprobe.scheduling.tenant_circuit import CircuitState, TenantCircuit

FAR = 1e9
NO_CIRCUIT = CircuitConfig(enabled=False)


async def _grant_order(weights: dict[str, float], queued: int) -> list[str]:
    """Capacity 1, held while `queued` attempts of each tenant queue up; then the order they start in."""
    gate = FairGate(1, None, NO_CIRCUIT)
    shares = {name: gate.tenant(name, TenantLimits(weight=w)) for name, w in weights.items()}
    blocker = gate.tenant("blocker")
    assert await gate.acquire(blocker, None, 0.0, FAR)
    order: list[str] = []

    async def one(name: str) -> None:
        assert await gate.acquire(shares[name], None, 0.0, FAR)
        order.append(name)
        await asyncio.sleep(0)
        gate.release(shares[name], None)

    tasks = [asyncio.create_task(one(name)) for _ in range(queued) for name in weights]
    await asyncio.sleep(0)  # every task is queued
    gate.release(blocker, None)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    return order


@settings(max_examples=40, deadline=None)
@given(
    weights=st.lists(st.integers(1, 8), min_size=2, max_size=4),
    grants=st.integers(5, 60),
)
def test_backlogged_tenants_share_the_capacity_by_weight(weights: list[int], grants: int) -> None:
    named = {f"t{i}": float(w) for i, w in enumerate(weights)}
    order = asyncio.run(_grant_order(named, queued=60))
    prefix = order[:grants]
    counts = {name: prefix.count(name) for name in named}
    # Start-time fair queuing: normalised service of any two backlogged tenants differs by at
    # most one grant's worth of each (1/w_i + 1/w_j), at every prefix of the grant sequence.
    for a, wa in named.items():
        for b, wb in named.items():
            assert abs(counts[a] / wa - counts[b] / wb) <= 1 / wa + 1 / wb + 1e-9, (counts, named)


async def test_within_a_tenant_the_attempt_due_earliest_starts_first() -> None:
    gate = FairGate(1, None, NO_CIRCUIT)
    share = gate.tenant("a")
    assert await gate.acquire(share, None, 0.0, FAR)
    started: list[float] = []

    async def one(due: float) -> None:
        assert await gate.acquire(share, None, due, FAR)
        started.append(due)
        await asyncio.sleep(0)
        gate.release(share, None)

    tasks = [asyncio.create_task(one(due)) for due in (3.0, 1.0, 2.0, 0.5)]
    await asyncio.sleep(0)
    gate.release(share, None)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert started == [0.5, 1.0, 2.0, 3.0]


async def test_a_tenant_at_its_quota_waits_and_never_holds_up_another() -> None:
    gate = FairGate(10, None, NO_CIRCUIT)
    big = gate.tenant("big", TenantLimits(concurrency=2))
    small = gate.tenant("small")
    assert await gate.acquire(big, None, 0.0, FAR)
    assert await gate.acquire(big, None, 0.0, FAR)
    waiting = asyncio.create_task(gate.acquire(big, None, 0.0, FAR))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert (big.delayed, big.throttled) == (1, 1)
    # The other tenant starts at once: capacity is free, and big's quota is big's alone.
    assert await asyncio.wait_for(gate.acquire(small, None, 0.0, FAR), 1)
    assert (small.delayed, small.throttled, gate.in_use, big.in_use) == (0, 0, 3, 2)
    gate.release(big, None)
    assert await asyncio.wait_for(waiting, 1)
    assert big.in_use == 2


async def test_an_attempt_that_cannot_start_before_it_expires_is_skipped_and_counted() -> None:
    gate = FairGate(1, None, NO_CIRCUIT)
    share = gate.tenant("a")
    assert await gate.acquire(share, None, 0.0, FAR)
    loop = asyncio.get_running_loop()
    assert not await gate.acquire(share, None, loop.time(), loop.time() + 0.05)
    assert (share.delayed, share.skipped, share.shed, share.waiting) == (1, 1, 0, 0)
    gate.release(share, None)
    assert gate.in_use == 0
    assert await gate.acquire(share, None, 0.0, FAR)  # nothing left behind in its queue


async def test_a_rate_budget_spaces_the_starts_of_its_tenant_only() -> None:
    gate = FairGate(100, None, NO_CIRCUIT)
    limited = gate.tenant("limited", TenantLimits(rate=20.0, burst=1.0))
    free = gate.tenant("free")
    loop = asyncio.get_running_loop()
    start = loop.time()
    started: list[float] = []

    async def one() -> None:
        if await gate.acquire(limited, None, start, start + 0.5):
            started.append(loop.time() - start)

    tasks = [asyncio.create_task(one()) for _ in range(30)]
    for _ in range(20):
        assert await gate.acquire(free, None, loop.time(), FAR)  # never waits for the budget
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    # 1 token at once, then 20/s for ~0.5 s: about 11 of 30; the others expire (skipped).
    assert 5 <= len(started) <= 13, started
    assert limited.skipped == 30 - len(started)
    assert limited.throttled >= 29
    assert free.delayed == 0
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert sum(gaps) / len(gaps) >= 0.04  # 50 ms per token, less the loop's lateness


async def test_at_most_n_in_flight_per_destination_across_tenants() -> None:
    gate = FairGate(100, 1, NO_CIRCUIT)
    a, b = gate.tenant("a"), gate.tenant("b")
    host = gate.destination(("example.test", 443))
    other = gate.destination(("other.test", 443))
    assert host is not None and other is not None
    assert await gate.acquire(a, host, 0.0, FAR)
    second = asyncio.create_task(gate.acquire(b, host, 0.0, FAR))
    await asyncio.sleep(0.01)
    assert not second.done()
    assert await asyncio.wait_for(gate.acquire(b, other, 0.0, FAR), 1)  # another host is not held up
    gate.release(a, host)
    assert await asyncio.wait_for(second, 1)
    assert host.in_use == 1


async def test_a_cancelled_waiter_leaves_no_slot_taken() -> None:
    gate = FairGate(1, 1, NO_CIRCUIT)
    share = gate.tenant("a")
    dest = gate.destination(("h", 1))
    assert await gate.acquire(share, dest, 0.0, FAR)
    waiting = asyncio.create_task(gate.acquire(share, dest, 0.0, FAR))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    gate.release(share, dest)
    assert (gate.in_use, share.in_use, share.waiting) == (0, 0, 0)
    assert dest is not None and (dest.in_use, dest.waiting) == (0, 0)


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=3.0, now=0.0)
    assert bucket.refill(0.0) == 3.0
    bucket.tokens = 0.0
    assert abs(bucket.refill(0.15) - 1.5) < 1e-9
    assert bucket.refill(10.0) == 3.0
    bucket.tokens = 0.5
    assert abs(bucket.ready_at(10.0) - 10.05) < 1e-9


def test_a_circuit_opens_on_piled_up_timeouts_and_closes_after_a_good_half_open_trial() -> None:
    config = CircuitConfig(
        timeout_ratio=0.5, window=10, min_attempts=4, open_for=5, shed_to=0.25, half_open_attempts=2
    )
    circuit = TenantCircuit("big", config)
    assert circuit.limit(40, 0.0) == 40
    for t in (0.0, 0.1, 0.2):
        circuit.observe(True, t)
    assert circuit.state is CircuitState.CLOSED  # fewer than min_attempts: no decision
    circuit.observe(False, 0.3)
    assert circuit.state is CircuitState.OPEN  # 3 of 4 timed out
    assert circuit.limit(40, 1.0) == 10
    assert circuit.limit(3, 1.0) == 1  # never below one: the tenant keeps probing
    assert circuit.limit(40, 5.3) == 10 and circuit.state is CircuitState.HALF_OPEN
    circuit.observe(True, 5.4)
    circuit.observe(True, 5.5)
    assert circuit.state is CircuitState.OPEN and circuit.opened == 2  # the trial failed
    circuit.limit(40, 10.6)
    circuit.observe(False, 10.7)
    circuit.observe(True, 10.8)
    assert circuit.state is CircuitState.OPEN  # half of the trial timed out: still too many
    circuit.limit(40, 15.9)
    circuit.observe(False, 16.0)
    circuit.observe(False, 16.1)
    assert circuit.state is CircuitState.CLOSED and circuit.closed == 1
    assert circuit.limit(40, 16.2) == 40


def test_old_timeouts_leave_the_window() -> None:
    circuit = TenantCircuit("t", CircuitConfig(timeout_ratio=0.5, window=1, min_attempts=4))
    for t in (0.0, 0.1, 0.2):
        circuit.observe(True, t)
    for t in (5.0, 5.1, 5.2, 5.3):
        circuit.observe(False, t)
    assert circuit.state is CircuitState.CLOSED


async def test_attempts_dropped_while_the_circuit_is_open_are_counted_as_shed() -> None:
    config = CircuitConfig(timeout_ratio=0.5, min_attempts=2, shed_to=0.5)
    gate = FairGate(10, None, config)
    share = gate.tenant("t", TenantLimits(concurrency=2))
    gate.observe(share, True)
    gate.observe(share, True)
    assert share.circuit.state is CircuitState.OPEN
    assert await gate.acquire(share, None, 0.0, FAR)  # 1 slot of 2 kept
    loop = asyncio.get_running_loop()
    assert not await gate.acquire(share, None, 0.0, loop.time() + 0.02)
    assert (share.shed, share.skipped, share.throttled) == (1, 0, 1)


def test_the_destination_of_each_kind_of_target() -> None:
    from otelprobe.config import load_text
    from otelprobe.scheduling.tenancy import destination_of

    config = load_text(
        """targets:
  - {name: a, kind: http, url: 'https://API.example.com/health'}
  - {name: b, kind: http, url: 'http://127.0.0.1:8080/'}
  - {name: c, kind: tcp, address: 'db.internal:5432'}
  - {name: d, kind: tls, address: '[::1]:443'}
  - {name: e, kind: dns, server: '10.0.0.53', query_name: example.com}
  - {name: f, kind: dns, query_name: example.com}
"""
    )
    assert [destination_of(t) for t in config.targets] == [
        ("api.example.com", 443),
        ("127.0.0.1", 8080),
        ("db.internal", 5432),
        ("::1", 443),
        ("10.0.0.53", 0),
        None,  # the system resolver: no destination of its own
    ]


async def test_closing_drops_every_waiting_attempt_and_refuses_new_ones() -> None:
    gate = FairGate(1, 1, NO_CIRCUIT)  # one slot, and one per destination
    a, b = gate.tenant("a"), gate.tenant("b")
    here, there = gate.destination(("h", 1)), gate.destination(("t", 1))
    assert await gate.acquire(a, here, 0.0, FAR)
    # Queued: two at the global capacity, one behind its destination.
    queued = [
        asyncio.create_task(gate.acquire(b, there, 0.0, FAR)),
        asyncio.create_task(gate.acquire(b, None, 0.0, FAR)),
        asyncio.create_task(gate.acquire(a, here, 0.0, FAR)),
    ]
    await asyncio.sleep(0)
    assert not any(task.done() for task in queued)

    gate.close()
    answers = await asyncio.wait_for(asyncio.gather(*queued), 1)
    assert answers == [False, False, False]
    # The slot held in flight is released as usual and starts nobody; a late attempt is refused.
    gate.release(a, here)
    assert gate.in_use == 0
    assert not await gate.acquire(b, None, 0.0, FAR)
    counters = dict(gate.snapshot())
    assert counters["a"]["started"] == 1 and counters["b"]["started"] == 0
    # Each attempt that did not start is counted once, as an expired one would be.
    assert counters["a"]["skipped"] + counters["b"]["skipped"] == 4
