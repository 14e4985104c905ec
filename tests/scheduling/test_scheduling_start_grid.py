"""Jittered starts on the 10 ms start grid: inside the jitter window, and together in one wake-up."""

from __future__ import annotations

import asyncio
import random
from typing import ClassVar, Literal

from otelprobe.probes.base import Attributes, ProbeContext, run_attempt
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.scheduling.scheduler import START_GRID_S, Scheduler, on_start_grid
from otelprobe.settings.common import ProbeConfigBase
from otelprobe.timing import PhaseClock


class StampConfig(ProbeConfigBase):
    kind: Literal["stamp"] = "stamp"


class StampProbe:
    """Notes the loop time it was started at; succeeds at once."""

    kind: ClassVar[str] = "stamp"

    def __init__(self, config: StampConfig, starts: list[float]) -> None:
        self.config = config
        self._starts = starts

    async def run(self, attempt: int = 1) -> list[ProbeResult]:
        self._starts.append(asyncio.get_running_loop().time())

        async def body(clock: PhaseClock, attrs: Attributes) -> None:
            return None

        return [await run_attempt(self.kind, self.config.name, attempt, self.config.timeout_s, body)]

    async def aclose(self) -> None:
        return None


class NullSink:
    def record(self, result: ProbeResult, link: TraceRef | None) -> TraceRef | None:
        return None


def test_on_start_grid_stays_in_the_window_and_on_the_grid() -> None:
    rng = random.Random(7)
    for _ in range(10_000):
        due = rng.uniform(0, 1e5)
        jitter = rng.choice([0.01, 0.025, 0.2, 3.0])
        when = on_start_grid(due + rng.uniform(0, jitter), due, due + jitter)
        assert due - 1e-9 <= when <= due + jitter + 1e-9
        steps = when / START_GRID_S
        assert abs(steps - round(steps)) < 1e-6


def test_on_start_grid_leaves_a_window_without_a_boundary_alone() -> None:
    due = 100.001
    assert on_start_grid(due + 0.004, due, due + 0.005) == due + 0.004


def test_on_start_grid_varies_within_the_window() -> None:
    rng = random.Random(3)
    due, jitter = 50.0, 0.2
    starts = {round(on_start_grid(due + rng.uniform(0, jitter), due, due + jitter), 6) for _ in range(500)}
    # Every 10 ms boundary of the 200 ms window is used: still random, just coarser.
    assert len(starts) >= 19
    assert min(starts) <= due + 0.02 and max(starts) >= due + jitter - 0.02


async def test_targets_due_in_the_same_10_ms_start_together() -> None:
    starts: list[float] = []
    scheduler = Scheduler(
        NullSink(),
        lambda config, ctx: StampProbe(config, starts),  # type: ignore[arg-type]
        ProbeContext(vantage="test"),
    )
    configs = [
        StampConfig(name=f"t{i}", interval=0.5, timeout=0.2, jitter=0.1)  # type: ignore[call-arg]
        for i in range(60)
    ]
    # The times the scheduler armed (not when a busy machine's loop got to them): sampled until
    # every target was armed three times.
    armed: set[tuple[str, float]] = set()
    try:
        await scheduler.apply(configs)
        for _ in range(300):  # bounded: ~3 s at most
            for config in configs:
                when = scheduler.next_run_at(config.name)
                if when is not None:
                    armed.add((config.name, when))
            if len(armed) >= 3 * len(configs):
                break
            await asyncio.sleep(0.01)
    finally:
        await scheduler.aclose(grace_s=0.5)
    assert len(armed) >= 3 * len(configs) and starts
    # Every start is armed on a 10 ms boundary ...
    for _, when in armed:
        steps = when / START_GRID_S
        assert abs(steps - round(steps)) < 1e-6, when
    # ... so targets share their wake-ups: 60 targets spread over a 0.5 s interval have ~50
    # boundaries to land on per run (~35 distinct expected), where uniform random starts would
    # each be an instant of their own.
    instants = {round(when / START_GRID_S) for _, when in armed}
    assert len(instants) < 0.8 * len(armed), (len(instants), len(armed))
