"""An OTLP receiver (HTTP on aiohttp, gRPC on grpc.aio) that decodes requests and hands them on.

The sidecar's input (DESIGN §2) and the loopback Collector stand-in of the telemetry tests, in the
shape of OTel's `_otlp_test_server.py`. It only decodes and validates: each ExportTraceService-
Request goes to a callback or a bounded asyncio queue (requests beyond it are rejected through
OTLP partial success and counted), so memory stays bounded whatever the senders do. Probe
semantics are not read here: queued requests become ProbeRecords through attribution/records.py
(`wait_for_records`, `drain_records`); a sidecar's `on_traces` feeds its own TraceAssembler.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError, Message

# googleapis-common-protos ships no type stubs.
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otelprobe.attribution.otlp_decode import ReceivedSpan as ReceivedSpan  # re-exported for tests
from otelprobe.attribution.otlp_decode import attributes_dict as attributes_dict
from otelprobe.attribution.otlp_decode import iter_received, views_from_request
from otelprobe.attribution.records import ProbeRecord, ReaderStats, TraceAssembler
from otelprobe.telemetry.otlp_json import json_to_message, message_to_json

iter_spans = iter_received
"""Every span of a request as protobuf with its resource (transport-level inspection; probe
semantics are read by attribution/records.py)."""

_logger = logging.getLogger(__name__)

CONTENT_PROTOBUF: Final = "application/x-protobuf"
CONTENT_JSON: Final = "application/json"
DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024  # the Collector's default max_recv_msg_size
_TRACE_SERVICE: Final = "opentelemetry.proto.collector.trace.v1.TraceService"
_METRICS_SERVICE: Final = "opentelemetry.proto.collector.metrics.v1.MetricsService"
_M = TypeVar("_M", bound=Message)
# Content-Encoding -> zlib wbits. The runner turns aiohttp's own inflating off: inflating here
# caps the inflated size (a small gzip bomb) and answers a broken stream with a clean 400.
_WBITS: Final[dict[str, int | None]] = {"identity": None, "": None, "gzip": 16 + zlib.MAX_WBITS, "deflate": 0}

TracesCallback = Callable[[ExportTraceServiceRequest], None]
MetricsCallback = Callable[[ExportMetricsServiceRequest], None]


class MalformedRequest(ValueError):
    """The body is not a valid OTLP request (HTTP 400, gRPC INVALID_ARGUMENT)."""


class BodyTooLarge(ValueError):
    """The (decompressed) body exceeds the size cap (HTTP 413, gRPC RESOURCE_EXHAUSTED)."""


def _validate_ids(request: ExportTraceServiceRequest) -> None:
    # Protobuf parsing is lenient; the sidecar keys everything on IDs, so check their sizes here.
    for received in iter_spans(request):
        span = received.span
        if len(span.trace_id) != 16 or len(span.span_id) != 8:
            raise MalformedRequest(f"span {span.name!r}: trace_id must be 16 bytes and span_id 8 bytes")
        if span.parent_span_id and len(span.parent_span_id) != 8:
            raise MalformedRequest(f"span {span.name!r}: parent_span_id must be 8 bytes")


def _inflate(body: bytes, wbits: int, max_bytes: int) -> bytes:
    # wbits 0 takes the zlib header's window size (HTTP "deflate" is zlib-wrapped).
    decompressor = zlib.decompressobj(wbits=wbits or zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise MalformedRequest(f"invalid compressed body: {exc}") from exc
    if len(data) > max_bytes or decompressor.unconsumed_tail:
        raise BodyTooLarge(f"decompressed body exceeds {max_bytes} bytes")
    return data


def decode_protobuf(body: bytes, message: _M) -> _M:
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise MalformedRequest(f"invalid protobuf: {exc}") from exc
    return message


def decode_json(body: bytes, message: _M) -> _M:
    try:
        return json_to_message(body.decode("utf-8"), message)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRequest(f"invalid OTLP JSON: {exc}") from exc


@dataclass
class ReceiverStats:
    """Counters a test or the sidecar's own telemetry can read."""

    trace_requests: int = 0
    metric_requests: int = 0
    spans: int = 0
    dropped_requests: int = 0
    dropped_spans: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class OTLPReceiver:
    """OTLP/HTTP and OTLP/gRPC on loopback (port 0 = any free port), decoding into requests.

    Args:
        host: listen address; loopback unless configured.
        http_port: OTLP/HTTP port (0 = any, None = no HTTP listener).
        grpc_port: OTLP/gRPC port (0 = any, None = no gRPC listener).
        on_traces: called with each decoded trace request; without it requests are queued.
        on_metrics: called with each decoded metrics request; without it they are ignored.
        max_queue: bound of the trace request queue (used when there is no on_traces).
        max_body_bytes: cap on a request body, after decompression.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        http_port: int | None = 0,
        grpc_port: int | None = 0,
        on_traces: TracesCallback | None = None,
        on_metrics: MetricsCallback | None = None,
        max_queue: int = 1024,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.host = host
        self._http_port = http_port
        self._grpc_port = grpc_port
        self._on_traces = on_traces
        self._on_metrics = on_metrics
        self.max_body_bytes = max_body_bytes
        self.queue: asyncio.Queue[ExportTraceServiceRequest] = asyncio.Queue(max_queue)
        self.stats = ReceiverStats()
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._grpc_server: grpc.aio.Server | None = None
        self._collected: list[ReceivedSpan] = []
        # Records of the queued requests, read by the one reader (attribution/records.py).
        self.record_stats = ReaderStats()
        self._assembler = TraceAssembler(self.record_stats)
        self._records: list[ProbeRecord] = []

    @property
    def http_endpoint(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    async def start(self) -> None:
        if self._http_port is not None:
            # client_max_size makes aiohttp answer 413 itself for bodies over the cap.
            app = web.Application(client_max_size=self.max_body_bytes)
            app.router.add_post("/v1/traces", self._http_traces)
            app.router.add_post("/v1/metrics", self._http_metrics)
            self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self._http_port)
            await site.start()
            self.http_port = int(self._runner.addresses[0][1])
        if self._grpc_port is not None:
            server = grpc.aio.server(
                options=[("grpc.max_receive_message_length", self.max_body_bytes)],
            )
            # Raw-bytes handlers, so that undecodable input is INVALID_ARGUMENT (not INTERNAL).
            server.add_generic_rpc_handlers(
                (
                    grpc.method_handlers_generic_handler(
                        _TRACE_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self._grpc_traces)}
                    ),
                    grpc.method_handlers_generic_handler(
                        _METRICS_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self._grpc_metrics)}
                    ),
                )
            )
            self.grpc_port = server.add_insecure_port(f"{self.host}:{self._grpc_port}")
            await server.start()
            self._grpc_server = server
        _logger.info("OTLP receiver on http=%s grpc=%s", self.http_port, self.grpc_port)

    async def stop(self, grace_s: float = 1.0) -> None:
        if self._grpc_server is not None:
            await self._grpc_server.stop(grace_s)
            self._grpc_server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OTLPReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- delivery -------------------------------------------------------------------------------

    def _deliver_traces(self, request: ExportTraceServiceRequest) -> int:
        """Hand the request on; returns the number of spans rejected because the queue is full."""
        _validate_ids(request)
        count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        self.stats.trace_requests += 1
        if self._on_traces is not None:
            self._on_traces(request)
        else:
            try:
                self.queue.put_nowait(request)
            except asyncio.QueueFull:
                self.stats.dropped_requests += 1
                self.stats.dropped_spans += count
                return count
        self.stats.spans += count
        return 0

    def _deliver_metrics(self, request: ExportMetricsServiceRequest) -> None:
        self.stats.metric_requests += 1
        if self._on_metrics is not None:
            self._on_metrics(request)

    def _rejected(self, reason: str) -> None:
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1

    # --- OTLP/HTTP ------------------------------------------------------------------------------

    async def _http_body(self, request: web.Request) -> tuple[bytes, str]:
        content_type = request.content_type
        if content_type not in (CONTENT_PROTOBUF, CONTENT_JSON):
            raise web.HTTPUnsupportedMediaType(text=f"unsupported content type {content_type!r}")
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding not in _WBITS:
            raise MalformedRequest(f"unsupported Content-Encoding {encoding!r}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise BodyTooLarge(f"body exceeds {self.max_body_bytes} bytes") from exc
        wbits = _WBITS[encoding]
        if wbits is not None:
            body = _inflate(body, wbits, self.max_body_bytes)
        return body, content_type

    @staticmethod
    def _respond(message: Message, content_type: str, status: int = 200) -> web.Response:
        if content_type == CONTENT_JSON:
            return web.Response(status=status, text=message_to_json(message), content_type=CONTENT_JSON)
        return web.Response(status=status, body=message.SerializeToString(), content_type=CONTENT_PROTOBUF)

    def _error(self, exc: ValueError, content_type: str) -> web.Response:
        too_large = isinstance(exc, BodyTooLarge)
        self._rejected("too_large" if too_large else "malformed")
        code = code_pb2.RESOURCE_EXHAUSTED if too_large else code_pb2.INVALID_ARGUMENT
        _logger.debug("rejected OTLP request: %s", exc)
        body = status_pb2.Status(code=code, message=str(exc))
        reply_type = content_type if content_type == CONTENT_JSON else CONTENT_PROTOBUF
        return self._respond(body, reply_type, status=413 if too_large else 400)

    async def _http_traces(self, request: web.Request) -> web.Response:
        content_type = request.content_type
        try:
            body, content_type = await self._http_body(request)
            decode = decode_json if content_type == CONTENT_JSON else decode_protobuf
            rejected = self._deliver_traces(decode(body, ExportTraceServiceRequest()))
        except (MalformedRequest, BodyTooLarge) as exc:
            return self._error(exc, content_type)
        return self._respond(self._trace_response(rejected), content_type)

    async def _http_metrics(self, request: web.Request) -> web.Response:
        content_type = request.content_type
        try:
            body, content_type = await self._http_body(request)
            decode = decode_json if content_type == CONTENT_JSON else decode_protobuf
            self._deliver_metrics(decode(body, ExportMetricsServiceRequest()))
        except (MalformedRequest, BodyTooLarge) as exc:
            return self._error(exc, content_type)
        return self._respond(ExportMetricsServiceResponse(), content_type)

    @staticmethod
    def _trace_response(rejected: int) -> ExportTraceServiceResponse:
        if not rejected:
            return ExportTraceServiceResponse()
        # Partial success: the sender must not retry, and the loss is visible on its side too.
        return ExportTraceServiceResponse(
            partial_success=ExportTracePartialSuccess(
                rejected_spans=rejected, error_message="receiver queue full"
            )
        )

    # --- OTLP/gRPC ------------------------------------------------------------------------------

    async def _grpc_traces(self, body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            rejected = self._deliver_traces(decode_protobuf(body, ExportTraceServiceRequest()))
        except MalformedRequest as exc:
            self._rejected("malformed")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return self._trace_response(rejected).SerializeToString()

    async def _grpc_metrics(self, body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            self._deliver_metrics(decode_protobuf(body, ExportMetricsServiceRequest()))
        except MalformedRequest as exc:
            self._rejected("malformed")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return ExportMetricsServiceResponse().SerializeToString()

    # --- test helpers ---------------------------------------------------------------------------

    def _take(self, request: ExportTraceServiceRequest) -> None:
        self._collected.extend(iter_spans(request))
        self._records.extend(self._assembler.add(views_from_request(request)))

    async def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Every span received so far, once there are at least `count` (queue mode only).

        Raises:
            TimeoutError: fewer than `count` spans arrived within `timeout` seconds.
        """
        async with asyncio.timeout(timeout):
            while len(self._collected) < count:
                self._take(await self.queue.get())
        return list(self._collected)

    async def wait_for_span(self, name: str, timeout: float = 10.0) -> ReceivedSpan:
        """The first span called `name` (queue mode only)."""
        async with asyncio.timeout(timeout):
            while True:
                found = next((s for s in self._collected if s.name == name), None)
                if found is not None:
                    return found
                self._take(await self.queue.get())

    async def wait_for_records(self, count: int, timeout: float = 10.0) -> list[ProbeRecord]:
        """Every probe record received so far, once there are at least `count` (queue mode only).

        Raises:
            TimeoutError: fewer than `count` whole probe traces arrived within `timeout` seconds.
        """
        async with asyncio.timeout(timeout):
            while len(self._records) < count:
                self._take(await self.queue.get())
        return list(self._records)

    def drain_records(self) -> list[ProbeRecord]:
        """Every probe record received so far, without waiting (queue mode only)."""
        while not self.queue.empty():
            self._take(self.queue.get_nowait())
        return list(self._records)
