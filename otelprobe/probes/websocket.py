"""The WebSocket probe: a timed upgrade handshake, optional message exchanges and a clean close.

wsproto (sans-IO) runs on a `TimedConnection`, so the upgrade is measured like an HTTP request:
`dns.lookup`, `tcp.connect`, `tls.handshake`, `http.request` (upgrade request written) and
`http.ttfb` (to the first byte of the 101 response). Each configured exchange is one
`websocket.message` phase, from sending to the matching reply.

Failure classes (DESIGN §4): an upgrade answered with another status is `http_status`; a reply
not matching its regex is `assertion_failed` (`message_mismatch`); a close code outside the
expected set is `protocol_error` (`close_code_<code>`), as is a connection that ends without a
close frame or a malformed frame.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from otelprobe import names
from otelprobe.errors import AssertionFailed, HTTPStatusError, ProtocolError
from otelprobe.net.connection import TimedConnection
from otelprobe.net.happy_eyeballs import connect_first
from otelprobe.net.tls.handshake import client_context, handshake_attributes
from otelprobe.probes._attempts import run_with_fallback
from otelprobe.probes.base import Attributes, ProbeContext
from otelprobe.results import ProbeResult
from otelprobe.settings.addresses import parse_url
from otelprobe.settings.common import (
    ProbeConfigBase,
    StrictModel,
    TLSClientConfig,
    check_regex,
    settings_not_switch,
)
from otelprobe.settings.secrets import redact_url
from otelprobe.timing import PhaseClock


class WSExchange(StrictModel):
    """Send a text message and/or wait for the next message, which must match `expect` (regex)."""

    send: str | None = None
    expect: str | None = None

    @model_validator(mode="after")
    def _something(self) -> WSExchange:
        if self.send is None and self.expect is None:
            raise ValueError("a message exchange needs `send`, `expect` or both")
        if self.expect is not None:
            check_regex(self.expect)
        return self


class WebSocketProbeConfig(ProbeConfigBase):
    """A ws:// or wss:// endpoint."""

    kind: Literal["websocket"] = "websocket"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    subprotocols: list[str] = Field(default_factory=list)
    tls: TLSClientConfig = TLSClientConfig()
    messages: list[WSExchange] = Field(default_factory=list)
    expect_close_codes: list[int] = Field(default_factory=lambda: [1000], alias="expect_close_code")
    source_address: str | None = None

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_settings(cls, value: object) -> object:
        return settings_not_switch(value, "the URL scheme (wss://) decides whether this target speaks TLS")

    @field_validator("url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not value.lower().startswith(("ws://", "wss://")):
            raise ValueError(f"expected a ws:// or wss:// URL with a host, got {redact_url(value)!r}")
        try:
            parse_url(value, ("ws", "wss"))
        except ValueError as exc:
            raise ValueError(f"{exc} (in {redact_url(value)!r})") from None
        return value

    @classmethod
    def from_url(cls, url: str, name: str | None = None, **overrides: Any) -> Self:
        return cls.model_validate({"name": name or redact_url(url), "url": url, **overrides})

    def display_address(self) -> str:
        return redact_url(self.url)


class WebSocketProbe:
    """Opens, exercises and closes one WebSocket per attempt."""

    kind: ClassVar[str] = "websocket"

    def __init__(self, config: WebSocketProbeConfig, ctx: ProbeContext) -> None:
        self.config = config
        self._resolver = ctx.resolver_for(config)
        parts = urlsplit(config.url)
        self._secure = parts.scheme == "wss"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._secure else 80)
        self._authority = parts.netloc.rpartition("@")[2]
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._tls_context = client_context(config.tls, alpn=["http/1.1"]) if self._secure else None
        self._patterns = [re.compile(m.expect) if m.expect is not None else None for m in config.messages]

    async def run(self, attempt: int = 1) -> list[ProbeResult]:
        return await run_with_fallback(
            self.config, self.kind, attempt, self._resolver, self._host, self._probe
        )

    async def aclose(self) -> None:
        return None

    async def _probe(self, clock: PhaseClock, attrs: Attributes, addresses: Sequence[str]) -> None:
        attrs.update(
            {
                names.URL_FULL: redact_url(self.config.url),
                names.SERVER_ADDRESS: self._host,
                names.SERVER_PORT: self._port,
                names.USER_AGENT_SYNTHETIC_TYPE: names.SYNTHETIC_TYPE_TEST,
            }
        )
        conn = await connect_first(
            clock, addresses, self._port, source_address=self.config.source_address, attrs=attrs
        )
        try:
            if self._tls_context is not None:
                server_name = self.config.tls.server_name or self._host
                attrs.update(
                    handshake_attributes(await conn.start_tls(self._tls_context.get(), server_name, clock))
                )
            session = _Session(conn, clock)
            await session.upgrade(self._upgrade_request(), attrs)
            for index, (exchange, pattern) in enumerate(
                zip(self.config.messages, self._patterns, strict=True)
            ):
                with clock.phase(names.SPAN_WS_MESSAGE) as phase:
                    phase.attributes[names.PROBE_WS_MESSAGE_INDEX] = index
                    await session.exchange(exchange.send, pattern, index)
            code = await session.close()
            attrs[names.PROBE_WS_CLOSE_CODE] = code
            if code not in self.config.expect_close_codes:
                raise ProtocolError(f"close_code_{code}", f"server closed with code {code}")
        finally:
            conn.close()

    def _upgrade_request(self) -> Request:
        return Request(
            host=self._authority,
            target=self._target,
            subprotocols=list(self.config.subprotocols),
            extra_headers=[
                (b"user-agent", b"otelprobe"),
                *((k.lower().encode(), v.encode()) for k, v in self.config.headers.items()),
            ],
        )


class _Session:
    """A wsproto client connection pumped over a TimedConnection."""

    def __init__(self, conn: TimedConnection, clock: PhaseClock) -> None:
        self._conn = conn
        self._clock = clock
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._events: list[Event] = []
        self._close_code: int | None = None

    async def upgrade(self, request: Request, attrs: Attributes) -> None:
        """Send the upgrade request and read to the 101, as `http.request` then `http.ttfb`."""
        written: list[tuple[int, int]] = []
        first_read: list[int] = []
        self._conn.on_write = lambda first, last: written.append((first, last))
        self._conn.on_read = lambda at: first_read.append(at) if not first_read else None
        data = self._ws.send(request)
        await self._conn.write(data)
        self._conn.on_write = None
        self._clock.record(names.SPAN_HTTP_REQUEST, written[0][0], written[-1][1])
        ttfb = self._clock.start(names.SPAN_HTTP_TTFB, written[-1][1])
        while True:
            event = await self._next_event(opening=True)
            if isinstance(event, AcceptConnection):
                ttfb.end(first_read[0])
                attrs[names.HTTP_RESPONSE_STATUS_CODE] = 101
                if event.subprotocol:
                    attrs[names.PROBE_WS_SUBPROTOCOL] = event.subprotocol
                return
            if isinstance(event, RejectConnection):
                ttfb.end(first_read[0])
                attrs[names.HTTP_RESPONSE_STATUS_CODE] = event.status_code
                raise HTTPStatusError(
                    f"status_{event.status_code}", f"upgrade answered with {event.status_code}, not 101"
                )

    async def exchange(self, send: str | None, pattern: re.Pattern[str] | None, index: int) -> None:
        if send is not None:
            await self._conn.write(self._ws.send(TextMessage(data=send)))
        if pattern is None:
            return
        message = await self._message()
        if pattern.search(message) is None:
            raise AssertionFailed("message_mismatch", f"message {index} does not match {pattern.pattern!r}")

    async def close(self) -> int:
        """Close with 1000 (unless the server already closed) and return the server's close code."""
        if self._close_code is None:
            await self._conn.write(self._ws.send(CloseConnection(code=1000)))
            while self._close_code is None:
                await self._next_event()
        return self._close_code

    async def _message(self) -> str:
        parts: list[str] = []
        while True:
            event = await self._next_event()
            if isinstance(event, TextMessage | BytesMessage):
                data = event.data
                parts.append(data if isinstance(data, str) else data.decode("utf-8", "replace"))
                if event.message_finished:
                    return "".join(parts)
            elif isinstance(event, CloseConnection):
                raise ProtocolError(
                    f"close_code_{event.code}" if event.code != 1000 else "closed_before_message",
                    f"server closed ({event.code} {event.reason or ''}) while a message was expected",
                )

    async def _next_event(self, opening: bool = False) -> Event:
        """The next wsproto event, reading as needed; answers pings and remote closes."""
        while not self._events:
            data = await self._conn.read()
            try:
                self._ws.receive_data(data or None)
                self._events.extend(self._ws.events())
            except (RemoteProtocolError, LocalProtocolError) as exc:
                raise ProtocolError("malformed_frame", f"WebSocket protocol error: {exc}") from exc
            if not data and not self._events:
                detail = "closed_during_upgrade" if opening else "closed_without_close_frame"
                raise ProtocolError(detail, "the server closed the connection without a close frame")
        event = self._events.pop(0)
        if isinstance(event, Ping):
            await self._conn.write(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self._close_code = int(event.code)
            if self._ws.state.name == "REMOTE_CLOSING":
                await self._conn.write(self._ws.send(event.response()))
        return event
