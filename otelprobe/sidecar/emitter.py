"""Attributions out through the OpenTelemetry SDK: a `slo.violation` span linked to probe spans, a
log record carrying the §6 JSON, and gauges of open violations and burn rates, over OTLP.

The end of the sidecar's flow (DESIGN §2: attribution -OTLP-> Collector). The volume is a few
records per incident, so the SDK's own providers, batch processors and OTLP exporters are used as
users expect (unlike the prober's hand-built hot path). Without an export endpoint the providers
still run, with nothing attached: the same code path, no network.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, set_span_in_context

from otelprobe import __version__, names
from otelprobe.attribution.attribute import iso
from otelprobe.sidecar.view import MAX_LIMIT

if TYPE_CHECKING:
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.util.types import AttributeValue

    from otelprobe.sidecar.config import ExportConfig
    from otelprobe.sidecar.pipeline import LiveAttribution
    from otelprobe.sidecar.view import SidecarView

_logger = logging.getLogger(__name__)
_SCOPE: Final = "otelprobe.sidecar"
UNATTRIBUTED: Final = "unattributed"
MAX_BURN_SERIES: Final = 200
"""Burn-rate gauges exported at most (the highest burns): a fleet of series must not turn into a
metric explosion; /v1/slos has them all."""
MODEL_REGISTRY_VERSION: Final = "otelprobe.model.registry_version"
"""The registry version (v0003) of the model that made an attribution; `otelprobe.model.version`
is the model's label (training name @ data digest)."""
MODEL_OUTCOME: Final = "otelprobe.model.outcome"
MODEL_PREVIOUS: Final = "otelprobe.model.previous_version"
METRIC_MODEL_CHANGES: Final = "otelprobe.sidecar.model.changes"
EVENT_MODEL_CHANGE: Final = "otelprobe.model.change"


def _exporters(config: ExportConfig) -> tuple[SpanExporter, LogRecordExporter, MetricExporter]:
    headers = {key: value.get_secret_value() for key, value in config.headers.items()}
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GRPCLogs
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GRPCMetrics
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCSpans

        common = {"endpoint": config.endpoint, "insecure": config.insecure, "headers": headers}
        return (
            GRPCSpans(timeout=config.timeout_s, **common),  # type: ignore[arg-type]
            GRPCLogs(timeout=config.timeout_s, **common),  # type: ignore[arg-type]
            GRPCMetrics(timeout=config.timeout_s, **common),  # type: ignore[arg-type]
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    base = config.endpoint.rstrip("/")
    return (
        OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers=headers, timeout=config.timeout_s),
        OTLPLogExporter(endpoint=f"{base}/v1/logs", headers=headers, timeout=config.timeout_s),
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", headers=headers, timeout=config.timeout_s),
    )


def _span_context(trace_id: str, span_id: str) -> SpanContext | None:
    try:
        return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(1))
    except ValueError:
        return None


def violation_attributes(live: LiveAttribution, objectives: dict[str, float]) -> dict[str, AttributeValue]:
    """The attributes of a violation's span and log record (docs/spans.md)."""
    found = live.attribution
    top = found.causes[0]
    attributes: dict[str, AttributeValue] = {
        names.OTELPROBE_SLO_NAME: found.slo,
        names.OTELPROBE_SLO_NAMES: list(found.slos),
        names.PROBE_TARGET: found.target,
        names.OTELPROBE_VANTAGE: found.vantage,
        names.OTELPROBE_CAUSE: top.cause,
        names.OTELPROBE_CAUSE_SCOPE: top.scope,
        names.OTELPROBE_CAUSE_SCORE: round(top.score, 6),
        names.OTELPROBE_MODEL_VERSION: found.model,
        names.OTELPROBE_WINDOW_START: iso(found.window_start_ns),
        names.OTELPROBE_WINDOW_END: iso(found.window_end_ns),
        names.OTELPROBE_WINDOW_PROBES: found.probes,
        names.OTELPROBE_WINDOW_FAILED: found.failed,
    }
    if found.slo in objectives:
        attributes[names.OTELPROBE_SLO_OBJECTIVE] = objectives[found.slo]
    if live.incident_id:
        attributes[names.OTELPROBE_INCIDENT_ID] = live.incident_id
    if live.model_version:
        attributes[MODEL_REGISTRY_VERSION] = live.model_version
    return attributes


def open_by_cause(view: SidecarView) -> Counter[tuple[str, str]]:
    """Open incidents by the top cause and scope of their latest attribution ("unattributed" while
    none of their windows could be attributed: baseline still warming, or no symptom)."""
    counts: Counter[tuple[str, str]] = Counter()
    for incident in view.incidents("open", limit=MAX_LIMIT):
        causes = incident.get("causes") or []
        top = causes[0] if causes else {"cause": UNATTRIBUTED, "scope": UNATTRIBUTED}
        counts[(str(top["cause"]), str(top["scope"]))] += 1
    return counts


def burn_rates(view: SidecarView, limit: int = MAX_BURN_SERIES) -> dict[tuple[str, str, str, str], float]:
    """(slo, rule window, target, vantage) -> burn rate, for series with a non-zero burn, the
    highest `limit` of them (two rules sharing a window give one gauge: the larger burn)."""
    rates: dict[tuple[str, str, str, str], float] = {}
    for series in view.slos(limit=MAX_LIMIT):
        for status in series["slos"]:
            for rule in status["burn_rates"]:
                long_window, _, short_window = str(rule["rule"]).partition("/")
                for window, value in ((long_window, rule["long_burn"]), (short_window, rule["short_burn"])):
                    key = (str(status["slo"]), window, str(series["target"]), str(series["vantage"]))
                    if value and value > rates.get(key, 0.0):
                        rates[key] = float(value)
    return dict(sorted(rates.items(), key=lambda item: -item[1])[:limit])


class ViolationEmitter:
    """The sidecar's OTel SDK providers and what it emits through them.

    Args:
        export: where to send; None keeps everything local (no exporter).
        view: read by the metric callbacks (open incidents by cause, burn rates).
        objectives: SLO name -> objective, for the span attributes.
        metric_reader: overrides the periodic OTLP reader (tests use an in-memory one).
    """

    def __init__(
        self,
        export: ExportConfig | None,
        view: SidecarView,
        objectives: Callable[[], dict[str, float]],
        *,
        metric_reader: MetricReader | None = None,
    ) -> None:
        service = export.service_name if export else "otelprobe-sidecar"
        self.resource = Resource.create(
            {
                "service.name": service,
                "service.version": __version__,
                "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
            }
        )
        self._view = view
        self._objectives = objectives
        self.tracer_provider = TracerProvider(resource=self.resource)
        self.logger_provider = LoggerProvider(resource=self.resource, shutdown_on_exit=False)
        readers: list[MetricReader] = [metric_reader] if metric_reader else []
        if export is not None:
            spans, logs, metrics = _exporters(export)
            self.tracer_provider.add_span_processor(BatchSpanProcessor(spans, schedule_delay_millis=1000))
            self.logger_provider.add_log_record_processor(
                BatchLogRecordProcessor(logs, schedule_delay_millis=1000)
            )
            if metric_reader is None:
                interval_ms = export.metric_interval_s * 1000
                readers.append(PeriodicExportingMetricReader(metrics, export_interval_millis=interval_ms))
        self.meter_provider = MeterProvider(
            resource=self.resource, metric_readers=readers, shutdown_on_exit=False
        )
        self._tracer = self.tracer_provider.get_tracer(_SCOPE, __version__)
        self._log = self.logger_provider.get_logger(_SCOPE, __version__)
        meter = self.meter_provider.get_meter(_SCOPE, __version__)
        meter.create_observable_gauge(
            names.METRIC_VIOLATIONS_OPEN,
            callbacks=[self._observe_open],
            unit="{incident}",
            description="open incidents by the top cause of their latest attribution",
        )
        meter.create_observable_gauge(
            names.METRIC_SLO_BURN_RATE,
            callbacks=[self._observe_burn],
            unit="1",
            description="error-budget burn rate per SLO and rule window (series with a non-zero burn)",
        )
        self._model_changes = meter.create_counter(
            METRIC_MODEL_CHANGES,
            unit="{event}",
            description="model registry events by outcome: promoted, refused, rolled_back, imported, failed",
        )
        self.emitted = 0

    def emit_model_event(self, outcome: str, details: dict[str, Any]) -> None:
        """A promotion, refusal, rollback, import or failed retrain: a log record and a counter."""
        attributes: dict[str, AttributeValue] = {MODEL_OUTCOME: outcome}
        if details.get("version"):
            attributes[MODEL_REGISTRY_VERSION] = str(details["version"])
        if details.get("label"):
            attributes[names.OTELPROBE_MODEL_VERSION] = str(details["label"])
        if details.get("previous"):
            attributes[MODEL_PREVIOUS] = str(details["previous"])
        self._model_changes.add(1, {MODEL_OUTCOME: outcome})
        self._log.emit(
            LogRecord(
                timestamp=time.time_ns(),
                severity_number=SeverityNumber.WARN
                if outcome in ("refused", "failed")
                else SeverityNumber.INFO,
                severity_text="WARN" if outcome in ("refused", "failed") else "INFO",
                body=json.dumps({"outcome": outcome, **details}, separators=(",", ":"), default=str),
                attributes=attributes,
                event_name=EVENT_MODEL_CHANGE,
            )
        )

    def emit(self, live: LiveAttribution) -> None:
        """One `slo.violation` span (window start to end, linked to probe spans) and its log record."""
        found = live.attribution
        attributes = violation_attributes(live, self._objectives())
        links = [
            Link(context)
            for ref in live.links
            if (context := _span_context(ref.trace_id, ref.span_id)) is not None
        ]
        span = self._tracer.start_span(
            names.SPAN_SLO_VIOLATION,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=links,
            start_time=found.window_start_ns,
        )
        span.end(end_time=found.window_end_ns)
        self._log.emit(
            LogRecord(
                timestamp=found.window_end_ns,
                context=set_span_in_context(span),  # the record carries the span's trace id
                severity_number=SeverityNumber.WARN,
                severity_text="WARN",
                body=json.dumps(live.to_json(), separators=(",", ":")),
                attributes=attributes,
                event_name=names.EVENT_SLO_VIOLATION,
            )
        )
        self.emitted += 1

    def _observe_open(self, _options: CallbackOptions) -> Iterable[Observation]:
        for (cause, scope), count in sorted(open_by_cause(self._view).items()):
            yield Observation(count, {names.OTELPROBE_CAUSE: cause, names.OTELPROBE_CAUSE_SCOPE: scope})

    def _observe_burn(self, _options: CallbackOptions) -> Iterable[Observation]:
        for (slo, window, target, vantage), value in burn_rates(self._view).items():
            attributes = {
                names.OTELPROBE_SLO_NAME: slo,
                names.OTELPROBE_SLO_WINDOW: window,
                names.PROBE_TARGET: target,
                names.OTELPROBE_VANTAGE: vantage,
            }
            yield Observation(value, attributes)

    def flush(self, timeout_s: float = 5.0) -> None:
        millis = int(timeout_s * 1000)
        self.tracer_provider.force_flush(millis)
        self.logger_provider.force_flush(millis)
        self.meter_provider.force_flush(millis)

    def shutdown(self) -> None:
        """Flush and stop every provider (SIGTERM's last step)."""
        try:
            self.flush()
        finally:
            self.tracer_provider.shutdown()
            self.logger_provider.shutdown()
            self.meter_provider.shutdown()
