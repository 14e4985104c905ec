"""The metric store as OTLP: ExportMetricsServiceRequest bytes, written directly, sent periodically.

Sits between `aggregation.MetricStore` and the senders (`senders.py` for OTLP/HTTP and gRPC, a
JSON-lines file writer here). Building protobuf messages point by point costs ~10 us each in
Python; at 10,000 targets (~80k series) that held the GIL for most of a second. So each data
point is written as wire-format bytes with `struct` (its attribute KeyValues serialized once per
series and cached), requests are cut at `max_points` points (bounded size, under gRPC's 4 MiB
default), and the encoder pauses between chunks of series so that the event loop keeps the GIL.
Export runs on its own thread, never on the loop.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Iterator
from typing import Final, Protocol

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otelprobe.telemetry.aggregation import (
    HIST_BUCKETS,
    HIST_COUNT,
    HIST_MAX,
    HIST_MIN,
    HIST_SUM,
    PAUSE_S,
    Attrs,
    AttrValue,
    Instrument,
    MetricStore,
    State,
)
from otelprobe.telemetry.otlp_json import JSONLinesWriter, message_to_json
from otelprobe.telemetry.protowire import length_delimited, varint
from otelprobe.telemetry.spans import any_value

_logger = logging.getLogger(__name__)

# Data points per request: ~1,000 histogram points are ~0.5 MB before gzip.
DEFAULT_MAX_POINTS: Final = 1000
# Wire tags (field number << 3 | wire type) of the OTLP metrics messages written here.
_TAG_1_LEN: Final = b"\x0a"  # Request.resource_metrics, ResourceMetrics.resource, *.data_points, ...
_TAG_2_LEN: Final = b"\x12"  # ResourceMetrics.scope_metrics, ScopeMetrics.metrics, Metric.description
_TAG_3_LEN: Final = b"\x1a"  # Metric.unit
_METRIC_GAUGE: Final = b"\x2a"  # Metric.gauge (5)
_METRIC_SUM: Final = b"\x3a"  # Metric.sum (7)
_METRIC_HISTOGRAM: Final = b"\x4a"  # Metric.histogram (9)
_HIST_ATTR: Final = b"\x4a"  # HistogramDataPoint.attributes (9)
_NUMBER_ATTR: Final = b"\x3a"  # NumberDataPoint.attributes (7)
_CUMULATIVE: Final = b"\x10\x02"  # aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
_MONOTONIC: Final = b"\x18\x01"  # Sum.is_monotonic = true
# start_time_unix_nano (2), time_unix_nano (3), count (4): fixed64; sum (5): double.
_HIST_HEAD: Final = struct.Struct("<BQBQBQBd")
_HIST_MIN_MAX: Final = struct.Struct("<BdBd")  # min (11), max (12)
_NUMBER_HEAD: Final = struct.Struct("<BQBQ")
_AS_DOUBLE: Final = struct.Struct("<Bd")  # as_double (4)
_AS_INT: Final = struct.Struct("<Bq")  # as_int (6, sfixed64)


class MetricEncoder:
    """Serialized ExportMetricsServiceRequests of a store's current state (one resource, one scope)."""

    def __init__(
        self,
        store: MetricStore,
        resource: Resource,
        scope: InstrumentationScope,
        max_points: int = DEFAULT_MAX_POINTS,
    ) -> None:
        self.store = store
        self.max_points = max_points
        self._resource = length_delimited(_TAG_1_LEN, resource.SerializeToString())
        self._scope = length_delimited(_TAG_1_LEN, scope.SerializeToString())
        self._headers: dict[str, bytes] = {}
        self._bounds: dict[str, bytes] = {}
        self._counts: dict[int, struct.Struct] = {}
        # Each series' attributes, serialized once (bytes: invisible to the cyclic GC).
        self._attrs: dict[Attrs, bytes] = {}
        self._pairs: dict[tuple[str, AttrValue], bytes] = {}
        self._start_ns = store.start_ns

    def _header(self, instrument: Instrument) -> bytes:
        header = self._headers.get(instrument.name)
        if header is None:
            header = self._headers[instrument.name] = (
                length_delimited(_TAG_1_LEN, instrument.name.encode())
                + length_delimited(_TAG_2_LEN, instrument.description.encode())
                + length_delimited(_TAG_3_LEN, instrument.unit.encode())
            )
            bounds = instrument.bounds
            self._bounds[instrument.name] = length_delimited(
                b"\x3a", struct.pack(f"<{len(bounds)}d", *bounds)
            )
            self._counts[len(bounds) + 1] = struct.Struct(f"<{len(bounds) + 1}Q")
        return header

    def _attributes(self, attrs: Attrs, tag: bytes) -> bytes:
        cached = self._attrs.get(attrs)
        if cached is None:
            cached = self._attrs[attrs] = b"".join(
                length_delimited(tag, self._key_value(pair)) for pair in attrs
            )
        return cached

    def _key_value(self, pair: tuple[str, AttrValue]) -> bytes:
        # Pairs repeat across series (kind, vantage, phase): each is serialized once.
        cached = self._pairs.get(pair)
        if cached is None:
            key, value = pair
            cached = self._pairs[pair] = KeyValue(key=key, value=any_value(value)).SerializeToString()
        return cached

    def _histogram_points(
        self, instrument: Instrument, chunk: list[tuple[Attrs, State]], now: int
    ) -> list[bytes]:
        bounds = self._bounds[instrument.name]
        counts = self._counts[len(instrument.bounds) + 1]
        bucket_field = b"\x32" + varint(counts.size)  # bucket_counts (6), packed fixed64
        out: list[bytes] = []
        start = self._start_ns
        for attrs, state in chunk:
            count = int(state[HIST_COUNT])
            point = b"".join(
                (
                    self._attributes(attrs, _HIST_ATTR),
                    _HIST_HEAD.pack(0x11, start, 0x19, now, 0x21, count, 0x29, state[HIST_SUM]),
                    bucket_field,
                    counts.pack(*map(int, state[HIST_BUCKETS:])),
                    bounds,
                    _HIST_MIN_MAX.pack(0x59, state[HIST_MIN], 0x61, state[HIST_MAX]) if count else b"",
                )
            )
            out.append(length_delimited(_TAG_1_LEN, point))
        return out

    def _number_points(
        self, instrument: Instrument, chunk: list[tuple[Attrs, State]], now: int
    ) -> list[bytes]:
        out: list[bytes] = []
        head = _NUMBER_HEAD.pack(0x11, self._start_ns, 0x19, now)
        integer = instrument.integer
        for attrs, state in chunk:
            value = state[0]
            encoded = _AS_INT.pack(0x31, int(value)) if integer else _AS_DOUBLE.pack(0x21, value)
            point = self._attributes(attrs, _NUMBER_ATTR) + head + encoded
            out.append(length_delimited(_TAG_1_LEN, point))
        return out

    def _points(self, instrument: Instrument, chunk: list[tuple[Attrs, State]], now: int) -> list[bytes]:
        """Each series of `chunk` as one encoded data point (runs under the store's lock)."""
        self._header(instrument)  # also prepares the instrument's bounds and counts layout
        if instrument.kind == "histogram":
            return self._histogram_points(instrument, chunk, now)
        return self._number_points(instrument, chunk, now)

    def _metric(self, instrument: Instrument, points: list[bytes]) -> bytes:
        data = b"".join(points)
        if instrument.kind == "histogram":
            body = length_delimited(_METRIC_HISTOGRAM, data + _CUMULATIVE)
        elif instrument.kind == "counter":
            body = length_delimited(_METRIC_SUM, data + _CUMULATIVE + _MONOTONIC)
        else:
            body = length_delimited(_METRIC_GAUGE, data)
        return length_delimited(_TAG_2_LEN, self._header(instrument) + body)

    def _request(self, metrics: list[bytes]) -> bytes:
        scope_metrics = length_delimited(_TAG_2_LEN, self._scope + b"".join(metrics))
        return length_delimited(_TAG_1_LEN, self._resource + scope_metrics)

    def requests(self, *, pause: bool = True) -> Iterator[bytes]:
        """The store's series as requests of at most `max_points` points each (none if empty).

        Points are encoded under the store's lock, chunk by chunk; requests are yielded (and
        sent) with the lock free; with `pause` the thread sleeps between chunks (`aggregation`).
        """
        metrics: list[bytes] = []
        points = 0
        for instrument, encoded in self.store.chunks(self._points, pause_s=PAUSE_S if pause else 0.0):
            while encoded:
                room = self.max_points - points
                taken, encoded = encoded[:room], encoded[room:]
                metrics.append(self._metric(instrument, taken))
                points += len(taken)
                if points == self.max_points:
                    yield self._request(metrics)  # the store's lock is free here
                    metrics, points = [], 0
        if metrics:
            yield self._request(metrics)

    def collect(self) -> ExportMetricsServiceRequest:
        """Everything as one parsed request (tests, the one-shot CLI)."""
        request = ExportMetricsServiceRequest()
        for body in self.requests(pause=False):
            request.MergeFromString(body)
        return request


class MetricSender(Protocol):
    """Delivers one serialized ExportMetricsServiceRequest; called from one thread at a time."""

    def send_serialized(self, body: bytes, timeout_s: float) -> bool: ...

    def shutdown(self) -> None: ...


class JSONLinesMetricSender:
    """Each request as one OTLP/JSON line of a telemetry file (the Collector file exporter's format)."""

    def __init__(self, writer: JSONLinesWriter) -> None:
        self._writer = writer

    def send_serialized(self, body: bytes, timeout_s: float) -> bool:
        try:
            self._writer.write_line(message_to_json(ExportMetricsServiceRequest.FromString(body)))
        except OSError as exc:
            _logger.warning("cannot write metrics to %s: %s", self._writer.path, exc)
            return False
        return True

    def shutdown(self) -> None:
        return None


class PeriodicMetricExporter:
    """Encodes and sends the store every `interval_s` from its own thread; once more at shutdown."""

    def __init__(
        self, encoder: MetricEncoder, sender: MetricSender, interval_s: float, timeout_s: float, name: str
    ) -> None:
        self.encoder = encoder
        self.sender = sender
        self.name = name
        self.exports = 0
        self.failures = 0
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self._export_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"otelprobe-metrics-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.export(self._timeout_s)

    def export(self, timeout_s: float) -> bool:
        """Send the current state now (any thread); False if a request was not accepted in time."""
        deadline = time.monotonic() + timeout_s
        ok = True
        with self._export_lock:
            try:
                for body in self.encoder.requests():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self.sender.send_serialized(body, remaining):
                        ok = False
                        break
            except Exception:
                # An encoder or sender bug must not kill the thread; this interval's export is lost.
                _logger.exception("metric export %s failed", self.name)
                ok = False
            self.exports += 1
            self.failures += not ok
        return ok

    def shutdown(self, timeout_s: float) -> None:
        """Stop the timer, export the final state within `timeout_s`, close the sender."""
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            # Stuck sending to a dead Collector: interrupt its retries instead of waiting on it.
            _logger.warning("metric export %s did not finish within the shutdown timeout", self.name)
            self.sender.shutdown()
            return
        if not self.export(max(0.0, deadline - time.monotonic())):
            _logger.warning("final metric export %s did not complete", self.name)
        self.sender.shutdown()
