"""The array baselines (BaselineStore) learn exactly what SeriesBaseline learns, series by series:
same snapshots bit for bit, through healthy windows, failures, slow windows, relearning and the
history's roll-over, whether stale snapshots are worked out early (`refresh`) or when asked; and
they carry the per-series shape snapshot.py persists in and out."""

from __future__ import annotations

import math
import random

import numpy as np

from otelprobe.attribution.aggregates import PHASES
from otelprobe.attribution.baseline import RELEARN_AFTER, SeriesBaseline
from otelprobe.attribution.baseline_store import BaselineStore, snapshot_of


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def window(rng: random.Random, level: float) -> tuple[int, list[float], list[float], float, frozenset[str]]:
    failed = 1 if rng.random() < 0.1 else 0
    scale = 8.0 if rng.random() < 0.15 else 1.0  # a slow window now and then
    p50s = [
        math.nan if rng.random() < 0.2 else round(level * scale * rng.uniform(0.5, 1.5), 6) for _ in PHASES
    ]
    jitters = [math.nan if rng.random() < 0.1 else rng.uniform(0, 0.01) for _ in PHASES]
    body = math.nan if rng.random() < 0.3 else float(rng.choice([100, 120, 5000]))
    addresses = frozenset(rng.sample(["10.0.0.1", "10.0.0.2", "::1"], rng.randint(0, 2)))
    return failed, p50s, jitters, body, addresses


def test_store_snapshots_equal_series_baseline_bit_for_bit() -> None:
    rng = random.Random(7)
    series = [(f"t{i}", "v") for i in range(6)]
    reference = {s: SeriesBaseline() for s in series}
    store = BaselineStore(capacity=2)  # grows on the way
    rows = np.array([store.add(s) for s in series], dtype=np.int64)
    stuck = series[0]  # fails for a long stretch: relearns after RELEARN_AFTER rejected windows
    for step in range(3 * RELEARN_AFTER):
        windows = [window(rng, 0.01 * (1 + i)) for i in range(len(series))]
        if RELEARN_AFTER // 2 < step < 2 * RELEARN_AFTER:
            windows[0] = (1, *windows[0][1:])
        before = store.snapshots(rows)
        for i, s in enumerate(series):
            expected = reference[s].snapshot()
            got = snapshot_of(before, i)
            assert got.healthy_windows == expected.healthy_windows and got.addresses == expected.addresses
            assert same(got.body_bytes, expected.body_bytes)
            assert set(got.phases) == set(expected.phases)
            for phase, base in expected.phases.items():
                mine = got.phases[phase]
                assert (mine.p50_s, mine.spread_s, mine.jitter_s) == (
                    base.p50_s,
                    base.spread_s,
                    base.jitter_s,
                )
        # the service's warm-series count, read off the arrays
        assert store.warm_count() == sum(reference[s].snapshot().warm for s in series)
        failed = np.array([w[0] for w in windows], dtype=np.int64)
        p50s = np.array([w[1] for w in windows], dtype=np.float64)
        jitters = np.array([w[2] for w in windows], dtype=np.float64)
        bodies = np.array([w[3] for w in windows], dtype=np.float64)
        store.observe(rows, before, failed, p50s, jitters, bodies, [w[4] for w in windows])
        if step % 2:  # the sidecar works out stale snapshots early; they must be the same ones
            store.refresh()
        for s, (f, p, j, b, a) in zip(series, windows, strict=True):
            reference[s].observe(
                f, dict(zip(PHASES, p, strict=True)), dict(zip(PHASES, j, strict=True)), b, a
            )
    assert reference[stuck].healthy_windows < 2 * RELEARN_AFTER  # it did relearn
    for s in series:  # the persisted shape, out and back in
        exported = store[s]
        assert exported.p50s == reference[s].p50s and exported.jitters == reference[s].jitters
        assert list(exported.bodies) == list(reference[s].bodies)
        assert list(exported.addresses) == list(reference[s].addresses)
        assert (exported.healthy_windows, exported.rejected_in_a_row) == (
            reference[s].healthy_windows,
            reference[s].rejected_in_a_row,
        )
        again = BaselineStore()
        again.put(s, exported)
        assert again[s].p50s == exported.p50s and list(again[s].bodies) == list(exported.bodies)


def test_forgotten_series_start_afresh_and_rows_are_reused() -> None:
    store = BaselineStore(capacity=1)
    a, b = store.add(("a", "v")), store.add(("b", "v"))
    rows = np.array([a, b])
    before = store.snapshots(rows)
    p50s = np.full((2, len(PHASES)), 0.01)
    store.observe(rows, before, np.zeros(2, dtype=np.int64), p50s, p50s, np.full(2, 10.0), [frozenset()] * 2)
    assert store[("a", "v")].healthy_windows == 1
    store.pop(("a", "v"))
    assert ("a", "v") not in store and len(store) == 1
    store.refresh()  # a released row worked out early is still a fresh series' snapshot
    c = store.add(("c", "v"))
    assert c == a and store[("c", "v")].healthy_windows == 0 and not store[("c", "v")].p50s
    fresh = store.snapshots(np.array([c]))
    assert np.isnan(fresh.p50).all() and np.isnan(fresh.body).all() and fresh.healthy.tolist() == [0]
