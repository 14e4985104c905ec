"""Every series' healthy baseline in arrays: baseline.py's rules, one vectorised step per window.

`SeriesBaseline` (baseline.py) learns one series in Python; at 10,000 series per sidecar slot that
per-series Python was the largest part of a slot's features. `BaselineStore` holds the same state
for all series as numpy arrays — per phase the last HISTORY_WINDOWS window medians and jitters in a
ring, the bodies likewise, healthy and rejected counters — and takes the snapshots of a window's
series and learns from them with array operations. The arithmetic is the same, operation for
operation (medians of sorted values, the same max/compare chain), so snapshots are bit-for-bit
those of `SeriesBaseline` (tests/attribution/test_baseline_store.py). Addresses (sets of strings)
stay per series in Python, with their union cached.

The store is a read-only Mapping of series -> `SeriesBaseline` (built on demand: snapshot.py
persists that shape, the service counts warm series through it), in insertion order.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from otelprobe.attribution.aggregates import PHASES
from otelprobe.attribution.baseline import (
    HISTORY_WINDOWS,
    MIN_SPREAD_S,
    RELEARN_AFTER,
    WARM_WINDOWS,
    BaselineSnapshot,
    PhaseBaseline,
    SeriesBaseline,
)

Series = tuple[Hashable, Hashable]
_P: Final = len(PHASES)
_H: Final = HISTORY_WINDOWS
_NO_ADDRESSES: Final[frozenset[str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Snapshots:
    """Baselines of n series as of one window's start (row i: the i-th series asked for)."""

    p50: np.ndarray  # n x phases, NaN where the phase has no history
    spread: np.ndarray
    jitter: np.ndarray
    body: np.ndarray  # n
    healthy: np.ndarray  # n, int64
    addresses: list[frozenset[str]]

    @property
    def warm(self) -> np.ndarray:
        return np.asarray(self.healthy >= WARM_WINDOWS, dtype=bool)


def _medians(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Median along the last axis of the first `counts` values (the rest NaN), as
    baseline._median_of_sorted does it; NaN where the count is 0."""
    ordered = np.sort(values, axis=-1)  # NaN (the unused slots) last
    mid = counts // 2
    high = np.take_along_axis(ordered, np.minimum(mid, _H - 1)[..., None], axis=-1)[..., 0]
    low = np.take_along_axis(ordered, np.maximum(mid - 1, 0)[..., None], axis=-1)[..., 0]
    even = (low + high) / 2
    median = np.where(counts % 2 == 1, high, even)
    return np.where(counts > 0, median, np.nan)


class BaselineStore(Mapping[Series, SeriesBaseline]):
    """The learning state of every series (see module doc)."""

    def __init__(self, capacity: int = 1024) -> None:
        self._rows: dict[Series, int] = {}
        self._free: list[int] = []
        # Released rows not yet cleared: cleared together before the arrays are next read or
        # written (one vectorised clear instead of one per evicted series).
        self._dirty: list[int] = []
        self._size = 0
        self._alloc(max(1, capacity))
        self._addresses: list[deque[frozenset[str]] | None] = [None] * len(self._healthy)
        self._union: list[frozenset[str]] = [_NO_ADDRESSES] * len(self._healthy)

    # --- storage ----------------------------------------------------------------------------

    def _alloc(self, capacity: int) -> None:
        self._p50 = np.full((capacity, _P, _H), np.nan)
        self._jit = np.full((capacity, _P, _H), np.nan)
        self._count = np.zeros((capacity, _P), dtype=np.int64)
        self._pos = np.zeros((capacity, _P), dtype=np.int64)  # where the next value goes
        self._body = np.full((capacity, _H), np.nan)
        self._body_count = np.zeros(capacity, dtype=np.int64)
        self._body_pos = np.zeros(capacity, dtype=np.int64)
        self._healthy = np.zeros(capacity, dtype=np.int64)
        self._rejected = np.zeros(capacity, dtype=np.int64)
        # The last snapshot of each row, valid where not `_stale` (learning makes a row stale).
        self._snap_p50 = np.full((capacity, _P), np.nan)
        self._snap_spread = np.full((capacity, _P), np.nan)
        self._snap_jitter = np.full((capacity, _P), np.nan)
        self._snap_body = np.full(capacity, np.nan)
        self._stale = np.ones(capacity, dtype=bool)

    def _grow(self) -> None:
        old = len(self._healthy)
        arrays = {
            name: getattr(self, name)
            for name in (
                "_p50",
                "_jit",
                "_count",
                "_pos",
                "_body",
                "_body_count",
                "_body_pos",
                "_healthy",
                "_rejected",
                "_snap_p50",
                "_snap_spread",
                "_snap_jitter",
                "_snap_body",
                "_stale",
            )
        }
        self._alloc(old * 2)
        for name, values in arrays.items():
            getattr(self, name)[:old] = values
        self._addresses.extend([None] * old)
        self._union.extend([_NO_ADDRESSES] * old)

    def _new_row(self) -> int:
        if self._free:
            return self._free.pop()
        if self._size == len(self._healthy):
            self._grow()
        self._size += 1
        return self._size - 1

    def _clear(self, rows: np.ndarray | list[int]) -> None:
        """Back to a series never seen (SeriesBaseline() / `_forget`)."""
        self._p50[rows] = np.nan
        self._jit[rows] = np.nan
        self._count[rows] = 0
        self._pos[rows] = 0
        self._body[rows] = np.nan
        self._body_count[rows] = 0
        self._body_pos[rows] = 0
        self._healthy[rows] = 0
        self._rejected[rows] = 0
        self._stale[rows] = True
        for row in np.asarray(rows, dtype=np.int64).tolist():
            self._addresses[row] = None
            self._union[row] = _NO_ADDRESSES

    def add(self, series: Series) -> int:
        """A new series' row (appended: the newest in insertion order)."""
        row = self._rows[series] = self._new_row()
        return row

    def pop(self, series: Series, default: object = None) -> object:
        """Forget a series (its state is returned as a SeriesBaseline)."""
        row = self._rows.get(series)
        if row is None:
            return default
        state = self._export(row)
        del self._rows[series]
        self.release([row])
        return state

    def release(self, rows: list[int]) -> None:
        """Rows of forgotten series back to the free list (cleared before they are next used)."""
        if rows:
            self._dirty.extend(rows)
            self._free.extend(rows)

    def _flush(self) -> None:
        if self._dirty:
            self._clear(self._dirty)
            self._dirty = []

    def detach(self, series: Series) -> int:
        """Forget a series but keep its row as it is (the caller releases it)."""
        return self._rows.pop(series)

    def oldest(self) -> Series:
        """The least recently seen series (insertion order, moved on by `touch`)."""
        return next(iter(self._rows))

    def touch(self, series: list[Series]) -> None:
        """Mark known `series` as seen now: they become the newest, in the given order."""
        rows = self._rows
        for one in series:
            rows[one] = rows.pop(one)

    def row_of(self, series: Series) -> int | None:
        return self._rows.get(series)

    # --- Mapping ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Series]:
        return iter(self._rows)

    def __contains__(self, series: object) -> bool:
        return series in self._rows

    def __getitem__(self, series: Series) -> SeriesBaseline:
        return self._export(self._rows[series])

    def values(self) -> list[SeriesBaselineView]:  # type: ignore[override]
        """Every series' state, read through its row (cheaper than `SeriesBaseline`s: the service
        asks every series for `snapshot().warm` after each slot)."""
        rows = np.fromiter(self._rows.values(), dtype=np.int64, count=len(self._rows))
        snapshots = self.snapshots(rows)
        return [SeriesBaselineView(snapshots, i) for i in range(len(rows))]

    def warm_count(self) -> int:
        self._flush()
        rows = np.fromiter(self._rows.values(), dtype=np.int64, count=len(self._rows))
        return int((self._healthy[rows] >= WARM_WINDOWS).sum())

    # --- SeriesBaseline in and out (snapshot.py's shape) --------------------------------------

    def _export(self, row: int) -> SeriesBaseline:
        self._flush()
        state = SeriesBaseline()
        for p, phase in enumerate(PHASES):
            count = int(self._count[row, p])
            if not count:
                continue
            order = [(int(self._pos[row, p]) - count + k) % _H for k in range(count)]
            state.p50s[phase] = deque(self._p50[row, p, order].tolist(), maxlen=_H)
            state.jitters[phase] = deque(self._jit[row, p, order].tolist(), maxlen=_H)
        count = int(self._body_count[row])
        order = [(int(self._body_pos[row]) - count + k) % _H for k in range(count)]
        state.bodies.extend(self._body[row, order].tolist())
        held = self._addresses[row]
        if held is not None:
            state.addresses.extend(held)
        state.healthy_windows = int(self._healthy[row])
        state.rejected_in_a_row = int(self._rejected[row])
        return state

    def put(self, series: Series, state: SeriesBaseline) -> None:
        """Set a series' state from a SeriesBaseline (appended if new; snapshot.py's loading)."""
        self._flush()
        row = self._rows.get(series)
        if row is None:
            row = self.add(series)
        else:
            self._clear([row])
        for p, phase in enumerate(PHASES):
            values = list(state.p50s.get(phase, ()))[-_H:]
            jitters = list(state.jitters.get(phase, ()))[-_H:]
            if not values:
                continue
            jitters = (jitters + [0.0] * len(values))[: len(values)]
            self._p50[row, p, : len(values)] = values
            self._jit[row, p, : len(values)] = jitters
            self._count[row, p] = len(values)
            self._pos[row, p] = len(values) % _H
        bodies = list(state.bodies)[-_H:]
        self._body[row, : len(bodies)] = bodies
        self._body_count[row] = len(bodies)
        self._body_pos[row] = len(bodies) % _H
        if state.addresses:
            held = deque(state.addresses, maxlen=_H)
            self._addresses[row] = held
            self._union[row] = frozenset().union(*held)
        self._healthy[row] = state.healthy_windows
        self._rejected[row] = state.rejected_in_a_row

    def clear(self) -> None:
        self.release(list(self._rows.values()))
        self._rows.clear()

    # --- the vectorised SeriesBaseline.snapshot / observe ---------------------------------------

    def snapshots(self, rows: np.ndarray) -> Snapshots:
        """SeriesBaseline.snapshot() of the series at these rows."""
        self._flush()
        self._refresh(rows[self._stale[rows]])
        return Snapshots(
            self._snap_p50[rows],
            self._snap_spread[rows],
            self._snap_jitter[rows],
            self._snap_body[rows],
            self._healthy[rows],
            [self._union[row] for row in rows.tolist()],
        )

    def refresh(self) -> None:
        """Work out now the snapshots that learning made stale, instead of at the next
        `snapshots` (the sidecar calls it once a slot's records are out: the medians of every
        series that learned are a tenth of the next slot's work before its first record)."""
        self._flush()
        self._refresh(np.flatnonzero(self._stale[: self._size]))

    def _refresh(self, stale: np.ndarray) -> None:
        if len(stale):
            counts = self._count[stale]
            values = self._p50[stale]
            p50 = _medians(values, counts)
            mad = _medians(np.abs(values - p50[..., None]), counts) * 1.4826
            spread = np.maximum(np.maximum(mad, MIN_SPREAD_S), 0.02 * p50)
            self._snap_p50[stale] = p50
            self._snap_spread[stale] = np.where(counts > 0, spread, np.nan)
            self._snap_jitter[stale] = _medians(self._jit[stale], counts)
            self._snap_body[stale] = _medians(self._body[stale], self._body_count[stale])
            self._stale[stale] = False

    def observe(
        self,
        rows: np.ndarray,
        before: Snapshots,
        failed: np.ndarray,
        p50s: np.ndarray,
        jitters: np.ndarray,
        bodies: np.ndarray,
        addresses: Sequence[frozenset[str]],
    ) -> None:
        """SeriesBaseline.observe for each row (distinct rows; `before` is their snapshot now)."""
        self._flush()
        finite = np.isfinite(p50s)
        with np.errstate(invalid="ignore"):
            tolerance = np.maximum(np.maximum(6.0 * before.spread, 0.5 * before.p50), 0.003)
            too_slow = finite & ~np.isnan(before.p50) & (p50s > before.p50 + tolerance)
        healthy = (failed == 0) & (~before.warm | ~too_slow.any(axis=1))
        rejected = self._rejected[rows] + 1
        relearn = ~healthy & (rejected >= RELEARN_AFTER)
        self._rejected[rows] = np.where(healthy, 0, rejected)
        if relearn.any():
            self._clear(rows[relearn])
        learn = healthy | (relearn & (failed == 0))
        if not learn.any():
            return
        rows, finite = rows[learn], finite[learn]
        p50s, jitters, bodies = p50s[learn], jitters[learn], bodies[learn]
        self._rejected[rows] = 0
        r, p = np.nonzero(finite)
        at = rows[r]
        slot = self._pos[at, p]
        self._p50[at, p, slot] = p50s[r, p]
        jitter = jitters[r, p]
        self._jit[at, p, slot] = np.where(np.isfinite(jitter), jitter, 0.0)
        self._pos[at, p] = (slot + 1) % _H
        self._count[at, p] = np.minimum(self._count[at, p] + 1, _H)
        has_body = np.isfinite(bodies)
        at = rows[has_body]
        slot = self._body_pos[at]
        self._body[at, slot] = bodies[has_body]
        self._body_pos[at] = (slot + 1) % _H
        self._body_count[at] = np.minimum(self._body_count[at] + 1, _H)
        self._healthy[rows] += 1
        self._stale[rows] = True
        for row, now in zip(
            rows.tolist(), [addresses[i] for i in np.flatnonzero(learn).tolist()], strict=True
        ):
            if now:
                self._remember(row, now)

    def _remember(self, row: int, now: frozenset[str]) -> None:
        held = self._addresses[row]
        if held is None:
            held = self._addresses[row] = deque(maxlen=_H)
        dropped = held[0] if len(held) == _H else None
        held.append(now)
        if dropped is None:
            self._union[row] = self._union[row] | now if not now <= self._union[row] else self._union[row]
        elif dropped != now:
            # The oldest set fell out: its addresses may be gone from the union.
            self._union[row] = frozenset().union(*held)


class SeriesBaselineView:
    """One series of `BaselineStore.values()`: its snapshot as of the call."""

    __slots__ = ("_i", "_snapshots")

    def __init__(self, snapshots: Snapshots, i: int) -> None:
        self._snapshots, self._i = snapshots, i

    def snapshot(self) -> BaselineSnapshot:
        return snapshot_of(self._snapshots, self._i)


def concat_snapshots(parts: Sequence[Snapshots]) -> Snapshots:
    if len(parts) == 1:
        return parts[0]
    if not parts:
        empty = np.empty((0, _P))
        return Snapshots(empty, empty, empty, np.empty(0), np.empty(0, dtype=np.int64), [])
    return Snapshots(
        np.concatenate([s.p50 for s in parts]),
        np.concatenate([s.spread for s in parts]),
        np.concatenate([s.jitter for s in parts]),
        np.concatenate([s.body for s in parts]),
        np.concatenate([s.healthy for s in parts]),
        [a for s in parts for a in s.addresses],
    )


def snapshot_of(snapshots: Snapshots, i: int) -> BaselineSnapshot:
    """Row i as a BaselineSnapshot (for code that reads one series)."""
    phases = {
        phase: PhaseBaseline(
            float(snapshots.p50[i, p]), float(snapshots.spread[i, p]), float(snapshots.jitter[i, p])
        )
        for p, phase in enumerate(PHASES)
        if not math.isnan(snapshots.p50[i, p])
    }
    return BaselineSnapshot(
        phases, float(snapshots.body[i]), snapshots.addresses[i], int(snapshots.healthy[i])
    )
