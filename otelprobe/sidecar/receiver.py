"""An OTLP receiver (HTTP on aiohttp, gRPC on grpc.aio) that decodes requests and hands them on.

The sidecar's input (DESIGN §2) and the loopback Collector stand-in of the telemetry tests, in the
shape of OTel's `_otlp_test_server.py`. It only decodes and validates: each ExportTraceService-
Request goes to a callback or a bounded asyncio queue (requests beyond it are rejected through
OTLP partial success, or — `when_full="retry"`, the sidecar's choice — answered with a retryable
status and a back-off hint: HTTP 503 with Retry-After, gRPC UNAVAILABLE with RetryInfo) and
counted, so memory stays bounded whatever the senders do. Spans whose IDs have the wrong size are
dropped and the rest accepted, the answer saying how many through OTLP partial success (a request
with no good span at all is bad data: HTTP 400, gRPC INVALID_ARGUMENT). Bodies over the cap are
refused (HTTP 413, gRPC RESOURCE_EXHAUSTED) and counted. Optional bearer-token auth (HTTP 401,
gRPC UNAUTHENTICATED) and TLS, with client certificates required when a client CA is given. Probe
semantics are not read here: queued requests become ProbeRecords through attribution/records.py
(`wait_for_records`, `drain_records`); a sidecar's `on_traces` feeds its own TraceAssembler.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, NoReturn, TypeVar

import grpc
from aiohttp import web
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.message import Message

# googleapis-common-protos ships no type stubs.
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otelprobe.attribution.otlp_decode import ReceivedSpan as ReceivedSpan  # re-exported for tests
from otelprobe.attribution.otlp_decode import attributes_dict as attributes_dict
from otelprobe.attribution.otlp_decode import iter_received, views_from_request
from otelprobe.attribution.records import RECORD_KEYS, ProbeRecord, ReaderStats, TraceAssembler
from otelprobe.sidecar.otlp_bodies import (
    SPAN_IDS_FIELD,
    WBITS,
    BodyTooLarge,
    MalformedRequest,
    bad_request_status,
    decode_json,
    decode_protobuf,
    drop_invalid_ids,
    inflate,
    invalid_ids_message,
    trace_response,
)
from otelprobe.sidecar.receiver_tls import ReceiverTLS as ReceiverTLS  # re-exported: the config's type
from otelprobe.telemetry.otlp_json import message_to_json

iter_spans = iter_received
"""Every span of a request as protobuf with its resource (transport-level inspection; probe
semantics are read by attribution/records.py)."""

_logger = logging.getLogger(__name__)
_M = TypeVar("_M", bound=Message)

CONTENT_PROTOBUF: Final = "application/x-protobuf"
CONTENT_JSON: Final = "application/json"
DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024  # the Collector's default max_recv_msg_size
GRPC_CORE_LIMIT_FACTOR: Final = 2
"""gRPC core refuses (RESOURCE_EXHAUSTED) messages over this many times the cap, after
decompression, before any handler runs, so those go uncounted; between the cap and that, the
handler refuses them itself and counts them, as HTTP does with every body over the cap."""
QUEUE_FULL_MESSAGE: Final = "receiver queue full"
_TRACE_SERVICE: Final = "opentelemetry.proto.collector.trace.v1.TraceService"
_METRICS_SERVICE: Final = "opentelemetry.proto.collector.metrics.v1.MetricsService"
_LOGS_SERVICE: Final = "opentelemetry.proto.collector.logs.v1.LogsService"
# Where gRPC clients look for the back-off hint: the rich status (gRPC's error model) and the
# key the OpenTelemetry Python exporter reads.
_GRPC_STATUS_DETAILS: Final = "grpc-status-details-bin"
_GRPC_RETRY_INFO: Final = "google.rpc.retryinfo-bin"

TracesCallback = Callable[[ExportTraceServiceRequest], None]
MetricsCallback = Callable[[ExportMetricsServiceRequest], None]
LogsCallback = Callable[[ExportLogsServiceRequest], None]
WhenFull = Literal["reject", "retry"]


class Overloaded(Exception):
    """The queue is full and the sender should retry later (HTTP 503, gRPC UNAVAILABLE)."""


@dataclass
class ReceiverStats:
    """Counters a test or the sidecar's own telemetry can read."""

    trace_requests: int = 0
    metric_requests: int = 0
    spans: int = 0
    log_requests: int = 0
    dropped_requests: int = 0
    """Requests whose spans were all rejected because the queue was full (when_full="reject")."""
    dropped_spans: int = 0
    """Their spans (reported to the sender through partial success)."""
    invalid_spans: int = 0
    """Spans dropped for IDs of the wrong size (partial success, or 400 when no span was good)."""
    retry_answers: int = 0
    """Requests answered "retry later" because the queue was full (when_full="retry")."""
    unauthenticated: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    """Requests refused whole, by reason: "malformed" (HTTP 400, gRPC INVALID_ARGUMENT),
    "too_large" (HTTP 413, gRPC RESOURCE_EXHAUSTED)."""


class OTLPReceiver:
    """OTLP/HTTP and OTLP/gRPC on loopback (port 0 = any free port), decoding into requests.

    Args:
        host: listen address; loopback unless configured.
        http_port: OTLP/HTTP port (0 = any, None = no HTTP listener).
        grpc_port: OTLP/gRPC port (0 = any, None = no gRPC listener).
        on_traces: called with each decoded trace request; without it requests are queued.
        on_metrics: called with each decoded metrics request; without it they are ignored.
        on_logs: called with each decoded logs request; without it they are ignored.
        max_queue: bound of the trace request queue (used when there is no on_traces).
        max_body_bytes: cap on a request body, after decompression.
        when_full: a full queue rejects the spans through partial success ("reject": the sender
            must not retry) or answers a retryable status with a back-off hint ("retry").
        retry_after_s: the back-off hint.
        bearer_token: when set, requests must carry `Authorization: Bearer <token>`.
        tls: serve TLS (and require client certificates when it names a client CA).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        http_port: int | None = 0,
        grpc_port: int | None = 0,
        on_traces: TracesCallback | None = None,
        on_metrics: MetricsCallback | None = None,
        on_logs: LogsCallback | None = None,
        max_queue: int = 1024,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        when_full: WhenFull = "reject",
        retry_after_s: float = 1.0,
        bearer_token: str | None = None,
        tls: ReceiverTLS | None = None,
    ) -> None:
        self.host = host
        self._http_port = http_port
        self._grpc_port = grpc_port
        self._on_traces = on_traces
        self._on_metrics = on_metrics
        self._on_logs = on_logs
        self.max_body_bytes = max_body_bytes
        self.when_full = when_full
        self.retry_after_s = retry_after_s
        self._expected_auth = f"Bearer {bearer_token}".encode() if bearer_token else None
        self.tls = tls
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
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    async def start(self) -> None:
        if self._http_port is not None:
            # client_max_size makes aiohttp answer 413 itself for bodies over the cap.
            app = web.Application(client_max_size=self.max_body_bytes)
            app.router.add_post("/v1/traces", self._http_traces)
            app.router.add_post("/v1/metrics", self._http_metrics)
            app.router.add_post("/v1/logs", self._http_logs)
            self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
            await self._runner.setup()
            ssl_context = self.tls.ssl_context() if self.tls else None
            site = web.TCPSite(self._runner, self.host, self._http_port, ssl_context=ssl_context)
            await site.start()
            self.http_port = int(self._runner.addresses[0][1])
        if self._grpc_port is not None:
            # gRPC core holds and inflates a message before any handler sees it; its own limit
            # stays a bounded step above ours, so that most oversize messages reach the handler
            # and are counted (see GRPC_CORE_LIMIT_FACTOR).
            core_limit = min(GRPC_CORE_LIMIT_FACTOR * self.max_body_bytes, 2**31 - 1)
            server = grpc.aio.server(options=[("grpc.max_receive_message_length", core_limit)])
            # Raw-bytes handlers, so that undecodable input is INVALID_ARGUMENT (not INTERNAL).
            server.add_generic_rpc_handlers(
                (
                    grpc.method_handlers_generic_handler(
                        _TRACE_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self._grpc_traces)}
                    ),
                    grpc.method_handlers_generic_handler(
                        _METRICS_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self._grpc_metrics)}
                    ),
                    grpc.method_handlers_generic_handler(
                        _LOGS_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self._grpc_logs)}
                    ),
                )
            )
            address = f"{self.host}:{self._grpc_port}"
            if self.tls:
                self.grpc_port = server.add_secure_port(address, self.tls.grpc_credentials())
            else:
                self.grpc_port = server.add_insecure_port(address)
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

    def _deliver_traces(self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
        """Hand the request on; the answer reports the spans rejected (invalid IDs, full queue).

        Raises:
            MalformedRequest: the request has spans and none has valid IDs.
            Overloaded: the queue is full and when_full="retry".
        """
        total, invalid, first_bad = drop_invalid_ids(request)
        message = ""
        if invalid:
            self.stats.invalid_spans += invalid
            message = invalid_ids_message(invalid, total, first_bad)
            if invalid == total:  # nothing accepted: bad data, not a partial success
                raise MalformedRequest(message, SPAN_IDS_FIELD)
            _logger.debug("partial success: %s", message)
        count = total - invalid
        self.stats.trace_requests += 1
        if self._on_traces is not None:
            self._on_traces(request)
        else:
            try:
                self.queue.put_nowait(request)
            except asyncio.QueueFull:
                if self.when_full == "retry":
                    self.stats.retry_answers += 1
                    self.stats.trace_requests -= 1  # it will come again
                    self.stats.invalid_spans -= invalid  # and so will they
                    raise Overloaded from None
                self.stats.dropped_requests += 1
                self.stats.dropped_spans += count
                return trace_response(total, "; ".join(filter(None, (QUEUE_FULL_MESSAGE, message))))
        self.stats.spans += count
        return trace_response(invalid, message)

    def _deliver_metrics(self, request: ExportMetricsServiceRequest) -> None:
        self.stats.metric_requests += 1
        if self._on_metrics is not None:
            self._on_metrics(request)

    def _deliver_logs(self, request: ExportLogsServiceRequest) -> None:
        self.stats.log_requests += 1
        if self._on_logs is not None:
            self._on_logs(request)

    def _authorized(self, presented: str | bytes | None) -> bool:
        if self._expected_auth is None:
            return True
        given = presented.encode() if isinstance(presented, str) else presented or b""
        if hmac.compare_digest(given, self._expected_auth):
            return True
        self.stats.unauthenticated += 1
        return False

    def _retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))  # whole seconds (RFC 9110)

    def _rejected(self, reason: str) -> None:
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1

    # --- OTLP/HTTP ------------------------------------------------------------------------------

    async def _http_body(self, request: web.Request) -> tuple[bytes, str]:
        content_type = request.content_type
        if content_type not in (CONTENT_PROTOBUF, CONTENT_JSON):
            raise web.HTTPUnsupportedMediaType(text=f"unsupported content type {content_type!r}")
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding not in WBITS:
            raise MalformedRequest(f"unsupported Content-Encoding {encoding!r}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise BodyTooLarge(f"body exceeds {self.max_body_bytes} bytes") from exc
        wbits = WBITS[encoding]
        if wbits is not None:
            body = inflate(body, wbits, self.max_body_bytes)
        return body, content_type

    @staticmethod
    def _respond(message: Message, content_type: str, status: int = 200) -> web.Response:
        if content_type == CONTENT_JSON:
            return web.Response(status=status, text=message_to_json(message), content_type=CONTENT_JSON)
        return web.Response(status=status, body=message.SerializeToString(), content_type=CONTENT_PROTOBUF)

    def _error(self, exc: ValueError, content_type: str) -> web.Response:
        too_large = isinstance(exc, BodyTooLarge)
        self._rejected("too_large" if too_large else "malformed")
        _logger.debug("rejected OTLP request: %s", exc)
        if isinstance(exc, MalformedRequest):
            body = bad_request_status(exc)
        else:
            body = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=str(exc))
        reply_type = content_type if content_type == CONTENT_JSON else CONTENT_PROTOBUF
        return self._respond(body, reply_type, status=413 if too_large else 400)

    def _http_denied(self, request: web.Request) -> web.Response | None:
        if self._authorized(request.headers.get("Authorization")):
            return None
        body = status_pb2.Status(code=code_pb2.UNAUTHENTICATED, message="missing or wrong bearer token")
        reply_type = CONTENT_JSON if request.content_type == CONTENT_JSON else CONTENT_PROTOBUF
        response = self._respond(body, reply_type, status=401)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    async def _http_traces(self, request: web.Request) -> web.Response:
        content_type = request.content_type
        denied = self._http_denied(request)
        if denied is not None:
            return denied
        try:
            body, content_type = await self._http_body(request)
            decode = decode_json if content_type == CONTENT_JSON else decode_protobuf
            answer = self._deliver_traces(decode(body, ExportTraceServiceRequest()))
        except (MalformedRequest, BodyTooLarge) as exc:
            return self._error(exc, content_type)
        except Overloaded:
            message = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="receiver queue full; retry later")
            reply_type = content_type if content_type == CONTENT_JSON else CONTENT_PROTOBUF
            response = self._respond(message, reply_type, status=503)
            response.headers["Retry-After"] = self._retry_after_header()
            return response
        return self._respond(answer, content_type)

    async def _http_metrics(self, request: web.Request) -> web.Response:
        return await self._http_export(
            request, ExportMetricsServiceRequest, self._deliver_metrics, ExportMetricsServiceResponse
        )

    async def _http_logs(self, request: web.Request) -> web.Response:
        return await self._http_export(
            request, ExportLogsServiceRequest, self._deliver_logs, ExportLogsServiceResponse
        )

    async def _http_export(
        self,
        request: web.Request,
        request_type: Callable[[], _M],
        deliver: Callable[[_M], object],
        response_type: Callable[[], Message],
    ) -> web.Response:
        """One OTLP/HTTP export whose answer is an empty response (metrics, logs)."""
        content_type = request.content_type
        denied = self._http_denied(request)
        if denied is not None:
            return denied
        try:
            body, content_type = await self._http_body(request)
            decode = decode_json if content_type == CONTENT_JSON else decode_protobuf
            deliver(decode(body, request_type()))
        except (MalformedRequest, BodyTooLarge) as exc:
            return self._error(exc, content_type)
        return self._respond(response_type(), content_type)

    # --- OTLP/gRPC ------------------------------------------------------------------------------

    async def _grpc_check_auth(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        if self._expected_auth is None:
            return
        metadata = dict(context.invocation_metadata() or ())
        if not self._authorized(metadata.get("authorization")):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    def _retry_metadata(self) -> tuple[tuple[str, bytes], ...]:
        delay = error_details_pb2.RetryInfo()
        delay.retry_delay.FromNanoseconds(round(self.retry_after_s * 1e9))
        detail = AnyMessage()
        detail.Pack(delay)
        status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="receiver queue full; retry later")
        status.details.append(detail)
        return (
            (_GRPC_RETRY_INFO, delay.SerializeToString()),
            (_GRPC_STATUS_DETAILS, status.SerializeToString()),
        )

    @staticmethod
    async def _grpc_abort_bad_request(
        exc: MalformedRequest, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> NoReturn:
        """INVALID_ARGUMENT with the rich status (its BadRequest detail) where gRPC clients read it."""
        status = bad_request_status(exc)
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            str(exc),
            trailing_metadata=((_GRPC_STATUS_DETAILS, status.SerializeToString()),),
        )

    async def _grpc_decode(
        self, body: bytes, message: _M, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> _M:
        """The request, after auth; too large or undecodable ones end the call, counted."""
        await self._grpc_check_auth(context)
        if len(body) > self.max_body_bytes:
            # gRPC core let it through (under GRPC_CORE_LIMIT_FACTOR times the cap, inflated).
            self._rejected("too_large")
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"message exceeds {self.max_body_bytes} bytes"
            )
        try:
            return decode_protobuf(body, message)
        except MalformedRequest as exc:
            self._rejected("malformed")
            await self._grpc_abort_bad_request(exc, context)

    async def _grpc_traces(self, body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        request = await self._grpc_decode(body, ExportTraceServiceRequest(), context)
        try:
            answer = self._deliver_traces(request)
        except MalformedRequest as exc:
            self._rejected("malformed")
            await self._grpc_abort_bad_request(exc, context)
        except Overloaded:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "receiver queue full; retry later",
                trailing_metadata=self._retry_metadata(),
            )
        return answer.SerializeToString()

    async def _grpc_logs(self, body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self._deliver_logs(await self._grpc_decode(body, ExportLogsServiceRequest(), context))
        return ExportLogsServiceResponse().SerializeToString()

    async def _grpc_metrics(self, body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self._deliver_metrics(await self._grpc_decode(body, ExportMetricsServiceRequest(), context))
        return ExportMetricsServiceResponse().SerializeToString()

    # --- test helpers ---------------------------------------------------------------------------

    def _take(self, request: ExportTraceServiceRequest) -> None:
        self._collected.extend(iter_spans(request))
        self._records.extend(self._assembler.add(views_from_request(request, RECORD_KEYS)))

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
