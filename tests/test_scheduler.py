"""The scheduler against a small real probe that sleeps, fails, hangs or raises on demand."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pytest

from otelprobe.errors import ConnectRefused
from otelprobe.probes.base import Attributes, ProbeContext, run_attempt
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.scheduling.health import backoff_s
from otelprobe.scheduling.scheduler import Scheduler, TargetState
from otelprobe.scheduling.stats import LatencyStats
from otelprobe.settings.common import ProbeConfigBase, RetryPolicy
from otelprobe.targets import spread_offset
from otelprobe.timing import PhaseClock

# Timing slack: two noisy shared cores; assertions are inequalities with this much room.
SLACK = 0.04


class FakeConfig(ProbeConfigBase):
    kind: Literal["fake"] = "fake"
    mode: Literal["ok", "hang", "stubborn", "explode"] = "ok"
    sleep_s: float = 0.0


@dataclass
class Call:
    name: str
    attempt: int
    start: float
    end: float = 0.0


@dataclass
class Lab:
    """What the fake probes did, and which attempts should fail."""

    calls: list[Call] = field(default_factory=list)
    built: list[FakeProbe] = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    fail: Callable[[str, int, int], bool] = lambda name, run, attempt: False

    def factory(self, config: ProbeConfigBase, ctx: ProbeContext) -> FakeProbe:
        assert isinstance(config, FakeConfig)
        probe = FakeProbe(config, ctx, self)
        self.built.append(probe)
        return probe

    def starts(self, name: str, attempt: int | None = None) -> list[float]:
        return [c.start for c in self.calls if c.name == name and (attempt is None or c.attempt == attempt)]


class FakeProbe:
    kind: ClassVar[str] = "fake"

    def __init__(self, config: FakeConfig, ctx: ProbeContext, lab: Lab) -> None:
        self.config = config
        self.lab = lab
        self.runs = 0
        self.closed = False

    async def run(self, attempt: int = 1) -> list[ProbeResult]:
        loop = asyncio.get_running_loop()
        if attempt == 1:
            self.runs += 1
        call = Call(self.config.name, attempt, loop.time())
        self.lab.calls.append(call)
        self.lab.running += 1
        self.lab.max_running = max(self.lab.max_running, self.lab.running)
        try:
            return [await self._run(attempt)]
        finally:
            self.lab.running -= 1
            call.end = loop.time()

    async def _run(self, attempt: int) -> ProbeResult:
        mode = self.config.mode
        if mode == "explode":
            raise RuntimeError("boom: a bug in the probe")
        if mode == "hang":  # ignores its own timeout
            await asyncio.sleep(30)
        if mode == "stubborn":  # swallows the first cancellation, then gives up a little later
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                await asyncio.sleep(0.2)
        fail = self.lab.fail(self.config.name, self.runs, attempt)

        async def body(clock: PhaseClock, attrs: Attributes) -> None:
            with clock.phase("tcp.connect"):
                await asyncio.sleep(self.config.sleep_s)
                if fail:
                    raise ConnectRefused("refused", "connection refused (scripted)")

        return await run_attempt(self.kind, self.config.name, attempt, self.config.timeout_s, body)

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class MemorySink:
    records: list[tuple[ProbeResult, TraceRef | None, TraceRef]] = field(default_factory=list)

    def record(self, result: ProbeResult, link: TraceRef | None) -> TraceRef | None:
        ref = TraceRef(trace_id=len(self.records) + 1, span_id=len(self.records) + 1)
        self.records.append((result, link, ref))
        return ref


def target(name: str, **kwargs: Any) -> FakeConfig:
    kwargs.setdefault("interval", 0.1)
    kwargs.setdefault("timeout", 0.05)
    kwargs.setdefault("jitter", 0)
    return FakeConfig(name=name, **kwargs)


@pytest.fixture
def lab() -> Lab:
    return Lab()


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
async def make_scheduler(lab: Lab, sink: MemorySink) -> Any:
    made: list[Scheduler] = []

    def make(concurrency: int = 64, seed: int = 1) -> Scheduler:
        scheduler = Scheduler(
            sink, lab.factory, ProbeContext(vantage="test"), concurrency=concurrency, rng=random.Random(seed)
        )
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        await scheduler.aclose(grace_s=2.0)


def early(prefix: str, interval: float, within: float = 0.05) -> str:
    """A target name whose first run falls within `within` s of start-up (keeps tests short)."""
    return next(n for n in (f"{prefix}{i}" for i in range(10_000)) if spread_offset(n, interval) < within)


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def deadlines(t0: float, name: str, interval: float, count: int) -> Iterator[float]:
    offset = spread_offset(name, interval)
    return (t0 + offset + k * interval for k in range(count))


async def test_first_starts_spread_across_the_interval(make_scheduler: Any, lab: Lab) -> None:
    interval = 0.5
    names = [f"t{i}" for i in range(40)]
    scheduler = make_scheduler()
    t0 = asyncio.get_running_loop().time()
    await scheduler.apply([target(n, interval=interval) for n in names])
    await asyncio.sleep(interval + 0.1)
    firsts = {n: lab.starts(n)[0] - t0 for n in names}
    for name, first in firsts.items():
        assert spread_offset(name, interval) - 0.005 <= first <= spread_offset(name, interval) + SLACK
    # Spread, not bursts: every fifth of the interval has some first starts, none has most of them.
    buckets = [sum(1 for f in firsts.values() if k * 0.1 <= f < (k + 1) * 0.1) for k in range(5)]
    assert min(buckets) >= 2, buckets
    assert max(buckets) <= 20, buckets


async def test_jitter_stays_within_bounds_and_varies(make_scheduler: Any, lab: Lab) -> None:
    interval, jitter = 0.1, 0.04
    scheduler = make_scheduler()
    t0 = asyncio.get_running_loop().time()
    await scheduler.apply([target("j", interval=interval, jitter=jitter)])
    await asyncio.sleep(1.25)
    starts = lab.starts("j")
    assert len(starts) >= 10
    delays = [s - d for s, d in zip(starts, deadlines(t0, "j", interval, len(starts)), strict=True)]
    assert all(-0.002 <= d <= jitter + SLACK for d in delays), delays
    assert max(delays) - min(delays) >= jitter / 3  # really random, not a constant offset


async def test_intervals_are_kept_without_drift(make_scheduler: Any, lab: Lab) -> None:
    interval = 0.05
    scheduler = make_scheduler()
    t0 = asyncio.get_running_loop().time()
    # Each probe takes 20 ms: a relative "sleep interval after the run" scheduler would drift 20 ms a run.
    await scheduler.apply([target("d", interval=interval, sleep_s=0.02)])
    await asyncio.sleep(1.55)
    starts = lab.starts("d")
    assert len(starts) >= 25
    late = [s - d for s, d in zip(starts, deadlines(t0, "d", interval, len(starts)), strict=True)]
    assert all(-0.002 <= x <= SLACK for x in late), late
    assert late[-1] <= SLACK  # the 30th start is as punctual as the first
    assert scheduler.stats.lateness.count == len(starts)
    assert scheduler.stats.lateness.percentile(99) <= SLACK


async def test_concurrency_bound_is_honoured_and_waiting_counts_as_lateness(
    make_scheduler: Any, lab: Lab
) -> None:
    scheduler = make_scheduler(concurrency=3)
    # 12 targets whose first runs fall within 50 ms of each other, each probe taking 100 ms.
    names = [n for n in (f"c{i}" for i in range(4000)) if spread_offset(n, 1.0) < 0.05][:12]
    await scheduler.apply([target(n, interval=1.0, timeout=0.2, sleep_s=0.1) for n in names])
    await asyncio.sleep(0.6)
    assert len(lab.calls) == 12
    assert lab.max_running == 3
    # 12 runs of 100 ms through 3 slots: the last ones waited about 300 ms beyond their deadline.
    assert scheduler.stats.lateness.max_s >= 0.2
    assert scheduler.stats.lateness.percentile(50) >= 0.05


async def test_retries_back_off_link_to_the_first_attempt_and_count_from_one(
    make_scheduler: Any, lab: Lab, sink: MemorySink
) -> None:
    lab.fail = lambda name, run, attempt: True
    retries = {"count": 3, "backoff": 0.03, "multiplier": 2.0, "max_backoff": 0.05, "jitter": 0.0}
    scheduler = make_scheduler()
    await scheduler.apply([target(early("r", 2.0), interval=2.0, timeout=0.1, retries=retries)])
    await wait_until(lambda: len(sink.records) >= 4)
    await asyncio.sleep(0.05)  # and no fifth attempt
    first_run = list(sink.records)
    assert [r.attempt for r, _, _ in first_run] == [1, 2, 3, 4]
    first_ref = first_run[0][2]
    assert first_run[0][1] is None
    assert all(link == first_ref for _, link, _ in first_run[1:])
    assert all(not r.success for r, _, _ in first_run)
    # Backoff 30 ms, then 60 ms capped to 50 ms, then 50 ms: measured from the previous attempt's end.
    calls = lab.calls
    gaps = [b.start - a.end for a, b in itertools.pairwise(calls)]
    for gap, expected in zip(gaps, [0.03, 0.05, 0.05], strict=True):
        assert expected - 0.005 <= gap <= expected + SLACK, gaps
    assert scheduler.stats.retries == 3
    assert scheduler.stats.failed_runs == 1


async def test_a_successful_retry_ends_the_run(make_scheduler: Any, lab: Lab, sink: MemorySink) -> None:
    lab.fail = lambda name, run, attempt: attempt == 1
    scheduler = make_scheduler()
    await scheduler.apply(
        [target(early("s", 2.0), interval=2.0, timeout=0.1, retries={"count": 3, "backoff": 0.01})]
    )
    await wait_until(lambda: len(sink.records) >= 2)
    await asyncio.sleep(0.05)
    assert [(r.attempt, r.success) for r, _, _ in sink.records] == [(1, False), (2, True)]
    assert scheduler.stats.failed_runs == 0


async def test_retries_never_push_past_the_next_run(make_scheduler: Any, lab: Lab) -> None:
    lab.fail = lambda name, run, attempt: True
    retries = {"count": 10, "backoff": 0.04, "multiplier": 1.0, "jitter": 0.0}
    scheduler = make_scheduler()
    await scheduler.apply([target("p", interval=0.2, timeout=0.03, retries=retries)])
    await asyncio.sleep(1.0)
    firsts = lab.starts("p", attempt=1)
    assert len(firsts) >= 4
    for run_start, next_start in itertools.pairwise(firsts):
        in_run = [c for c in lab.calls if c.name == "p" and run_start <= c.start < next_start]
        assert 1 < len(in_run) < 11
        assert all(c.end <= next_start + 0.005 for c in in_run)


async def test_failure_threshold_turns_the_target_down_and_up(
    make_scheduler: Any, lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otelprobe.scheduling.health")
    lab.fail = lambda name, run, attempt: 1 <= run <= 4
    scheduler = make_scheduler()
    await scheduler.apply([target("f", interval=0.06, failure_threshold=2)])
    seen: list[TargetState] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + 1.0
    probe: FakeProbe = lab.built[0]
    while loop.time() < end and probe.runs < 7:
        state = scheduler.states()["f"]
        if not seen or seen[-1] is not state:
            seen.append(state)
        await asyncio.sleep(0.005)
    assert seen == [TargetState.UP, TargetState.DOWN, TargetState.UP]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "DOWN" in r.getMessage()]
    assert len(warnings) == 1
    assert any("UP again" in r.getMessage() for r in caplog.records)


async def test_a_hanging_probe_is_cut_off_at_the_outer_deadline(
    make_scheduler: Any, lab: Lab, sink: MemorySink
) -> None:
    scheduler = make_scheduler()
    await scheduler.apply([target(early("h", 3.0), interval=3.0, timeout=0.1, mode="hang")])
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not sink.records and loop.time() - start < 1.5:
        await asyncio.sleep(0.01)
    (result, _, _), *_ = sink.records
    assert result.error is not None and result.error.error_type == "timeout"
    assert result.error.detail == "probe_unresponsive"
    assert 1.1 - 0.01 <= result.duration_s <= 1.1 + 0.2  # timeout 0.1 s + 1 s margin
    assert scheduler.stats.probes_hung == 1
    await asyncio.sleep(0.05)
    assert scheduler.in_flight == 0


async def test_a_probe_swallowing_cancellation_cannot_hang_the_run(
    make_scheduler: Any, lab: Lab, sink: MemorySink
) -> None:
    scheduler = make_scheduler()
    await scheduler.apply([target(early("st", 3.0), interval=3.0, timeout=0.05, mode="stubborn")])
    await asyncio.sleep(1.3)
    assert [r.error.detail for r, _, _ in sink.records if r.error] == ["probe_unresponsive"]


async def test_an_exploding_probe_is_logged_and_keeps_its_schedule(
    make_scheduler: Any, lab: Lab, sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = make_scheduler()
    await scheduler.apply([target("x", interval=0.05, mode="explode"), target("ok", interval=0.05)])
    await asyncio.sleep(0.4)
    assert len(lab.starts("x")) >= 5
    assert scheduler.stats.probe_exceptions == len(lab.starts("x"))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "raised" in r.getMessage()]
    assert errors and errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError)
    assert all(r.target == "ok" for r, _, _ in sink.records)  # no dummy results for a bug
    assert len(sink.records) >= 5


async def test_reload_keeps_unchanged_rebuilds_changed_stops_removed_adds_new(
    make_scheduler: Any, lab: Lab
) -> None:
    scheduler = make_scheduler()
    await scheduler.apply([target("a"), target("b"), target("c")])
    await asyncio.sleep(0.25)
    probes = {p.config.name: p for p in lab.built}
    next_a = scheduler.next_run_at("a")
    await scheduler.apply([target("a"), target("b", interval=0.07), target("d")])
    assert scheduler.next_run_at("a") == next_a  # same phase, same timer
    assert not probes["a"].closed
    assert probes["b"].closed and probes["c"].closed
    assert set(scheduler.targets()) == {"a", "b", "d"}
    assert scheduler.targets()["b"].interval_s == 0.07
    assert [p.config.name for p in lab.built].count("a") == 1
    assert [p.config.name for p in lab.built].count("b") == 2
    reloaded_at = asyncio.get_running_loop().time()
    await asyncio.sleep(0.25)
    assert not [s for s in lab.starts("c") if s > reloaded_at]
    assert [s for s in lab.starts("d") if s > reloaded_at]
    assert [s for s in lab.starts("a") if s > reloaded_at]


async def test_close_lets_in_flight_runs_finish_and_closes_every_probe(
    make_scheduler: Any, lab: Lab, sink: MemorySink
) -> None:
    scheduler = make_scheduler()
    await scheduler.apply([target(f"g{i}", interval=0.2, timeout=0.15, sleep_s=0.1) for i in range(5)])
    while lab.running == 0:
        await asyncio.sleep(0.005)
    await scheduler.aclose(grace_s=1.0)
    assert lab.running == 0
    assert all(p.closed for p in lab.built)
    assert all(r.success for r, _, _ in sink.records)
    assert len(sink.records) == len(lab.calls)


async def test_close_cancels_runs_beyond_the_grace_period(make_scheduler: Any, lab: Lab) -> None:
    scheduler = make_scheduler()
    await scheduler.apply([target(early("slow", 3.0), interval=3.0, timeout=2.0, sleep_s=1.5)])
    while lab.running == 0:
        await asyncio.sleep(0.005)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await scheduler.aclose(grace_s=0.1)
    assert loop.time() - start < 0.5
    assert lab.running == 0
    assert lab.built[0].closed


async def test_a_probe_that_cannot_be_built_is_skipped(make_scheduler: Any, lab: Lab) -> None:
    def factory(config: ProbeConfigBase, ctx: ProbeContext) -> FakeProbe:
        if config.name == "bad":
            raise ValueError("cannot build")
        return lab.factory(config, ctx)

    scheduler = Scheduler(MemorySink(), factory, concurrency=4)
    try:
        await scheduler.apply([target("bad"), target("good")])
        assert set(scheduler.targets()) == {"good"}
        assert scheduler.stats.build_errors == 1
    finally:
        await scheduler.aclose()


async def test_real_http_probes_retry_into_linked_traces() -> None:
    """Integration: HTTPProbe against a loopback aiohttp server, results through real Telemetry."""
    from aiohttp import web

    from otelprobe.probes.http.config import HTTPProbeConfig
    from otelprobe.probes.http.probe import HTTPProbe
    from otelprobe.telemetry.pipeline import Telemetry

    hits = 0

    async def unavailable(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(status=503 if hits < 3 else 200, text="busy")

    app = web.Application()
    app.router.add_get("/", unavailable)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    telemetry = Telemetry(vantage="test", in_memory=True)

    def factory(config: ProbeConfigBase, ctx: ProbeContext) -> HTTPProbe:
        assert isinstance(config, HTTPProbeConfig)
        return HTTPProbe(config, ctx)

    scheduler = Scheduler(telemetry, factory, ProbeContext(vantage="test"))
    try:
        name = early("web", 2.0)
        config = HTTPProbeConfig.model_validate(
            {
                "name": name,
                "url": f"http://127.0.0.1:{port}/",
                "interval": 2.0,
                "timeout": 0.5,
                "retries": {"count": 3, "backoff": 0.02, "jitter": 0},
            }
        )
        await scheduler.apply([config])
        assert telemetry.span_exporter is not None
        exporter = telemetry.span_exporter

        def roots() -> list[Any]:
            return [s for s in exporter.get_finished_spans() if s.name == "probe http"]

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3
        while len(roots()) < 3 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        spans = sorted(roots(), key=lambda s: s.attributes["probe.attempt"])
        assert [s.attributes["probe.attempt"] for s in spans] == [1, 2, 3]
        assert [s.attributes["probe.success"] for s in spans] == [False, False, True]
        first = spans[0].context
        assert not spans[0].links
        for retry in spans[1:]:
            assert retry.context.trace_id != first.trace_id  # a new trace per attempt
            assert [(lk.context.trace_id, lk.context.span_id) for lk in retry.links] == [
                (first.trace_id, first.span_id)
            ]
        assert scheduler.states()[name] is TargetState.UP
    finally:
        await scheduler.aclose()
        await telemetry.shutdown()
        await runner.cleanup()


def test_lateness_percentiles_over_a_bounded_window() -> None:
    stats = LatencyStats(window=100)
    for ms in range(1, 201):  # 1..200 ms; the window keeps the last 100: 101..200
        stats.add(ms / 1000)
    assert stats.count == 200
    assert len(stats.samples()) == 100
    assert stats.percentile(0) == pytest.approx(0.101)
    assert stats.percentile(50) == pytest.approx(0.150)
    assert stats.percentile(99) == pytest.approx(0.199)
    assert stats.percentile(100) == stats.max_s == pytest.approx(0.200)
    assert LatencyStats().percentile(99) == 0.0


def test_backoff_grows_is_capped_and_jittered_within_its_fraction() -> None:
    policy = RetryPolicy.model_validate(
        {"count": 5, "backoff": 0.1, "multiplier": 3, "max_backoff": 0.5, "jitter": 0.2}
    )
    rng = random.Random(7)
    for retry, base in [(1, 0.1), (2, 0.3), (3, 0.5), (4, 0.5)]:
        pauses = [backoff_s(policy, retry, rng) for _ in range(200)]
        assert all(base * 0.8 - 1e-9 <= p <= base * 1.2 + 1e-9 for p in pauses)
        assert max(pauses) - min(pauses) > base * 0.2  # jitter really spreads them
