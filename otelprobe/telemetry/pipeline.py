"""The telemetry pipeline: tracer and meter providers wired to the configured exporters.

The only place that builds SDK providers. The scheduler (or the CLI) creates one `Telemetry`
and hands it every `ProbeResult`; `spans.py` and `metrics.py` do the conversion. Exporting never
blocks probing: spans go through bounded, drop-counting queues (`batching.py`), metrics through
periodic readers on their own threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from pathlib import Path

import grpc
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GRPCMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HTTPCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HTTPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, start_http_server

import otelprobe
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
from otelprobe.telemetry import names
from otelprobe.telemetry.batching import CountingBatchSpanProcessor
from otelprobe.telemetry.metrics import ProbeMetrics
from otelprobe.telemetry.otlp_json import JSONLinesWriter, OTLPJSONMetricExporter, OTLPJSONSpanExporter
from otelprobe.telemetry.spans import ProbeIdGenerator, emit_result_spans

_logger = logging.getLogger(__name__)
_SCOPE = "otelprobe"


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _grpc_exporters(cfg: OTLPGRPCExporterConfig) -> tuple[SpanExporter, MetricExporter]:
    # An explicit http:// endpoint means plaintext, as the OTel exporter's own env rules say.
    insecure = cfg.insecure or cfg.endpoint.startswith("http://")
    credentials = None
    if not insecure:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(cfg.ca_file),
            private_key=_read(cfg.client_key),
            certificate_chain=_read(cfg.client_cert),
        )
    headers = {k.lower(): v.get_secret_value() for k, v in cfg.headers.items()}
    compression = grpc.Compression.Gzip if cfg.compression == "gzip" else grpc.Compression.NoCompression
    common = {
        "endpoint": cfg.endpoint,
        "insecure": insecure,
        "credentials": credentials,
        "headers": headers,
        "timeout": cfg.timeout_s,
        "compression": compression,
    }
    return GRPCSpanExporter(**common), GRPCMetricExporter(**common)  # type: ignore[arg-type]


def _http_exporters(cfg: OTLPHTTPExporterConfig) -> tuple[SpanExporter, MetricExporter]:
    headers = {k: v.get_secret_value() for k, v in cfg.headers.items()}
    compression = HTTPCompression.Gzip if cfg.compression == "gzip" else HTTPCompression.NoCompression
    spans = HTTPSpanExporter(
        endpoint=cfg.signal_url("traces"),
        certificate_file=cfg.ca_file,
        client_key_file=cfg.client_key,
        client_certificate_file=cfg.client_cert,
        headers=headers,
        timeout=cfg.timeout_s,
        compression=compression,
    )
    metrics = HTTPMetricExporter(
        endpoint=cfg.signal_url("metrics"),
        certificate_file=cfg.ca_file,
        client_key_file=cfg.client_key,
        client_certificate_file=cfg.client_cert,
        headers=headers,
        timeout=cfg.timeout_s,
        compression=compression,
    )
    return spans, metrics


class Telemetry:
    """Tracer and meter providers with otelprobe's exporters; `record` turns results into both.

    Args:
        config: exporters, queue bounds and intervals.
        vantage: the vantage point name (resource and span attribute `otelprobe.vantage`).
        instance_id: `service.instance.id`; a random UUID by default.
        in_memory: also keep every span and metric in memory (`span_exporter`, `metric_reader`),
            synchronously, for tests and the one-shot CLI.
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
        self.tracer_provider = TracerProvider(
            resource=self.resource, id_generator=ProbeIdGenerator(), shutdown_on_exit=False
        )
        self.batch_processors: list[CountingBatchSpanProcessor] = []
        self.span_exporter: InMemorySpanExporter | None = None
        self.metric_reader: InMemoryMetricReader | None = None
        self.prometheus_address: tuple[str, int] | None = None
        self._prometheus_server: tuple[object, threading.Thread] | None = None
        readers: list[MetricReader] = []
        processors: list[SpanProcessor] = []
        if in_memory:
            self.span_exporter = InMemorySpanExporter()
            self.metric_reader = InMemoryMetricReader()
            processors.append(SimpleSpanProcessor(self.span_exporter))
            readers.append(self.metric_reader)
        for index, exporter_config in enumerate(self.config.exporters):
            span_exporter, reader = self._build(exporter_config)
            if span_exporter is not None:
                processors.append(self._batch(span_exporter, f"{exporter_config.type}#{index}"))
            if reader is not None:
                readers.append(reader)
        for processor in processors:
            self.tracer_provider.add_span_processor(processor)
        self.meter_provider = MeterProvider(
            resource=self.resource, metric_readers=readers, shutdown_on_exit=False
        )
        self.tracer = self.tracer_provider.get_tracer(_SCOPE, otelprobe.__version__)
        self.metrics = ProbeMetrics(
            self.meter_provider.get_meter(_SCOPE, otelprobe.__version__), vantage, self.dropped_by_exporter
        )
        self._closed = False

    def _batch(self, exporter: SpanExporter, name: str) -> CountingBatchSpanProcessor:
        queue = self.config.queue
        processor = CountingBatchSpanProcessor(
            exporter,
            max_queue_size=queue.max_queue_size,
            max_export_batch_size=queue.max_export_batch_size,
            schedule_delay_s=queue.schedule_delay_s,
            name=name,
        )
        self.batch_processors.append(processor)
        return processor

    def _periodic(self, exporter: MetricExporter, timeout_s: float) -> PeriodicExportingMetricReader:
        return PeriodicExportingMetricReader(
            exporter,
            export_interval_millis=self.config.metric_export_interval_s * 1000,
            export_timeout_millis=timeout_s * 1000,
        )

    def _build(self, cfg: ExporterConfig) -> tuple[SpanExporter | None, MetricReader | None]:
        if isinstance(cfg, OTLPGRPCExporterConfig):
            spans, metrics = _grpc_exporters(cfg)
            return spans, self._periodic(metrics, cfg.timeout_s)
        if isinstance(cfg, OTLPHTTPExporterConfig):
            spans, metrics = _http_exporters(cfg)
            return spans, self._periodic(metrics, cfg.timeout_s)
        if isinstance(cfg, FileExporterConfig):
            writer = JSONLinesWriter(cfg.path, cfg.max_size_bytes, cfg.max_backups)
            return OTLPJSONSpanExporter(writer), self._periodic(OTLPJSONMetricExporter(writer), 10.0)
        if isinstance(cfg, ConsoleExporterConfig):
            return ConsoleSpanExporter(service_name=self.config.service_name), None
        if isinstance(cfg, PrometheusExporterConfig):
            return None, self._start_prometheus(cfg)
        raise AssertionError(f"unhandled exporter config {cfg!r}")

    def _start_prometheus(self, cfg: PrometheusExporterConfig) -> MetricReader:
        # Our own registry, so that two Telemetry objects in one process never collide.
        registry = CollectorRegistry(auto_describe=True)
        reader = PrometheusMetricReader(registry=registry)
        server, thread = start_http_server(cfg.port, addr=cfg.host, registry=registry)
        self._prometheus_server = (server, thread)
        host, port = server.server_address[:2]
        self.prometheus_address = (str(host), int(port))
        _logger.info("serving Prometheus metrics on http://%s:%s/metrics", host, port)
        return reader

    def dropped_by_exporter(self) -> dict[str, int]:
        """Spans dropped so far per exporter (`otelprobe.export.dropped`)."""
        return {p.name: p.dropped for p in self.batch_processors}

    @property
    def dropped(self) -> int:
        return sum(p.dropped for p in self.batch_processors)

    def record(self, result: ProbeResult, link: TraceRef | None = None) -> TraceRef:
        """Emit `result` as a trace and as metrics; never blocks on an exporter.

        Args:
            result: one attempt.
            link: the first attempt's root when `result` is a retry.

        Returns:
            The root span's IDs, for the links of later retries.
        """
        ref = emit_result_spans(self.tracer, result, self.vantage, link)
        self.metrics.record(result)
        return ref

    def _flush_sync(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        ok = True
        for processor in self.batch_processors:
            ok &= processor.force_flush(int(max(0.0, deadline - time.monotonic()) * 1000))
        remaining_ms = max(0.0, deadline - time.monotonic()) * 1000
        ok &= self.meter_provider.force_flush(remaining_ms)
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

        def remaining_ms() -> int:
            return int(max(0.0, deadline - time.monotonic()) * 1000)

        # Processors one by one with the shared deadline: TracerProvider.shutdown passes none.
        for processor in self.batch_processors:
            processor.shutdown(remaining_ms())
        self.tracer_provider.shutdown()
        try:
            self.meter_provider.shutdown(remaining_ms())
        except Exception:
            # A metric exporter that times out at shutdown must not stop the rest of the teardown.
            _logger.warning("metric export did not finish at shutdown", exc_info=True)
        if self._prometheus_server is not None:
            server, thread = self._prometheus_server
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
            thread.join(1.0)
        if self.dropped:
            _logger.warning("%d spans were dropped by full export queues", self.dropped)

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush and stop every exporter, off the event loop, within about `timeout_s`."""
        await asyncio.to_thread(self.shutdown_sync, timeout_s)
