"""ProbeResult -> OpenTelemetry metrics: phase durations, success, certificate expiry, semconv ones.

Sits beside `spans.py`: `pipeline.Telemetry` feeds every result to both. Instruments:

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
- `otelprobe.export.dropped` (observable counter): spans dropped by the export queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.util.types import AttributeValue as OTelAttributeValue

from otelprobe.results import ProbeResult
from otelprobe.telemetry import names

PHASE_TOTAL: Final = "total"

# Latency buckets from 0.5 ms (loopback DNS) to 10 s (a probe's usual deadline).
LATENCY_BUCKETS_S: Final = (
    0.0005,
    0.001,
    0.0025,
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
_ICMP_GAUGES: Final = (
    (names.PROBE_ICMP_LOSS_RATIO, "1", "fraction of echo requests without a reply"),
    (names.PROBE_ICMP_RTT_MIN, "s", "minimum echo round-trip time"),
    (names.PROBE_ICMP_RTT_AVG, "s", "mean echo round-trip time"),
    (names.PROBE_ICMP_RTT_MAX, "s", "maximum echo round-trip time"),
    (names.PROBE_ICMP_RTT_STDDEV, "s", "standard deviation of echo round-trip times"),
)
_HTTP_KIND: Final = "http"
_ICMP_KIND: Final = "icmp"
# Series attribute dicts kept at most (targets x phases x outcomes); cleared, not evicted, beyond.
_ATTR_CACHE_MAX: Final = 100_000
Attributes = dict[str, OTelAttributeValue]
_HTTP_SEMCONV_KEYS: Final = (
    names.HTTP_REQUEST_METHOD,
    names.HTTP_RESPONSE_STATUS_CODE,
    names.SERVER_ADDRESS,
    names.SERVER_PORT,
    names.NETWORK_PROTOCOL_VERSION,
)

DroppedSource = Callable[[], Mapping[str, int]]
"""Returns the cumulative count of dropped spans per exporter name."""


class ProbeMetrics:
    """The instruments, created once per meter; `record(result)` observes one attempt."""

    def __init__(self, meter: Meter, vantage: str, dropped: DroppedSource | None = None) -> None:
        self._vantage = vantage
        self._dropped = dropped
        self._attr_cache: dict[tuple[str, str, str | None, str | None], Attributes] = {}
        self._duration = meter.create_histogram(
            names.METRIC_PROBE_DURATION,
            unit="s",
            description="duration of each probe phase and of the whole attempt (probe.phase=total)",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self._success = meter.create_gauge(
            names.METRIC_PROBE_SUCCESS, unit="1", description="1 if the latest attempt succeeded, else 0"
        )
        self._cert_remaining = meter.create_gauge(
            names.METRIC_TLS_CERT_REMAINING,
            unit="s",
            description="time until the earliest certificate of the served chain expires",
        )
        self._http_duration = meter.create_histogram(
            names.METRIC_HTTP_CLIENT_DURATION,
            unit="s",
            description="duration of HTTP client requests",
            explicit_bucket_boundaries_advisory=SEMCONV_DURATION_BUCKETS_S,
        )
        self._dns_duration = meter.create_histogram(
            names.METRIC_DNS_LOOKUP_DURATION,
            unit="s",
            description="duration of DNS lookups",
            explicit_bucket_boundaries_advisory=SEMCONV_DURATION_BUCKETS_S,
        )
        self._icmp = {
            key: meter.create_gauge(key, unit=unit, description=desc) for key, unit, desc in _ICMP_GAUGES
        }
        meter.create_observable_counter(
            names.METRIC_EXPORT_DROPPED,
            callbacks=[self._observe_dropped],
            unit="{span}",
            description="spans dropped because the export queue was full",
        )

    def _observe_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        if self._dropped is None:
            return []
        return [Observation(count, {"otelprobe.exporter": name}) for name, count in self._dropped().items()]

    def _attrs(self, kind: str, target: str, phase: str | None, error_type: str | None) -> Attributes:
        # The SDK only reads these dicts (it keys its series by their items), so one dict per
        # (target, phase, outcome) is built once and handed over on every observation.
        key = (kind, target, phase, error_type)
        attrs = self._attr_cache.get(key)
        if attrs is None:
            if len(self._attr_cache) >= _ATTR_CACHE_MAX:
                self._attr_cache.clear()
            attrs = {
                names.PROBE_KIND: kind,
                names.PROBE_TARGET: target,
                names.OTELPROBE_VANTAGE: self._vantage,
            }
            if phase is not None:
                attrs[names.PROBE_PHASE] = phase
            if error_type is not None:
                attrs[names.ERROR_TYPE] = error_type
            self._attr_cache[key] = attrs
        return attrs

    def record(self, result: ProbeResult) -> None:
        """Observe every instrument that applies to `result`."""
        kind, target = result.kind, result.target
        error_type = result.error.error_type if result.error else None
        record_duration = self._duration.record
        for phase in result.phases:
            record_duration(phase.duration_s, self._attrs(kind, target, phase.name, phase.error_type))
            if phase.name == names.SPAN_DNS_LOOKUP:
                self._record_dns(result, phase.duration_s, phase.error_type, phase.attributes)
        record_duration(result.duration_s, self._attrs(kind, target, PHASE_TOTAL, error_type))
        base = self._attrs(kind, target, None, None)
        self._success.set(0 if error_type else 1, base)

        attributes = result.attributes
        remaining = attributes.get(names.PROBE_TLS_CERT_REMAINING)
        if isinstance(remaining, int | float) and not isinstance(remaining, bool):
            self._cert_remaining.set(remaining, base)
        if kind == _ICMP_KIND:
            for key, gauge in self._icmp.items():
                value = attributes.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    gauge.set(value, base)
        if kind == _HTTP_KIND:
            self._record_http(result, error_type)

    def _record_http(self, result: ProbeResult, error_type: str | None) -> None:
        attrs: dict[str, OTelAttributeValue] = {
            key: value
            for key in _HTTP_SEMCONV_KEYS
            if isinstance(value := result.attributes.get(key), str | int) and not isinstance(value, bool)
        }
        if error_type is not None:
            attrs[names.ERROR_TYPE] = error_type
        self._http_duration.record(result.duration_s, attrs)

    def _record_dns(
        self,
        result: ProbeResult,
        duration_s: float,
        error_type: str | None,
        phase_attributes: Mapping[str, object],
    ) -> None:
        attrs: dict[str, OTelAttributeValue] = {}
        question = phase_attributes.get(
            names.DNS_QUESTION_NAME, result.attributes.get(names.DNS_QUESTION_NAME)
        )
        if isinstance(question, str):
            attrs[names.DNS_QUESTION_NAME] = question
        if error_type is not None:
            attrs[names.ERROR_TYPE] = error_type
        self._dns_duration.record(duration_s, attrs)
