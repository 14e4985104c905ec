"""Config of otelprobe's own telemetry: the service name, the exporters and the export queue.

Part of the top-level `Config` (config/models.py); `telemetry/pipeline.py` builds the tracer and
meter providers from it. With no exporter configured nothing leaves the process except what the
CLI adds (e.g. `--otlp` or the in-memory mode of `otelprobe probe`).
"""

from __future__ import annotations

from typing import Annotated, Literal, Protocol, TypeVar

from pydantic import Field, SecretStr, field_validator, model_validator

from otelprobe.settings.common import StrictModel
from otelprobe.settings.durations import Duration, Size
from otelprobe.settings.secrets import register_secret

Compression = Literal["gzip", "none"]


def _register_header_secrets(headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
    # Header values are usually API keys: make sure `redact` hides them wherever they might leak.
    for value in headers.values():
        register_secret(value.get_secret_value())
    return headers


class _ClientCertified(Protocol):
    client_cert: str | None
    client_key: str | None


_Exporter = TypeVar("_Exporter", bound=_ClientCertified)


def _check_client_pair(config: _Exporter) -> _Exporter:
    # A client key without its certificate (or the reverse) cannot authenticate: reject it at load.
    if bool(config.client_key) != bool(config.client_cert):
        raise ValueError("client_cert and client_key must be given together")
    return config


class OTLPGRPCExporterConfig(StrictModel):
    """OTLP over gRPC, the Collector's port 4317."""

    type: Literal["otlp_grpc"]
    endpoint: str = Field("localhost:4317", description="host:port, or http(s)://host:port")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="gRPC metadata; secrets")
    insecure: bool = Field(False, description="plaintext gRPC; TLS (verified) otherwise")
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    compression: Compression = "gzip"
    timeout_s: Duration = Field(10.0, alias="timeout", gt=0)

    _secrets = field_validator("headers")(_register_header_secrets)
    _client_pair = model_validator(mode="after")(_check_client_pair)


class OTLPHTTPExporterConfig(StrictModel):
    """OTLP over HTTP (protobuf), the Collector's port 4318."""

    type: Literal["otlp_http"]
    endpoint: str | None = Field(
        None, description="base URL; /v1/traces and /v1/metrics are appended (default localhost:4318)"
    )
    traces_endpoint: str | None = Field(None, description="full URL for traces; overrides endpoint")
    metrics_endpoint: str | None = Field(None, description="full URL for metrics; overrides endpoint")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="HTTP headers; secrets")
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    compression: Compression = "gzip"
    timeout_s: Duration = Field(10.0, alias="timeout", gt=0)

    _secrets = field_validator("headers")(_register_header_secrets)
    _client_pair = model_validator(mode="after")(_check_client_pair)

    def signal_url(self, signal: Literal["traces", "metrics"]) -> str:
        """The URL this exporter posts `signal` to."""
        explicit = self.traces_endpoint if signal == "traces" else self.metrics_endpoint
        if explicit:
            return explicit
        base = (self.endpoint or "http://localhost:4318").rstrip("/")
        return f"{base}/v1/{signal}"


class FileExporterConfig(StrictModel):
    """OTLP JSON lines, the Collector file exporter's format; rotated at a size cap."""

    type: Literal["file"]
    path: str = Field(min_length=1, description="traces file; one ExportTraceServiceRequest per line")
    max_size_bytes: Size = Field(64 * 1024**2, alias="max_size", gt=0, description="rotate beyond this")
    max_backups: int = Field(3, ge=0, le=100, description="rotated files kept (path.1 .. path.N)")


class ConsoleExporterConfig(StrictModel):
    """Spans on stdout, one OTLP/JSON line per batch (debugging; the file format)."""

    type: Literal["console"]


class PrometheusExporterConfig(StrictModel):
    """A Prometheus /metrics endpoint for the probe metrics."""

    type: Literal["prometheus"]
    host: str = Field("127.0.0.1", description="listen address; loopback unless configured")
    port: int = Field(9464, ge=0, le=65535, description="0 picks a free port")


ExporterConfig = Annotated[
    OTLPGRPCExporterConfig
    | OTLPHTTPExporterConfig
    | FileExporterConfig
    | ConsoleExporterConfig
    | PrometheusExporterConfig,
    Field(discriminator="type"),
]


class QueueConfig(StrictModel):
    """The bounded span queue between probing and exporting: when full, spans are dropped (counted)."""

    max_queue_size: int = Field(2048, ge=1)
    max_export_batch_size: int = Field(512, ge=1)
    schedule_delay_s: Duration = Field(5.0, alias="schedule_delay", gt=0)

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> QueueConfig:
        if self.max_export_batch_size > self.max_queue_size:
            raise ValueError(
                f"max_export_batch_size ({self.max_export_batch_size}) exceeds "
                f"max_queue_size ({self.max_queue_size})"
            )
        return self


class TelemetryConfig(StrictModel):
    """Where otelprobe's spans and metrics go."""

    service_name: str = Field("otelprobe", min_length=1)
    exporters: list[ExporterConfig] = Field(default_factory=list)
    queue: QueueConfig = QueueConfig()
    metric_export_interval_s: Duration = Field(60.0, alias="metric_export_interval", gt=0)

    @model_validator(mode="after")
    def _one_prometheus(self) -> TelemetryConfig:
        if sum(isinstance(e, PrometheusExporterConfig) for e in self.exporters) > 1:
            raise ValueError("at most one prometheus exporter")
        return self
