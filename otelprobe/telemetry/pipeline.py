"""The telemetry pipeline: span batchers and metric exporters wired to the configured exporters.

The one place that builds exporters. The scheduler (or the CLI) creates one `Telemetry` and hands
it every `ProbeResult`: `spans.py` turns it into serialized OTLP spans, which go to one bounded,
drop-counting `SpanBatcher` per exporter (`batching.py`, worker threads, `senders.py`); `metrics.py`
aggregates it into a `MetricStore`, which a `PeriodicMetricExporter` per OTLP/file exporter
(`metrics_otlp.py`, own thread) and the Prometheus endpoint (`prometheus.py`) read. Exporting
never blocks probing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceProto
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource

import otelprobe
from otelprobe import names
from otelprobe.config.telemetry import (
    ConsoleExporterConfig,
    ExporterConfig,
    FileExporterConfig,
    OTLPGRPCExporterConfig,
    OTLPHTTPExporterConfig,
    PrometheusExporterConfig,
    TelemetryConfig,
)
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.telemetry.aggregation import MetricStore
from otelprobe.telemetry.batching import SpanBatcher
from otelprobe.telemetry.memory import InMemorySpans
from otelprobe.telemetry.metrics import ProbeMetrics
from otelprobe.telemetry.metrics_otlp import (
    JSONLinesMetricSender,
    MetricEncoder,
    MetricSender,
    PeriodicMetricExporter,
)
from otelprobe.telemetry.otlp_json import JSONLinesWriter, OTLPJSONSpanSender
from otelprobe.telemetry.prometheus import PrometheusServer, PrometheusText
from otelprobe.telemetry.senders import ConsoleSender, OTLPGRPCSender, OTLPHTTPSender, SpanSender
from otelprobe.telemetry.spans import SpanEncoder, any_value
from otelprobe.telemetry.tenant_metrics import TenantSnapshot, observe_tenants

_logger = logging.getLogger(__name__)
_SCOPE = "otelprobe"


def _resource_proto(resource: Resource) -> ResourceProto:
    return ResourceProto(
        attributes=[KeyValue(key=k, value=any_value(v)) for k, v in resource.attributes.items()]  # type: ignore[arg-type]
    )


class Telemetry:
    """otelprobe's span exporters and meter provider; `record` turns results into both.

    Args:
        config: exporters, queue bounds and intervals.
        vantage: the vantage point name (resource and span attribute `otelprobe.vantage`).
        instance_id: `service.instance.id`; a random UUID by default.
        in_memory: also keep every span (`span_exporter`), synchronously, and allow
            `collect_metrics()`, for tests and the one-shot CLI.
    """

    def __init__(
        self,
        config: TelemetryConfig | None = None,
        vantage: str = "local",
        instance_id: str | None = None,
        *,
        in_memory: bool = False,
    ) -> None:
        self.config = config or TelemetryConfig()
        self.vantage = vantage
        self.resource = Resource.create(
            {
                names.SERVICE_NAME: self.config.service_name,
                names.SERVICE_INSTANCE_ID: instance_id or str(uuid.uuid4()),
                names.SERVICE_VERSION: otelprobe.__version__,
                names.OTELPROBE_VANTAGE: vantage,
            }
        )
        self._resource_proto = _resource_proto(self.resource)
        self._scope = InstrumentationScope(name=_SCOPE, version=otelprobe.__version__)
        self._encoder = SpanEncoder(vantage)
        self.metric_store = MetricStore()
        self.metrics = ProbeMetrics(self.metric_store, vantage, self.dropped_by_exporter)
        self.span_batchers: list[SpanBatcher] = []
        self.metric_exporters: list[PeriodicMetricExporter] = []
        self.span_exporter: InMemorySpans | None = None
        self.prometheus_address: tuple[str, int] | None = None
        self._prometheus_server: PrometheusServer | None = None
        if in_memory:
            self.span_exporter = InMemorySpans(self.resource)
        for index, exporter_config in enumerate(self.config.exporters):
            name = f"{exporter_config.type}#{index}"
            sender, metric_sender = self._build(exporter_config)
            if sender is not None:
                self.span_batchers.append(self._batch(sender, exporter_config, name))
            if metric_sender is not None:
                self.metric_exporters.append(
                    PeriodicMetricExporter(
                        self._metric_encoder(),
                        metric_sender,
                        self.config.metric_export_interval_s,
                        getattr(exporter_config, "timeout_s", 10.0),
                        name,
                    )
                )
        self._encodes = bool(self.span_batchers) or self.span_exporter is not None
        self._tenants_observed = False
        self._closed = False

    def _metric_encoder(self) -> MetricEncoder:
        return MetricEncoder(self.metric_store, self._resource_proto, self._scope)

    def _batch(self, sender: SpanSender, cfg: ExporterConfig, name: str) -> SpanBatcher:
        queue = self.config.queue
        return SpanBatcher(
            sender,
            self._resource_proto,
            self._scope,
            max_queue_size=queue.max_queue_size,
            max_export_batch_size=queue.max_export_batch_size,
            schedule_delay_s=queue.schedule_delay_s,
            timeout_s=getattr(cfg, "timeout_s", 10.0),
            name=name,
        )

    def _build(self, cfg: ExporterConfig) -> tuple[SpanSender | None, MetricSender | None]:
        if isinstance(cfg, OTLPGRPCExporterConfig):
            return OTLPGRPCSender(cfg), OTLPGRPCSender(cfg, "metrics")
        if isinstance(cfg, OTLPHTTPExporterConfig):
            return OTLPHTTPSender(cfg), OTLPHTTPSender(cfg, "metrics")
        if isinstance(cfg, FileExporterConfig):
            writer = JSONLinesWriter(cfg.path, cfg.max_size_bytes, cfg.max_backups)
            return OTLPJSONSpanSender(writer), JSONLinesMetricSender(writer)
        if isinstance(cfg, ConsoleExporterConfig):
            return ConsoleSender(), None
        if isinstance(cfg, PrometheusExporterConfig):
            self._start_prometheus(cfg)
            return None, None
        raise AssertionError(f"unhandled exporter config {cfg!r}")

    def _start_prometheus(self, cfg: PrometheusExporterConfig) -> None:
        resource = {
            k: v for k, v in self.resource.attributes.items() if isinstance(v, str | bool | int | float)
        }
        text = PrometheusText(self.metric_store, resource, (_SCOPE, otelprobe.__version__))
        self._prometheus_server = server = PrometheusServer(text, cfg.host, cfg.port)
        self.prometheus_address = server.address
        _logger.info("serving Prometheus metrics on http://%s:%s/metrics", *server.address)

    def set_target_tenants(self, tenants: Mapping[str, str]) -> None:
        """`otelprobe.tenant` on every span and metric of these targets (name -> tenant); {} for none."""
        self._encoder.set_target_tenants(tenants)
        self.metrics.set_target_tenants(tenants)

    def observe_tenants(self, source: Callable[[], Sequence[TenantSnapshot]]) -> None:
        """Export the scheduler's per-tenant counters (telemetry/tenant_metrics.py), once."""
        if not self._tenants_observed:
            self._tenants_observed = True
            observe_tenants(self.metric_store, source)

    def collect_metrics(self) -> ExportMetricsServiceRequest:
        """Every metric series now, as the OTLP exporters would send it (one request)."""
        return self._metric_encoder().collect()

    def dropped_by_exporter(self) -> dict[tuple[str, str], int]:
        """Spans lost so far by (exporter, reason) (`otelprobe.export.dropped`): dropped from a
        full queue, or in a batch whose export failed."""
        lost: dict[tuple[str, str], int] = {}
        for batcher in self.span_batchers:
            lost[batcher.name, "queue_full"] = batcher.dropped
            lost[batcher.name, "export_failed"] = batcher.failed
        return lost

    @property
    def dropped(self) -> int:
        return sum(b.dropped for b in self.span_batchers)

    @property
    def exported(self) -> int:
        """Spans handed to the senders so far, summed over the exporters."""
        return sum(b.exported for b in self.span_batchers)

    def record(self, result: ProbeResult, link: TraceRef | None = None) -> TraceRef:
        """Emit `result` as a trace and as metrics; never blocks on an exporter.

        Args:
            result: one attempt.
            link: the first attempt's root when `result` is a retry.

        Returns:
            The root span's IDs (`result.trace_ref` when set), for the links of later retries.
        """
        if self._encodes:
            ref, spans = self._encoder.encode(result, link)
            for batcher in self.span_batchers:
                batcher.put(spans)
            if self.span_exporter is not None:
                self.span_exporter.add([Span.FromString(span) for span in spans])
        else:
            ref = result.trace_ref or TraceRef.new()
        self.metrics.record(result)
        return ref

    def _flush_sync(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        ok = True
        for batcher in self.span_batchers:
            ok &= batcher.force_flush(max(0.0, deadline - time.monotonic()))
        for exporter in self.metric_exporters:
            ok &= exporter.export(max(0.0, deadline - time.monotonic()))
        return ok

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Export everything queued, off the event loop; False if the timeout was hit."""
        return await asyncio.to_thread(self._flush_sync, timeout_s)

    def shutdown_sync(self, timeout_s: float = 5.0) -> None:
        """Flush and stop every exporter within about `timeout_s` (from a plain thread)."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_s

        def remaining_s() -> float:
            return max(0.0, deadline - time.monotonic())

        # Batchers one by one with the shared deadline.
        for batcher in self.span_batchers:
            batcher.shutdown(remaining_s())
        for exporter in self.metric_exporters:
            exporter.shutdown(remaining_s())
        if self._prometheus_server is not None:
            self._prometheus_server.shutdown()
        if self.dropped:
            _logger.warning("%d spans were dropped by full export queues", self.dropped)

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush and stop every exporter, off the event loop, within about `timeout_s`."""
        await asyncio.to_thread(self.shutdown_sync, timeout_s)
