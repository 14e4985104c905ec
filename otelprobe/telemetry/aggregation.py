"""otelprobe's own metric aggregation: explicit-bucket histograms and last-value gauges, cumulative.

Sits under `metrics.py` (which records every result here) and above the two readers of it,
`metrics_otlp.py` (OTLP protobuf export) and `prometheus.py` (the /metrics endpoint). The SDK's
pure-Python collection held the event loop for tens of milliseconds at 10,000 targets; here a
recording is a few list operations under an uncontended lock, and a reader walks the series in
small chunks (`chunks`), each read under the lock and turned straight into bytes or text (no
copies that live long enough to wake the cyclic GC), then sleeps a little: a busy reader thread
makes the loop wait up to the GIL switch interval (5 ms) at each of its syscalls, so readers
work in slices of ~0.5 ms and leave the GIL alone in between.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

AttrValue = str | bool | int | float
Attrs = tuple[tuple[str, AttrValue], ...]
Kind = Literal["histogram", "gauge", "counter"]

# Series read per lock acquisition (~0.3-0.5 ms of encoding), then the reader sleeps.
CHUNK: Final = 100
# The reader's pause between chunks: at most about half a core, and the loop never waits long.
PAUSE_S: Final = 0.0005
# Histogram state layout: [count, sum, min, max, bucket_0 .. bucket_n].
HIST_COUNT: Final = 0
HIST_SUM: Final = 1
HIST_MIN: Final = 2
HIST_MAX: Final = 3
HIST_BUCKETS: Final = 4


class Series:
    """One attribute set of one instrument: its mutable state and encodings cached by readers."""

    __slots__ = ("attrs", "otlp_attrs", "prom_labels", "start_ns", "state")

    def __init__(self, attrs: Attrs, state: list[float]) -> None:
        self.attrs = attrs
        self.start_ns = time.time_ns()
        self.state = state
        # Written once by the reader threads that encode this series (OTLP bytes, Prometheus labels).
        self.otlp_attrs: bytes | None = None
        self.prom_labels: str | None = None


@dataclass(frozen=True)
class Instrument:
    """A metric: its name, unit and description, and what one observation updates."""

    name: str
    unit: str
    description: str
    kind: Kind
    bounds: tuple[float, ...] = ()


def new_histogram_state(buckets: int) -> list[float]:
    return [0, 0.0, float("inf"), float("-inf"), *([0] * buckets)]


class MetricStore:
    """Every series of every instrument; `lock` guards their state."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.start_ns = time.time_ns()
        self.instruments: list[Instrument] = []
        self._series: dict[str, dict[Attrs, Series]] = {}
        # Observable instruments: read at collection time (name -> callback returning series values).
        self._observed: dict[str, Callable[[], Sequence[tuple[Attrs, float]]]] = {}

    def instrument(self, instrument: Instrument) -> dict[Attrs, Series]:
        """Register `instrument`; returns its series table (keyed by attributes)."""
        self.instruments.append(instrument)
        return self._series.setdefault(instrument.name, {})

    def observe(self, instrument: Instrument, callback: Callable[[], Sequence[tuple[Attrs, float]]]) -> None:
        """Register an instrument whose values `callback` reports at each collection."""
        self.instrument(instrument)
        self._observed[instrument.name] = callback

    def series(self, instrument: Instrument, attrs: Attrs) -> Series:
        """The series of `attrs`, created empty on first use (call with `lock` held)."""
        table = self._series[instrument.name]
        found = table.get(attrs)
        if found is None:
            if instrument.kind == "histogram":
                state = new_histogram_state(len(instrument.bounds) + 1)
            else:
                state = [0]
            found = table[attrs] = Series(attrs, state)
        return found

    def chunks(self, *, pause_s: float = PAUSE_S) -> Iterator[tuple[Instrument, list[Series], int]]:
        """(instrument, up to CHUNK series, time) with the lock held until the next item is asked for.

        The consumer reads each series' state while the chunk is current (the lock keeps each
        point consistent: count, sum and buckets from the same observations); between chunks the
        lock is free and the thread sleeps `pause_s`.
        """
        for instrument in self.instruments:
            callback = self._observed.get(instrument.name)
            values = callback() if callback is not None else ()
            with self.lock:
                for attrs, value in values:
                    self.series(instrument, attrs).state[0] = value
                series = list(self._series[instrument.name].values())
            for start in range(0, len(series), CHUNK):
                with self.lock:
                    yield instrument, series[start : start + CHUNK], time.time_ns()
                if pause_s:
                    time.sleep(pause_s)

    def series_count(self) -> int:
        return sum(len(table) for table in self._series.values())
