"""The gRPC probe: one grpc.health.v1.Health/Check call over HTTP/2, with socket-exact phases.

grpcio reports no socket-level timing, so this client speaks the one unary call itself: `h2` on
a `TimedConnection` gives `dns.lookup`, `tcp.connect`, `tls.handshake` (ALPN h2), then `rpc.call`
from the connection preface and request to the response trailers.

Failure classes (DESIGN §4): a non-OK `grpc-status` is `protocol_error` with detail
`grpc_<code>` (e.g. `grpc_unimplemented`, `grpc_not_found` for a service the health server does
not know); an OK call whose serving status is not SERVING is `assertion_failed` with detail
`not_serving` / `service_unknown` / `serving_status_unknown`, because the server answered
correctly and said it is unhealthy; a malformed HTTP/2 or gRPC response is `protocol_error`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, Literal, Self
from urllib.parse import unquote, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2
from pydantic import Field, field_validator

from otelprobe import names
from otelprobe.errors import AssertionFailed, ProtocolError
from otelprobe.net.connection import TimedConnection
from otelprobe.net.dns.resolver import split_host_port
from otelprobe.net.happy_eyeballs import connect_first
from otelprobe.net.tls.handshake import client_context, handshake_attributes
from otelprobe.probes._attempts import run_with_fallback
from otelprobe.probes.base import Attributes, ProbeContext
from otelprobe.results import ProbeResult
from otelprobe.settings.addresses import check_host_port
from otelprobe.settings.common import ProbeConfigBase, TLSClientConfig, asks_for_tls, optional_tls
from otelprobe.settings.secrets import redact_url
from otelprobe.timing import PhaseClock

HEALTH_SERVICE: Final = "grpc.health.v1.Health"
HEALTH_METHOD: Final = "Check"
# https://grpc.github.io/grpc/core/md_doc_statuscodes.html
GRPC_STATUS_NAMES: Final = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
_SERVING_DETAILS: Final = {"NOT_SERVING": "not_serving", "SERVICE_UNKNOWN": "service_unknown"}


class GRPCProbeConfig(ProbeConfigBase):
    """A gRPC server checked with the standard health-checking protocol."""

    kind: Literal["grpc"] = "grpc"
    address: str = Field(min_length=1, description="host:port of the server")
    service: str = Field("", description="service name to check; empty = the whole server")
    tls: TLSClientConfig | None = Field(
        None, description="TLS settings; present = TLS ({} = the defaults), absent = plaintext (h2c)"
    )
    metadata: dict[str, str] = Field(default_factory=dict, description="request metadata (headers)")
    authority: str | None = Field(None, description=":authority; default the address")
    source_address: str | None = None

    _tls_present = field_validator("tls", mode="before")(optional_tls)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        check_host_port(value)
        return value

    @classmethod
    def takes_default(cls, key: str, target: Mapping[str, Any]) -> bool:
        # defaults.tls configures the TLS a target speaks; it never turns h2c into TLS.
        return key != "tls" or asks_for_tls(target)

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key or key != key.lower() or key.startswith((":", "grpc-")):
                raise ValueError(f"invalid metadata key {key!r}: lowercase, not reserved (':', 'grpc-')")
        return value

    @classmethod
    def from_url(cls, url: str, name: str | None = None, **overrides: Any) -> Self:
        """`grpc://host:port/service` (plaintext) or `grpcs://host:port/service` (TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("grpc", "grpcs") or not parts.hostname:
            raise ValueError(f"expected grpc://host:port/service or grpcs://..., got {url!r}")
        secure = parts.scheme == "grpcs"
        fields: dict[str, Any] = {
            "name": name or redact_url(url),
            "address": parts.netloc if parts.port else f"{parts.netloc}:{443 if secure else 80}",
            "service": parts.path.strip("/"),
        }
        if secure:
            fields["tls"] = {}
        return cls.model_validate({**fields, **overrides})

    def display_address(self) -> str:
        scheme = "grpcs" if self.tls is not None else "grpc"
        return f"{scheme}://{self.address}/{self.service}"


class GRPCProbe:
    """Calls grpc.health.v1.Health/Check once per attempt."""

    kind: ClassVar[str] = "grpc"

    def __init__(self, config: GRPCProbeConfig, ctx: ProbeContext) -> None:
        self.config = config
        self._resolver = ctx.resolver_for(config)
        self._host, self._port = split_host_port(
            config.address, default_port=443 if config.tls is not None else 80
        )
        self._tls_context = client_context(config.tls, alpn=["h2"]) if config.tls is not None else None

    async def run(self, attempt: int = 1) -> list[ProbeResult]:
        return await run_with_fallback(
            self.config, self.kind, attempt, self._resolver, self._host, self._probe
        )

    async def aclose(self) -> None:
        return None

    async def _probe(self, clock: PhaseClock, attrs: Attributes, addresses: Sequence[str]) -> None:
        attrs.update(
            {
                names.SERVER_ADDRESS: self._host,
                names.SERVER_PORT: self._port,
                names.RPC_SYSTEM: "grpc",
                names.RPC_SERVICE: HEALTH_SERVICE,
                names.RPC_METHOD: HEALTH_METHOD,
            }
        )
        conn = await connect_first(
            clock, addresses, self._port, source_address=self.config.source_address, attrs=attrs
        )
        try:
            if self._tls_context is not None:
                assert self.config.tls is not None
                server_name = self.config.tls.server_name or self._host
                ssl_object = await conn.start_tls(self._tls_context.get(), server_name, clock)
                attrs.update(handshake_attributes(ssl_object))
                if ssl_object.selected_alpn_protocol() != "h2":
                    raise ProtocolError(
                        "alpn_h2_not_negotiated", "the server did not agree to HTTP/2 (ALPN h2)"
                    )
            with clock.phase(names.SPAN_RPC_CALL) as phase:
                phase.attributes.update(
                    {
                        names.RPC_SYSTEM: "grpc",
                        names.RPC_SERVICE: HEALTH_SERVICE,
                        names.RPC_METHOD: HEALTH_METHOD,
                    }
                )
                call = _HealthCall(conn, self._request_headers(), encode_request(self.config.service))
                status_code, message, body = await call.run()
                phase.attributes[names.RPC_GRPC_STATUS_CODE] = status_code
            attrs[names.RPC_GRPC_STATUS_CODE] = status_code
            _check(status_code, message, body, attrs)
        finally:
            conn.close()

    def _request_headers(self) -> list[tuple[str, str]]:
        scheme = "https" if self.config.tls is not None else "http"
        return [
            (":method", "POST"),
            (":scheme", scheme),
            (":path", f"/{HEALTH_SERVICE}/{HEALTH_METHOD}"),
            (":authority", self.config.authority or self.config.address),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", "otelprobe-grpc-health"),
            # Let the server give up when we do.
            ("grpc-timeout", f"{max(1, int(self.config.timeout_s * 1000))}m"),
            *self.config.metadata.items(),
        ]


class _HealthCall:
    """One unary call on a fresh HTTP/2 connection, driven over a TimedConnection."""

    def __init__(self, conn: TimedConnection, headers: list[tuple[str, str]], request: bytes) -> None:
        self._conn = conn
        self._headers = headers
        self._request = request
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )

    async def run(self) -> tuple[int, str, bytes]:
        """Send the request; return (grpc-status, grpc-message, response message bytes)."""
        self._h2.initiate_connection()
        stream_id = self._h2.get_next_available_stream_id()
        self._h2.send_headers(stream_id, self._headers)
        self._h2.send_data(stream_id, self._request, end_stream=True)
        # Preface, SETTINGS, HEADERS and DATA leave in one write: no round trip before the request.
        await self._conn.write(self._h2.data_to_send())
        try:
            return await self._read(stream_id)
        finally:
            with contextlib.suppress(OSError, h2.exceptions.H2Error):
                self._h2.close_connection()
                await self._conn.write(self._h2.data_to_send())

    async def _read(self, stream_id: int) -> tuple[int, str, bytes]:
        headers: dict[str, str] = {}
        body = bytearray()
        while True:
            data = await self._conn.read()
            if not data:
                raise ProtocolError(
                    "connection_closed", "the server closed the connection before the trailers"
                )
            try:
                events = self._h2.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                raise ProtocolError("http2_protocol_error", f"HTTP/2 protocol error: {exc}") from exc
            ended = False
            for event in events:
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    headers.update(_decoded(event.headers or []))
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data or b""
                    self._h2.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    raise ProtocolError(
                        "stream_reset", f"the server reset the stream (error {event.error_code})"
                    )
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise ProtocolError("goaway", f"the server sent GOAWAY (error {event.error_code})")
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            pending = self._h2.data_to_send()
            if pending:
                await self._conn.write(pending)
            if ended:
                return _status(headers, bytes(body))


def _decoded(raw: Any) -> list[tuple[str, str]]:
    return [
        (k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v) for k, v in raw
    ]


def _status(headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    http_status = headers.get(":status", "")
    if http_status != "200":
        raise ProtocolError(f"http_{http_status or 'no_status'}", f"HTTP status {http_status} (expected 200)")
    if not headers.get("content-type", "").startswith("application/grpc"):
        raise ProtocolError(
            "not_grpc", f"content-type {headers.get('content-type')!r} is not application/grpc"
        )
    raw_status = headers.get("grpc-status")
    if raw_status is None or not raw_status.isdigit():
        raise ProtocolError("missing_grpc_status", "the response ended without a grpc-status trailer")
    return int(raw_status), unquote(headers.get("grpc-message", "")), body


def encode_request(service: str) -> bytes:
    """A length-prefixed (uncompressed) HealthCheckRequest message."""
    message: bytes = health_pb2.HealthCheckRequest(service=service).SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message


def decode_response(body: bytes) -> str:
    """The serving status name of a length-prefixed HealthCheckResponse."""
    if len(body) < 5:
        raise ProtocolError("malformed_message", f"response message of {len(body)} bytes")
    if body[0] != 0:
        raise ProtocolError("compressed_message", "compressed response, though none was offered")
    length = int.from_bytes(body[1:5], "big")
    if len(body) < 5 + length:
        raise ProtocolError("malformed_message", "response message shorter than its length prefix")
    try:
        response = health_pb2.HealthCheckResponse.FromString(body[5 : 5 + length])
    except DecodeError as exc:
        raise ProtocolError("malformed_message", f"undecodable HealthCheckResponse: {exc}") from exc
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def _check(status_code: int, message: str, body: bytes, attrs: Attributes) -> None:
    if status_code != 0:
        name = GRPC_STATUS_NAMES[status_code] if status_code < len(GRPC_STATUS_NAMES) else str(status_code)
        if message:
            attrs[names.PROBE_GRPC_MESSAGE] = message
        raise ProtocolError(f"grpc_{name.lower()}", f"grpc-status {status_code} {name}: {message}")
    serving = decode_response(body)
    attrs[names.PROBE_GRPC_SERVING_STATUS] = serving
    if serving != "SERVING":
        raise AssertionFailed(
            _SERVING_DETAILS.get(serving, "serving_status_unknown"), f"serving status {serving}"
        )
