"""otelprobe's own metric aggregation: explicit-bucket histograms and last-value gauges, cumulative.

Sits under `metrics.py` (which records every result here) and above the two readers of it,
`metrics_otlp.py` (OTLP protobuf export) and `prometheus.py` (the /metrics endpoint). The SDK's
pure-Python collection held the event loop for tens of milliseconds at 10,000 targets; here a
recording is a few array operations under an uncontended lock, and a reader walks the series in
small chunks (`chunks`), each read under the lock and turned straight into bytes or text (no
copies that live long enough to wake the cyclic GC), then sleeps: a busy reader thread makes the
loop wait up to the GIL switch interval (5 ms) at each of its syscalls, so readers work in
slices of ~0.5 ms, leave the GIL alone in between, and use at most a quarter of a core. All series
of an instrument share one array: the cyclic GC's full passes grow with every tracked object, and
an object per series (80k at 10k targets) made each pass a 120-250 ms stall of the loop.
"""

from __future__ import annotations

import array
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, TypeVar

AttrValue = str | bool | int | float
Attrs = tuple[tuple[str, AttrValue], ...]
Kind = Literal["histogram", "gauge", "counter"]

# Series read per lock acquisition (~0.3-0.5 ms of encoding), then the reader sleeps.
CHUNK: Final = 100
# The reader's shortest pause between chunks, and the share of one core it may use at most: on
# 2 shared cores a reader at full speed (plus the Collector decoding what it sends) left the loop
# waiting for a core.
PAUSE_S: Final = 0.0005
READER_SHARE: Final = 0.25
# Series per instrument at most; beyond it observations go to one overflow series (as the SDK does,
# whose default limit of 2,000 silently folded most of 10,000 targets into it).
MAX_SERIES: Final = 250_000
OVERFLOW_ATTRS: Final[Attrs] = (("otel.metric.overflow", True),)
# Histogram state layout: [count, sum, min, max, bucket_0 .. bucket_n].
HIST_COUNT: Final = 0
HIST_SUM: Final = 1
HIST_MIN: Final = 2
HIST_MAX: Final = 3
HIST_BUCKETS: Final = 4


if TYPE_CHECKING:
    State = array.array[float]
else:  # array.array is not subscriptable at run time before Python 3.12
    State = array.array
# A series' state: [value] (gauges, counters) or [count, sum, min, max, buckets...], stored at an
# offset in one array('d') per instrument. One array for all series, not an object per series:
# 80k tracked per-series objects (lists, and arrays too: they are GC-tracked) made each full GC
# pass 120-250 ms, and those passes were the loop stalls of bench/scale.py. Readers get copies.


T = TypeVar("T")


@dataclass(frozen=True)
class Instrument:
    """A metric: its name, unit and description, and what one observation updates."""

    name: str
    unit: str
    description: str
    kind: Kind
    bounds: tuple[float, ...] = ()
    integer: bool = False
    """Exported as integers (OTLP as_int); the store keeps every value as a double."""


Visitor = Callable[[Instrument, list[tuple[Attrs, State]], int], T]


def initial_state(instrument: Instrument) -> list[float]:
    if instrument.kind == "histogram":
        return [0.0, 0.0, float("inf"), float("-inf"), *([0.0] * (len(instrument.bounds) + 1))]
    return [0.0]


class MetricStore:
    """Every series of every instrument; `lock` guards their state.

    Cumulative temporality from `start_ns`, the store's creation, for every series (a series
    first seen later was zero until then).
    """

    def __init__(self, max_series: int = MAX_SERIES) -> None:
        self.lock = threading.Lock()
        self.start_ns = time.time_ns()
        self.instruments: list[Instrument] = []
        self._max_series = max_series
        # Instrument name -> attributes -> offset of the series' state in the instrument's values.
        self._series: dict[str, dict[Attrs, int]] = {}
        self._values: dict[str, State] = {}
        self._widths: dict[str, int] = {}
        # Observable instruments: read at collection time (name -> callback returning series values).
        self._observed: dict[str, Callable[[], Sequence[tuple[Attrs, float]]]] = {}

    def instrument(self, instrument: Instrument) -> State:
        """Register `instrument`; returns the array holding its series' states (see `series`)."""
        self.instruments.append(instrument)
        self._series[instrument.name] = {}
        self._widths[instrument.name] = len(initial_state(instrument))
        values = self._values[instrument.name] = array.array("d")
        return values

    def observe(self, instrument: Instrument, callback: Callable[[], Sequence[tuple[Attrs, float]]]) -> None:
        """Register an instrument whose values `callback` reports at each collection."""
        self.instrument(instrument)
        self._observed[instrument.name] = callback

    def series(self, instrument: Instrument, attrs: Attrs) -> int:
        """The offset of series `attrs` in the instrument's values, created empty on first use.

        Call with `lock` held.
        """
        table = self._series[instrument.name]
        found = table.get(attrs)
        if found is None:
            if len(table) >= self._max_series:
                attrs = OVERFLOW_ATTRS
                found = table.get(attrs)
                if found is not None:
                    return found
            values = self._values[instrument.name]
            found = table[attrs] = len(values)
            values.extend(initial_state(instrument))
        return found

    def chunks(self, visit: Visitor[T], *, pause_s: float = PAUSE_S) -> Iterator[tuple[Instrument, T]]:
        """`visit(instrument, up to CHUNK (attrs, state) pairs, time)` per chunk, under the lock.

        The lock keeps each point consistent (count, sum and buckets from the same observations)
        while `visit` turns states into bytes or text; its result is yielded with the lock free,
        then the thread sleeps in proportion to the work done on the chunk (visit and consumer).
        """
        for instrument in self.instruments:
            callback = self._observed.get(instrument.name)
            values = callback() if callback is not None else ()
            table = self._series[instrument.name]
            states = self._values[instrument.name]
            width = self._widths[instrument.name]
            with self.lock:
                for attrs, value in values:
                    states[self.series(instrument, attrs)] = value
                # The keys only: (attrs, state) pairs for every series at once would be 80k
                # new tracked objects, enough to set off a full GC pass.
                keys = list(table)
            for start in range(0, len(keys), CHUNK):
                began = time.perf_counter()
                with self.lock:
                    chunk = [(k, states[table[k] : table[k] + width]) for k in keys[start : start + CHUNK]]
                    done = visit(instrument, chunk, time.time_ns())
                yield instrument, done
                if pause_s:
                    # The work on this chunk (visit, and the consumer's, e.g. a send when a request
                    # is full) sets the pause, so a reader never takes more than its share of a core.
                    busy = time.perf_counter() - began
                    time.sleep(max(pause_s, busy * (1 - READER_SHARE) / READER_SHARE))
