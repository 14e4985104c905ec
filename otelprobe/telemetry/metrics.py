"""ProbeResult -> metrics: phase durations, success, certificate expiry, semconv ones.

Sits beside `spans.py`: `pipeline.Telemetry` feeds every result to both. Observations go into
otelprobe's own aggregation (`aggregation.MetricStore`: explicit buckets, cumulative), which the
OTLP exporters (`metrics_otlp.py`) and the Prometheus endpoint (`prometheus.py`) read; the SDK's
pure-Python aggregation cost ~50 us per result and stalled the loop at each collection. Instruments:

- `probe.duration` (histogram, s): one observation per phase plus `probe.phase="total"`, with
  probe.kind, probe.target, otelprobe.vantage and error.type when that phase/attempt failed.
- `probe.success` (gauge, 0/1): the outcome of the latest attempt, as blackbox_exporter's
  `probe_success`. OTel's guidance is a gauge for "current state" and a counter for "how many";
  the count by outcome already exists losslessly as the count of `probe.duration{probe.phase=
  "total"}` split by error.type, so success ratios come from there, and this gauge answers "is
  it up now" without a second series per outcome.
- `probe.tls.cert.remaining` (gauge, s), from the attribute of the same name.
- `http.client.request.duration` (semconv histogram, s) for HTTP attempts;
  `dns.lookup.duration` (semconv histogram, s) for every `dns.lookup` phase.
- `probe.icmp.loss_ratio` (gauge, 1) and `probe.icmp.rtt.{min,avg,max,stddev}` (gauges, s).
- `otelprobe.export.dropped` (observable counter): spans that never reached the Collector, by
  exporter and reason (`queue_full`: no room in the export queue; `export_failed`: in a batch the
  sender gave up on — Collector down, rejected, timed out).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from otelprobe import names
from otelprobe.results import ProbeResult
from otelprobe.telemetry.aggregation import (
    HIST_BUCKETS,
    HIST_COUNT,
    HIST_MAX,
    HIST_MIN,
    HIST_SUM,
    Attrs,
    AttrValue,
    Instrument,
    MetricStore,
    State,
)

PHASE_TOTAL: Final = "total"

# The semantic conventions' advice for http.client.request.duration and dns.lookup.duration.
SEMCONV_DURATION_BUCKETS_S: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
# probe.duration: the same, from 0.5 ms (loopback DNS) up; 10 s is a probe's usual deadline.
LATENCY_BUCKETS_S: Final = (0.0005, 0.001, 0.0025, *SEMCONV_DURATION_BUCKETS_S)
PROBE_DURATION: Final = Instrument(
    names.METRIC_PROBE_DURATION,
    "s",
    "duration of each probe phase and of the whole attempt (probe.phase=total)",
    "histogram",
    LATENCY_BUCKETS_S,
)
PROBE_SUCCESS: Final = Instrument(
    names.METRIC_PROBE_SUCCESS, "1", "1 if the latest attempt succeeded, else 0", "gauge", integer=True
)
TLS_CERT_REMAINING: Final = Instrument(
    names.METRIC_TLS_CERT_REMAINING,
    "s",
    "time until the earliest certificate of the served chain expires",
    "gauge",
)
HTTP_CLIENT_DURATION: Final = Instrument(
    names.METRIC_HTTP_CLIENT_DURATION,
    "s",
    "duration of HTTP client requests",
    "histogram",
    SEMCONV_DURATION_BUCKETS_S,
)
DNS_LOOKUP_DURATION: Final = Instrument(
    names.METRIC_DNS_LOOKUP_DURATION, "s", "duration of DNS lookups", "histogram", SEMCONV_DURATION_BUCKETS_S
)
ICMP_GAUGES: Final = (
    Instrument(names.PROBE_ICMP_LOSS_RATIO, "1", "fraction of echo requests without a reply", "gauge"),
    Instrument(names.PROBE_ICMP_RTT_MIN, "s", "minimum echo round-trip time", "gauge"),
    Instrument(names.PROBE_ICMP_RTT_AVG, "s", "mean echo round-trip time", "gauge"),
    Instrument(names.PROBE_ICMP_RTT_MAX, "s", "maximum echo round-trip time", "gauge"),
    Instrument(names.PROBE_ICMP_RTT_STDDEV, "s", "standard deviation of echo round-trip times", "gauge"),
)
EXPORT_DROPPED: Final = Instrument(
    names.METRIC_EXPORT_DROPPED,
    "{span}",
    "spans that never reached the Collector: the export queue was full, or their batch's export failed",
    "counter",
    integer=True,
)
EXPORTER_ATTRIBUTE: Final = "otelprobe.exporter"
DROP_REASON_ATTRIBUTE: Final = "otelprobe.export.reason"
_HTTP_KIND: Final = "http"
_ICMP_KIND: Final = "icmp"
_HTTP_SEMCONV_KEYS: Final = (
    names.HTTP_REQUEST_METHOD,
    names.HTTP_RESPONSE_STATUS_CODE,
    names.SERVER_ADDRESS,
    names.SERVER_PORT,
    names.NETWORK_PROTOCOL_VERSION,
)

DroppedSource = Callable[[], Mapping[tuple[str, str], int]]
"""Spans lost so far by (exporter name, reason: "queue_full" | "export_failed")."""
"""Returns the cumulative count of dropped spans per exporter name."""


def _observe(values: State, at: int, bounds: tuple[float, ...], value: float) -> None:
    """One observation into the histogram series whose state starts at `values[at]`."""
    values[at + HIST_BUCKETS + bisect_left(bounds, value)] += 1  # OTel buckets: upper bound inclusive
    values[at + HIST_COUNT] += 1
    values[at + HIST_SUM] += value
    if value < values[at + HIST_MIN]:
        values[at + HIST_MIN] = value
    if value > values[at + HIST_MAX]:
        values[at + HIST_MAX] = value


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


class ProbeMetrics:
    """The instruments in one store; `record(result)` observes one attempt."""

    def __init__(self, store: MetricStore, vantage: str, dropped: DroppedSource | None = None) -> None:
        self.store = store
        self._vantage = vantage
        self._dropped = dropped
        # Instrument name -> the array of its series' states (offsets from `store.series`).
        self._values = {
            instrument.name: store.instrument(instrument)
            for instrument in (
                PROBE_DURATION,
                PROBE_SUCCESS,
                TLS_CERT_REMAINING,
                HTTP_CLIENT_DURATION,
                DNS_LOOKUP_DURATION,
                *ICMP_GAUGES,
            )
        }
        self._durations_values = self._values[PROBE_DURATION.name]
        store.observe(EXPORT_DROPPED, self._observe_dropped)
        # (kind, target, phase, error.type) -> the offset of its probe.duration series.
        self._durations: dict[tuple[str, str, str | None, str | None], int] = {}
        self._bases: dict[tuple[str, str], Attrs] = {}
        self._tenants: Mapping[str, str] = {}

    def set_target_tenants(self, tenants: Mapping[str, str]) -> None:
        """`otelprobe.tenant` on every series of these targets (target name -> tenant); {} for none."""
        with self.store.lock:
            self._tenants = dict(tenants)
            self._bases.clear()
            self._durations.clear()

    def _observe_dropped(self) -> Sequence[tuple[Attrs, float]]:
        if self._dropped is None:
            return []
        return [
            (((EXPORTER_ATTRIBUTE, name), (DROP_REASON_ATTRIBUTE, reason)), count)
            for (name, reason), count in self._dropped().items()
        ]

    def _base(self, kind: str, target: str) -> Attrs:
        key = (kind, target)
        attrs = self._bases.get(key)
        if attrs is None:
            attrs = self._bases[key] = (
                (names.PROBE_KIND, kind),
                (names.PROBE_TARGET, target),
                (names.OTELPROBE_VANTAGE, self._vantage),
            )
            tenant = self._tenants.get(target)
            if tenant is not None:
                attrs = self._bases[key] = (*attrs, (names.OTELPROBE_TENANT, tenant))
        return attrs

    def _duration_series(self, kind: str, target: str, phase: str, error_type: str | None) -> int:
        key = (kind, target, phase, error_type)
        series = self._durations.get(key)
        if series is None:
            attrs: Attrs = (*self._base(kind, target), (names.PROBE_PHASE, phase))
            if error_type is not None:
                attrs = (*attrs, (names.ERROR_TYPE, error_type))
            series = self._durations[key] = self.store.series(PROBE_DURATION, attrs)
        return series

    def record(self, result: ProbeResult) -> None:
        """Observe every instrument that applies to `result`."""
        kind, target = result.kind, result.target
        error_type = result.error.error_type if result.error else None
        bounds = LATENCY_BUCKETS_S
        store = self.store
        durations = self._durations_values
        with store.lock:
            for phase in result.phases:
                if names.PROBE_CONNECT_ABANDONED in phase.attributes:
                    continue  # a connect attempt cut short because another address won: no latency
                duration_s = phase.duration_s
                at = self._duration_series(kind, target, phase.name, phase.error_type)
                _observe(durations, at, bounds, duration_s)
                if phase.name == names.SPAN_DNS_LOOKUP:
                    self._record_dns(result, duration_s, phase.error_type, phase.attributes)
            total_s = result.duration_s
            _observe(durations, self._duration_series(kind, target, PHASE_TOTAL, error_type), bounds, total_s)
            base = self._base(kind, target)
            self._set(PROBE_SUCCESS, base, 0 if error_type else 1)

            attributes = result.attributes
            remaining = _number(attributes.get(names.PROBE_TLS_CERT_REMAINING))
            if remaining is not None:
                self._set(TLS_CERT_REMAINING, base, remaining)
            if kind == _ICMP_KIND:
                for gauge in ICMP_GAUGES:
                    value = _number(attributes.get(gauge.name))
                    if value is not None:
                        self._set(gauge, base, value)
            if kind == _HTTP_KIND:
                self._record_http(result, total_s, error_type)

    def _set(self, gauge: Instrument, attrs: Attrs, value: float) -> None:
        self._values[gauge.name][self.store.series(gauge, attrs)] = value

    def _record_http(self, result: ProbeResult, duration_s: float, error_type: str | None) -> None:
        attrs: list[tuple[str, AttrValue]] = [
            (key, value)
            for key in _HTTP_SEMCONV_KEYS
            if isinstance(value := result.attributes.get(key), str | int) and not isinstance(value, bool)
        ]
        if error_type is not None:
            attrs.append((names.ERROR_TYPE, error_type))
        if self._tenants and (tenant := self._tenants.get(result.target)) is not None:
            attrs.append((names.OTELPROBE_TENANT, tenant))
        at = self.store.series(HTTP_CLIENT_DURATION, tuple(attrs))
        _observe(self._values[HTTP_CLIENT_DURATION.name], at, SEMCONV_DURATION_BUCKETS_S, duration_s)

    def _record_dns(
        self,
        result: ProbeResult,
        duration_s: float,
        error_type: str | None,
        phase_attributes: Mapping[str, object],
    ) -> None:
        attrs: list[tuple[str, AttrValue]] = []
        question = phase_attributes.get(
            names.DNS_QUESTION_NAME, result.attributes.get(names.DNS_QUESTION_NAME)
        )
        if isinstance(question, str):
            attrs.append((names.DNS_QUESTION_NAME, question))
        if error_type is not None:
            attrs.append((names.ERROR_TYPE, error_type))
        if self._tenants and (tenant := self._tenants.get(result.target)) is not None:
            attrs.append((names.OTELPROBE_TENANT, tenant))
        at = self.store.series(DNS_LOOKUP_DURATION, tuple(attrs))
        _observe(self._values[DNS_LOOKUP_DURATION.name], at, SEMCONV_DURATION_BUCKETS_S, duration_s)
