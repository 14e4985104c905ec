"""`LatencyStore` (every series' learned latency threshold in arrays) must learn exactly what one
`LatencyBaseline` per series learns: the same samples in the same ring slots, the same pending
windows, thresholds bit for bit — through warm-up, violations, outliers, a ring that rolls over
(even within one window), reused rows, and a state saved in LatencyBaseline's shape and loaded."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from otelprobe.attribution.latency_baseline import LatencyBaseline, LatencyStore
from otelprobe.attribution.slo_file import BaselineSettings


def state_of(baseline: LatencyBaseline) -> tuple[list[float], int, int, list[list[float]]]:
    count = baseline.sample_count
    ring = baseline._ring[:count].tolist()
    return ring, baseline._next, count, [list(w) for w in baseline._pending]


def random_window(rng: random.Random, level: float) -> list[float]:
    size = rng.choice([0, 1, 2, 3, 14])
    # ties, outliers (far above normal: never learned) and a few steps
    return [rng.choice([level, level * 1.01, level * 3.0, level + rng.random() * level]) for _ in range(size)]


@pytest.mark.parametrize("confirm", [0, 1, 2])
def test_the_store_learns_what_each_latency_baseline_learns(confirm: int) -> None:
    settings = BaselineSettings(samples=10, warmup_samples=4, confirm_windows=confirm)
    rng = random.Random(confirm)
    store = LatencyStore(settings, capacity=2)  # grows on the way
    reference: dict[int, LatencyBaseline] = {}
    for step in range(60):
        if step % 7 == 0:  # a new series (capacity doubles) and one forgotten (its row reused later)
            row = len(reference)
            if row >= store.capacity:
                store.grow(2 * store.capacity)
            reference[row] = LatencyBaseline(settings)
        if step == 30:
            store.clear([1])
            reference[1] = LatencyBaseline(settings)
        rows = np.array(sorted(reference), dtype=np.int64)
        thresholds = store.thresholds(rows)
        for i, row in enumerate(rows.tolist()):
            want = reference[row].threshold_s()
            assert (want is None and math.isnan(thresholds[i])) or thresholds[i] == want
        windows = {row: random_window(rng, 0.01 * (1 + row)) for row in reference}
        violating = np.array([rng.random() < 0.15 for _ in rows], dtype=bool)
        records = [(row, d) for row, window in windows.items() for d in window]
        rng.shuffle(records)  # records of series interleave; each series' own order is what counts
        record_rows = np.array([r for r, _ in records], dtype=np.int64)
        durations = np.array([d for _, d in records], dtype=np.float64)
        store.observe(rows, violating, record_rows, durations)
        for i, row in enumerate(rows.tolist()):
            own = [d for r, d in records if r == row]
            reference[row].observe(own, bool(violating[i]))
            assert store.export(row) == state_of(reference[row]), (step, row)
    assert any(b.sample_count == settings.samples for b in reference.values())  # the ring rolled over


def test_a_state_in_latency_baseline_shape_loads_and_carries_on_identically() -> None:
    settings = BaselineSettings(samples=12, warmup_samples=3, confirm_windows=2)
    rng = random.Random(5)
    reference = LatencyBaseline(settings)
    for _ in range(9):
        reference.observe(random_window(rng, 0.02), violating=False)
    store = LatencyStore(settings, capacity=4)
    other = np.array([2], dtype=np.int64)  # a row used before: what it left must not leak in
    store.observe(np.array([0, 2]), np.zeros(2, dtype=bool), np.array([0, 0, 2]), np.array([0.5, 0.5, 0.5]))
    ring, next_at, _, pending = state_of(reference)
    store.restore(0, ring, next_at, pending)
    assert store.export(0) == state_of(reference)
    for _ in range(8):
        window = random_window(rng, 0.02)
        store.observe(
            np.array([0, 2]),
            np.zeros(2, dtype=bool),
            np.array([0] * len(window) + [2], dtype=np.int64),
            np.array([*window, 0.02]),
        )
        reference.observe(window, violating=False)
        assert store.export(0) == state_of(reference)
        (threshold,) = store.thresholds(np.array([0]))
        assert threshold == reference.threshold_s()
    assert store.sample_count(int(other[0])) > 0
