"""The telemetry pipeline: span batchers and a meter provider wired to the configured exporters.

The one place that builds exporters. The scheduler (or the CLI) creates one `Telemetry` and hands
it every `ProbeResult`: `spans.py` turns it into OTLP span messages, which go to one bounded,
drop-counting `SpanBatcher` per exporter (`batching.py`, worker threads, `senders.py`); `metrics.py`
observes it through the OpenTelemetry SDK (metrics aggregate, so they keep the SDK and its
periodic readers). Exporting never blocks probing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GRPCMetricExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HTTPCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HTTPMetricExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceProto
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
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
from otelprobe.telemetry.batching import SpanBatcher
from otelprobe.telemetry.memory import InMemorySpans
from otelprobe.telemetry.metrics import ProbeMetrics
from otelprobe.telemetry.otlp_json import JSONLinesWriter, OTLPJSONMetricExporter, OTLPJSONSpanSender
from otelprobe.telemetry.senders import ConsoleSender, OTLPGRPCSender, OTLPHTTPSender, SpanSender
from otelprobe.telemetry.spans import SpanEncoder, any_value, new_trace_ref

_logger = logging.getLogger(__name__)
_SCOPE = "otelprobe"


def _grpc_metric_exporter(cfg: OTLPGRPCExporterConfig) -> MetricExporter:
    # An explicit http:// endpoint means plaintext, as the OTel exporter's own env rules say.
    insecure = cfg.insecure or cfg.endpoint.startswith("http://")
    credentials = None
    if not insecure:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(cfg.ca_file),
            private_key=_read(cfg.client_key),
            certificate_chain=_read(cfg.client_cert),
        )
    compression = grpc.Compression.Gzip if cfg.compression == "gzip" else grpc.Compression.NoCompression
    return GRPCMetricExporter(
        endpoint=cfg.endpoint,
        insecure=insecure,
        credentials=credentials,
        headers={k.lower(): v.get_secret_value() for k, v in cfg.headers.items()},
        timeout=cfg.timeout_s,
        compression=compression,
    )


def _http_metric_exporter(cfg: OTLPHTTPExporterConfig) -> MetricExporter:
    compression = HTTPCompression.Gzip if cfg.compression == "gzip" else HTTPCompression.NoCompression
    return HTTPMetricExporter(
        endpoint=cfg.signal_url("metrics"),
        certificate_file=cfg.ca_file,
        client_key_file=cfg.client_key,
        client_certificate_file=cfg.client_cert,
        headers={k: v.get_secret_value() for k, v in cfg.headers.items()},
        timeout=cfg.timeout_s,
        compression=compression,
    )


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


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
        in_memory: also keep every span (`span_exporter`) and metric (`metric_reader`) in
            memory, synchronously, for tests and the one-shot CLI.
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
        self.span_batchers: list[SpanBatcher] = []
        self.span_exporter: InMemorySpans | None = None
        self.metric_reader: InMemoryMetricReader | None = None
        self.prometheus_address: tuple[str, int] | None = None
        self._prometheus_server: tuple[Any, threading.Thread] | None = None
        readers: list[MetricReader] = []
        if in_memory:
            self.span_exporter = InMemorySpans(self.resource)
            self.metric_reader = InMemoryMetricReader()
            readers.append(self.metric_reader)
        for index, exporter_config in enumerate(self.config.exporters):
            sender, reader = self._build(exporter_config)
            if sender is not None:
                self.span_batchers.append(
                    self._batch(sender, exporter_config, f"{exporter_config.type}#{index}")
                )
            if reader is not None:
                readers.append(reader)
        self._encodes = bool(self.span_batchers) or self.span_exporter is not None
        self.meter_provider = MeterProvider(
            resource=self.resource, metric_readers=readers, shutdown_on_exit=False
        )
        self.metrics = ProbeMetrics(
            self.meter_provider.get_meter(_SCOPE, otelprobe.__version__), vantage, self.dropped_by_exporter
        )
        self._closed = False

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

    def _periodic(self, exporter: MetricExporter, timeout_s: float) -> PeriodicExportingMetricReader:
        return PeriodicExportingMetricReader(
            exporter,
            export_interval_millis=self.config.metric_export_interval_s * 1000,
            export_timeout_millis=timeout_s * 1000,
        )

    def _build(self, cfg: ExporterConfig) -> tuple[SpanSender | None, MetricReader | None]:
        if isinstance(cfg, OTLPGRPCExporterConfig):
            return OTLPGRPCSender(cfg), self._periodic(_grpc_metric_exporter(cfg), cfg.timeout_s)
        if isinstance(cfg, OTLPHTTPExporterConfig):
            return OTLPHTTPSender(cfg), self._periodic(_http_metric_exporter(cfg), cfg.timeout_s)
        if isinstance(cfg, FileExporterConfig):
            writer = JSONLinesWriter(cfg.path, cfg.max_size_bytes, cfg.max_backups)
            return OTLPJSONSpanSender(writer), self._periodic(OTLPJSONMetricExporter(writer), 10.0)
        if isinstance(cfg, ConsoleExporterConfig):
            return ConsoleSender(), None
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
        return {b.name: b.dropped for b in self.span_batchers}

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
                self.span_exporter.add(spans)
        else:
            ref = result.trace_ref or new_trace_ref()
        self.metrics.record(result)
        return ref

    def _flush_sync(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        ok = True
        for batcher in self.span_batchers:
            ok &= batcher.force_flush(max(0.0, deadline - time.monotonic()))
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

        def remaining_s() -> float:
            return max(0.0, deadline - time.monotonic())

        # Batchers one by one with the shared deadline.
        for batcher in self.span_batchers:
            batcher.shutdown(remaining_s())
        try:
            self.meter_provider.shutdown(remaining_s() * 1000)
        except Exception:
            # A metric exporter that times out at shutdown must not stop the rest of the teardown.
            _logger.warning("metric export did not finish at shutdown", exc_info=True)
        if self._prometheus_server is not None:
            server, thread = self._prometheus_server
            server.shutdown()
            server.server_close()
            thread.join(1.0)
        if self.dropped:
            _logger.warning("%d spans were dropped by full export queues", self.dropped)

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush and stop every exporter, off the event loop, within about `timeout_s`."""
        await asyncio.to_thread(self.shutdown_sync, timeout_s)
