"""OTLP senders: one Export*ServiceRequest out over OTLP/HTTP, OTLP/gRPC or to the console.

The last step of the span path and of the metric path: `batching.SpanBatcher`'s worker thread and
`metrics_otlp.PeriodicMetricExporter` hand the OTLP/HTTP and gRPC senders requests they wrote as
wire bytes themselves (`send_serialized`); other senders (console, and the file senders that live
with the OTLP JSON format) get the decoded request (`send`). A sender retries what the OTLP spec
calls retryable with exponential backoff, all within the timeout it is given, and gives up at
once after `shutdown`. A server's own back-off hint (HTTP Retry-After on 429/503, gRPC RetryInfo)
replaces the computed pause, as the spec asks, still within the timeout. Batches it gives up on
are logged a few lines per outage, not one each (`export_failures.ExportFailureLog`).
"""

from __future__ import annotations

import email.utils
import gzip
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal, Protocol

import grpc
import urllib3
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import otelprobe
from otelprobe.config.telemetry import OTLPGRPCExporterConfig, OTLPHTTPExporterConfig
from otelprobe.telemetry.export_failures import SUMMARY_INTERVAL_S, ExportFailureLog
from otelprobe.telemetry.otlp_json import message_to_json

# OTLP/HTTP: "429, 502, 503, 504 are retryable"; every other non-2xx is permanent.
RETRYABLE_HTTP_STATUS: Final = frozenset({429, 502, 503, 504})
# OTLP/gRPC: the codes the spec lists as retryable. RESOURCE_EXHAUSTED only with a RetryInfo: "the
# client SHOULD interpret RESOURCE_EXHAUSTED as retryable only if the server signals that recovery
# is possible" (a busy Collector does; a message over a receiver's size limit never recovers).
RETRYABLE_GRPC_CODES: Final = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_FIRST_BACKOFF_S: Final = 0.1
_MAX_BACKOFF_S: Final = 5.0
_MAX_HINT_S: Final = 60.0
"""A server's back-off hint longer than this is taken as this (a bad hint must not park a sender)."""
# gRPC's default reconnect back-off grows to 120 s: after a 15 s Collector outage the channel
# stayed down ~10 s past the Collector's return and the batches of that gap were lost (issue 10's
# e2e outage test). At most 1 s between reconnect tries costs one SYN a second while it is down.
_GRPC_CHANNEL_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
_GRPC_STATUS_DETAILS: Final = "grpc-status-details-bin"
# Level 1: on a loopback or LAN hop the CPU is worth more than the last few percent of ratio
# (OTLP span batches compress about 4x at level 1 and barely better at 9).
_GZIP_LEVEL: Final = 1
Signal = Literal["traces", "metrics"]
_GRPC_METHODS: Final = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}


class SpanSender(Protocol):
    """Sends one batch; called from one worker thread at a time."""

    def send(self, request: ExportTraceServiceRequest, timeout_s: float) -> bool:
        """Deliver `request` within `timeout_s` (retries included); False if it was not accepted."""
        ...

    def shutdown(self) -> None:
        """Stop retrying; later sends fail at once."""
        ...


Failure = tuple[bool, str] | tuple[bool, str, float | None]
"""How one try failed: (retryable per the OTLP spec, what went wrong[, the server's back-off hint
in seconds])."""


class _Retrier:
    """The backoff loop the network senders share: exponential, jittered, cut at the deadline."""

    def __init__(self, transport: str, destination: str, signal: Signal, summary_interval_s: float) -> None:
        self.stop = threading.Event()
        self.failures = ExportFailureLog(
            f"{transport} {destination}",
            signal,
            "spans" if signal == "traces" else "points",
            summary_interval_s=summary_interval_s,
        )

    def deliver(self, try_once: Callable[[float], Failure | None], timeout_s: float, items: int = 0) -> bool:
        """Call `try_once(remaining_s)` until it succeeds (returns None), fails for good, or time is up.

        `items` (spans) were in the batch: the failure log counts them if it is given up on.
        """
        deadline = time.monotonic() + timeout_s
        attempt = 0
        problem = f"no time left to send (timeout {timeout_s:g}s)"
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            failure = try_once(remaining)
            if failure is None:
                self.failures.succeeded()
                return True
            retryable, problem = failure[0], failure[1]
            hint = failure[2] if len(failure) > 2 else None
            if not retryable:
                self.failures.failed(f"rejected ({problem})", items)
                return False
            if not self.pause(attempt, deadline, hint):
                break
            attempt += 1
        if not self.stop.is_set():  # a batch cut short by shutdown is the shutdown's to report
            self.failures.failed(problem, items)
        return False

    def pause(self, attempt: int, deadline: float, hint_s: float | None = None) -> bool:
        """Wait before retry number `attempt` (or as long as the server asked); False if the
        deadline or a shutdown comes first."""
        if hint_s is not None:
            delay = min(hint_s, _MAX_HINT_S)
        else:
            delay = min(_MAX_BACKOFF_S, _FIRST_BACKOFF_S * 2**attempt) * random.uniform(0.5, 1.0)
        remaining = deadline - time.monotonic()
        if delay >= remaining:
            return False
        return not self.stop.wait(delay)


def _span_count(request: ExportTraceServiceRequest) -> int:
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)


def retry_after_s(value: str | None) -> float | None:
    """An HTTP Retry-After value in seconds (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def grpc_retry_info_s(error: grpc.RpcError) -> float | None:
    """The RetryInfo delay a gRPC server attached to its status (google.rpc.Status details)."""
    trailing: tuple[tuple[str, str | bytes], ...] = (
        tuple(error.trailing_metadata() or ()) if isinstance(error, grpc.Call) else ()
    )
    for key, value in trailing:
        if key != _GRPC_STATUS_DETAILS or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except Exception:  # a malformed detail is no hint
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return float(info.retry_delay.ToNanoseconds()) / 1e9
    return None


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


class OTLPHTTPSender:
    """OTLP/HTTP with protobuf bodies (POST <endpoint>/v1/<signal>), gzip per config, TLS per config."""

    def __init__(
        self,
        cfg: OTLPHTTPExporterConfig,
        signal: Signal = "traces",
        *,
        failure_summary_interval_s: float = SUMMARY_INTERVAL_S,
    ) -> None:
        self.url = cfg.signal_url(signal)
        self._gzip = cfg.compression == "gzip"
        self._headers = {
            "Content-Type": "application/x-protobuf",
            "User-Agent": f"otelprobe/{otelprobe.__version__}",
            **{k: v.get_secret_value() for k, v in cfg.headers.items()},
        }
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        # One connection, kept alive: the worker sends one batch at a time.
        self._pool = urllib3.PoolManager(
            num_pools=1,
            maxsize=1,
            ca_certs=cfg.ca_file,
            cert_file=cfg.client_cert,
            key_file=cfg.client_key,
        )
        self._retrier = _Retrier("OTLP/HTTP", self.url, signal, failure_summary_interval_s)

    def send(self, request: ExportTraceServiceRequest, timeout_s: float) -> bool:
        return self.send_serialized(request.SerializeToString(), timeout_s, _span_count(request))

    def send_serialized(self, body: bytes, timeout_s: float, items: int = 0) -> bool:
        """POST one request of this sender's signal (`items` spans), retrying as the spec allows."""
        if self._gzip:
            body = gzip.compress(body, compresslevel=_GZIP_LEVEL)

        def post(remaining_s: float) -> Failure | None:
            try:
                response = self._pool.request(
                    "POST",
                    self.url,
                    body=body,
                    headers=self._headers,
                    timeout=urllib3.Timeout(total=remaining_s),
                    retries=False,
                )
            except urllib3.exceptions.HTTPError as exc:
                return True, f"{type(exc).__name__}: {exc}"
            if 200 <= response.status < 300:
                return None
            hint = (
                retry_after_s(response.headers.get("Retry-After")) if response.status in (429, 503) else None
            )
            return response.status in RETRYABLE_HTTP_STATUS, f"HTTP {response.status}", hint

        return self._retrier.deliver(post, timeout_s, items)

    def shutdown(self) -> None:
        self._retrier.stop.set()
        self._retrier.failures.close()
        self._pool.clear()


def _grpc_channel(cfg: OTLPGRPCExporterConfig) -> grpc.Channel:
    endpoint = cfg.endpoint
    # An explicit http:// endpoint means plaintext, as the OTel exporter's own env rules say.
    insecure = cfg.insecure or endpoint.startswith("http://")
    target = endpoint.split("://", 1)[1] if "://" in endpoint else endpoint
    compression = grpc.Compression.Gzip if cfg.compression == "gzip" else grpc.Compression.NoCompression
    if insecure:
        return grpc.insecure_channel(target, options=_GRPC_CHANNEL_OPTIONS, compression=compression)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(cfg.ca_file),
        private_key=_read(cfg.client_key),
        certificate_chain=_read(cfg.client_cert),
    )
    return grpc.secure_channel(target, credentials, options=_GRPC_CHANNEL_OPTIONS, compression=compression)


class OTLPGRPCSender:
    """OTLP/gRPC: {Trace,Metrics}Service/Export on one channel, TLS or plaintext and gzip per config."""

    def __init__(
        self,
        cfg: OTLPGRPCExporterConfig,
        signal: Signal = "traces",
        *,
        failure_summary_interval_s: float = SUMMARY_INTERVAL_S,
    ) -> None:
        self.endpoint = cfg.endpoint
        self._channel = _grpc_channel(cfg)
        # No serializers: requests go out as the bytes they already are, replies are not parsed.
        self._export = self._channel.unary_unary(_GRPC_METHODS[signal], None, None)
        self._metadata = tuple((k.lower(), v.get_secret_value()) for k, v in cfg.headers.items())
        self._retrier = _Retrier("OTLP/gRPC", self.endpoint, signal, failure_summary_interval_s)

    def send(self, request: ExportTraceServiceRequest, timeout_s: float) -> bool:
        return self.send_serialized(request.SerializeToString(), timeout_s, _span_count(request))

    def send_serialized(self, body: bytes, timeout_s: float, items: int = 0) -> bool:
        """Export one request of this sender's signal (`items` spans), retrying as the spec allows."""

        def export(remaining_s: float) -> Failure | None:
            try:
                self._export(body, timeout=remaining_s, metadata=self._metadata)
            except grpc.RpcError as exc:
                code, hint = exc.code(), grpc_retry_info_s(exc)
                exhausted_for_good = code == grpc.StatusCode.RESOURCE_EXHAUSTED and hint is None
                return code in RETRYABLE_GRPC_CODES and not exhausted_for_good, str(code), hint
            return None

        return self._retrier.deliver(export, timeout_s, items)

    def shutdown(self) -> None:
        self._retrier.stop.set()
        self._retrier.failures.close()
        self._channel.close()


class ConsoleSender:
    """Each batch as one OTLP/JSON line on stdout (debugging; the same format as the file)."""

    def send(self, request: ExportTraceServiceRequest, timeout_s: float) -> bool:
        sys.stdout.write(message_to_json(request) + "\n")
        sys.stdout.flush()
        return True

    def shutdown(self) -> None:
        return None
