"""The feature engine's memory bound when more series are active than it may keep: it evicts the
least recently seen series, never one of the window being learned, so active series keep their
baselines instead of evicting each other in turn (each returning cold and evicting the next)."""

from __future__ import annotations

import random

from otelprobe.attribution.features import FeatureEngine
from otelprobe.attribution.records import records_frame
from otelprobe.attribution.windows import assign_windows
from tests.attribution.test_features import https_probe

WINDOW_S = 2.0


def windows(targets: list[str], count: int, first: int = 0) -> list:  # type: ignore[type-arg]
    rng = random.Random(5)
    return [
        https_probe(target, "v1", (first + w) * WINDOW_S + 0.1, 0.01, rng=rng)
        for w in range(count)
        for target in targets
    ]


def test_every_active_series_keeps_its_baseline_beyond_the_limit() -> None:
    engine = FeatureEngine(max_series=20)
    active = [f"t{i:02d}" for i in range(22)]  # two more than the engine may keep
    frame = engine.features(assign_windows(records_frame(windows(active, 8)), WINDOW_S), WINDOW_S)
    last = frame[frame["window_start_ns"] == frame["window_start_ns"].max()]
    # Warm after WARM_WINDOWS healthy windows, as without a limit: nothing active was evicted.
    assert last["warm"].all() and len(last) == 22
    assert engine.evicted_series == 0


def test_idle_series_are_evicted_least_recently_seen_first() -> None:
    engine = FeatureEngine(max_series=4)
    old = windows(["a", "b", "c", "d"], 1)
    seen_again = windows(["a"], 1, first=1)
    new = windows(["e", "f"], 1, first=2)
    engine.features(assign_windows(records_frame(old + seen_again + new), WINDOW_S), WINDOW_S)
    # b and c were seen least recently: they go; a (seen again) and d stay beside e and f.
    assert set(engine.baselines) == {("a", "v1"), ("d", "v1"), ("e", "v1"), ("f", "v1")}
    assert engine.evicted_series == 2
