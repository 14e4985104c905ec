"""HTTP/2 for the HTTP probe: one request on a fresh connection, h2 driven over a `TimedStream`.

probes/http/http1_exchange.py's `exchange` calls `request` after ALPN chose "h2", or at once on
plain http with `http_version: "2"` (prior knowledge, h2c). The general-purpose HTTP/2 client used
before wrote the connection preface, then took its stream semaphore 99 times (one event-loop
yield each) before it wrote HEADERS, so `http.request` measured the loop's load (1.1 ms idle,
24 ms beside ten busy tasks) instead of the wire. Here the preface, SETTINGS,
WINDOW_UPDATEs, HEADERS and as much of the body as the initial windows allow leave in one
write, as an HTTP/1.1 request does; `ExchangeTimer` (backend.py) marks the phases from the bytes.

Failures are ProbeErrors with what happened in the message: a peer whose first bytes are not a
SETTINGS frame does not speak HTTP/2 (RFC 9113 §3.4: `http2_not_supported`), RST_STREAM on the
request is `stream_reset`, GOAWAY that gives the request up is `connection_terminated`, a close
before the response is `server_disconnected` and during it `incomplete_body`, invalid HTTP/2 is
`malformed_response`; a request h2 refuses to send is `local_protocol_error`.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from typing import Final

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import Frame, GoAwayFrame

from otelprobe.errors import ProbeError, ProtocolError, map_exceptions
from otelprobe.probes.http.backend import WriteFailed
from otelprobe.probes.http.messages import ByteStream, Request, Response

_READ_SIZE: Final = 64 * 1024
_WINDOW: Final = 2**24  # large, so that the server need not wait for our WINDOW_UPDATEs
_STREAM: Final = 1  # the one request of the connection
_CONFIG: Final = h2.config.H2Configuration(client_side=True, header_encoding=None)
_SETTINGS: Final = {
    h2.settings.SettingCodes.ENABLE_PUSH: 0,
    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
}
# RFC 9113 §8.2.2: connection-specific fields are not sent; Host becomes :authority.
_NOT_SENT: Final = frozenset(
    {b"host", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_FRAME_HEADER: Final = 9
_SETTINGS_FRAME: Final = 0x4
# What h2 raises where it is not expected to (our calls are checked): invalid HTTP/2 nonetheless.
_H2_ERRORS: Final[Mapping[type[BaseException], tuple[type[ProbeError], str]]] = {
    h2.exceptions.ProtocolError: (ProtocolError, "malformed_response")
}
_STREAM_EVENTS: Final = (
    h2.events.ResponseReceived,
    h2.events.DataReceived,
    h2.events.StreamEnded,
    h2.events.StreamReset,
)


async def request(stream: ByteStream, request: Request, *, prior_knowledge: bool) -> Response:
    """Send `request` as stream 1 of a new HTTP/2 connection; the response's body is still to be read."""
    client = _Client(stream, prior_knowledge=prior_knowledge)
    with map_exceptions(_H2_ERRORS):
        await client.send(request)
        status, headers = await client.response_head()
    return Response(status, headers, "2", client.body())


class _Connection(h2.connection.H2Connection):
    """h2 that keeps receiving after a graceful GOAWAY which still covers our stream.

    RFC 9113 §6.8: streams up to the GOAWAY's last stream id "might still complete", and draining
    servers (Go, Envoy, nginx at its request limit) do complete them; h2 closes its state machine on
    any GOAWAY (python-hyper/h2#1181) and would reject the response that follows.
    """

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[h2.events.Event]]:
        state = self.state_machine.state
        frames, events = super()._receive_goaway_frame(frame)
        if frame.error_code == h2.errors.ErrorCodes.NO_ERROR and frame.last_stream_id >= _STREAM:
            self.state_machine.state = state
        return frames, events


def _request_headers(request: Request) -> list[tuple[bytes, bytes]]:
    url = request.url
    authority = next((v for k, v in request.headers if k.lower() == b"host"), url.host.encode("ascii"))
    headers = [
        (b":method", request.method),
        (b":authority", authority),
        (b":scheme", url.scheme.encode("ascii")),
        (b":path", request.url.target),
    ]
    for name, value in request.headers:
        lowered = name.lower()
        if lowered not in _NOT_SENT and (lowered != b"te" or value.lower() == b"trailers"):
            headers.append((lowered, value))
    return headers


def _code(error_code: int | None) -> str:
    """RST_STREAM / GOAWAY error code by name (h2 leaves unknown codes as ints)."""
    if isinstance(error_code, h2.errors.ErrorCodes):
        return error_code.name
    return f"0x{error_code or 0:x}"


class _Client:
    """The client side of one HTTP/2 connection carrying one request."""

    __slots__ = ("_body", "_ended", "_first", "_goaway", "_h2", "_head", "_pending", "_prior", "_stream")

    def __init__(self, stream: ByteStream, *, prior_knowledge: bool) -> None:
        self._stream = stream
        self._prior = prior_knowledge
        self._h2 = _Connection(_CONFIG)
        self._pending: deque[h2.events.Event] = deque()  # events of stream 1 not yet consumed
        self._body = b""  # request body not yet sent (flow control)
        self._first = b""  # the server's first bytes, until they make a frame header
        self._head = False  # the response head has arrived
        self._ended = False  # the server ended (or reset) stream 1
        self._goaway: h2.events.ConnectionTerminated | None = None

    async def send(self, request: Request) -> None:
        conn = self._h2
        content = request.content
        conn.local_settings = h2.settings.Settings(client=True, initial_values=_SETTINGS)
        # Some servers balk at this setting in the first SETTINGS frame (common clients leave it out).
        del conn.local_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL]
        conn.initiate_connection()
        conn.increment_flow_control_window(_WINDOW)
        try:
            conn.send_headers(_STREAM, _request_headers(request), end_stream=not content)
        except h2.exceptions.ProtocolError as exc:
            raise ProtocolError(
                "local_protocol_error", f"local_protocol_error: cannot send the request over HTTP/2: {exc}"
            ) from exc
        conn.increment_flow_control_window(_WINDOW, stream_id=_STREAM)
        self._body = content or b""
        self._queue_body()
        await self._stream.write(conn.data_to_send())
        while self._body and not self._ended:
            await self._receive()  # a WINDOW_UPDATE or SETTINGS opens the window
            self._queue_body()
            await self._flush()

    def _queue_body(self) -> None:
        """Frame as much of the remaining body as the flow-control windows allow."""
        conn = self._h2
        while self._body and not self._ended:
            size = min(conn.local_flow_control_window(_STREAM), conn.max_outbound_frame_size)
            if size <= 0:
                return
            chunk, self._body = self._body[:size], self._body[size:]
            conn.send_data(_STREAM, chunk, end_stream=not self._body)

    async def response_head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        while True:
            event = await self._next_event()
            if isinstance(event, h2.events.ResponseReceived):
                break
            if isinstance(event, h2.events.StreamReset):
                raise self._reset_error(event)
        self._head = True
        status = b""
        headers: list[tuple[bytes, bytes]] = []
        for name, value in event.headers or ():
            if name == b":status":
                status = bytes(value)
            elif not name.startswith(b":"):
                headers.append((bytes(name), bytes(value)))
        if len(status) != 3 or not status.isdigit():
            raise ProtocolError("malformed_response", f"invalid HTTP/2 response status {status[:16]!r}")
        return int(status), headers

    async def body(self) -> AsyncGenerator[bytes, None]:
        """The body as it arrives, one piece per DATA frame, until END_STREAM."""
        while True:
            event = await self._next_event()
            if isinstance(event, h2.events.DataReceived):
                with map_exceptions(_H2_ERRORS):
                    self._h2.acknowledge_received_data(event.flow_controlled_length or 0, _STREAM)
                await self._flush()
                if event.data:
                    yield event.data
            elif isinstance(event, h2.events.StreamEnded):
                return
            elif isinstance(event, h2.events.StreamReset):
                raise self._reset_error(event)

    async def _next_event(self) -> h2.events.Event:
        while not self._pending:
            await self._receive()
        return self._pending.popleft()

    async def _receive(self) -> None:
        data = await self._stream.read(_READ_SIZE)
        if not data:
            raise self._closed_error()
        if len(self._first) < _FRAME_HEADER:
            self._first += data[: _FRAME_HEADER - len(self._first)]
            self._check_preface()
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            raise ProtocolError("malformed_response", f"invalid HTTP/2 from the server: {exc}") from exc
        for event in events:
            if isinstance(event, _STREAM_EVENTS) and event.stream_id == _STREAM:
                self._pending.append(event)
                self._ended = self._ended or isinstance(event, h2.events.StreamEnded | h2.events.StreamReset)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._terminated(event)
        await self._flush()  # SETTINGS and PING acknowledgements

    async def _flush(self) -> None:
        """Send what h2 has queued (acknowledgements, WINDOW_UPDATE, body) while the stream is open."""
        data = self._h2.data_to_send()
        if data and not self._ended:
            # A failed write is not the answer: the next read says what became of the connection.
            with contextlib.suppress(WriteFailed):
                await self._stream.write(data)

    def _check_preface(self) -> None:
        """The server's first frame must be SETTINGS (RFC 9113 §3.4); anything else is not HTTP/2."""
        first = self._first
        if first.startswith(b"HTTP/"):
            said = "answered in HTTP/1.x"
        elif len(first) < _FRAME_HEADER:
            return  # too short to tell
        elif first[3] == _SETTINGS_FRAME and not first[4] & 0x1 and not int.from_bytes(first[5:9], "big"):
            return
        else:
            said = f"sent {first!r}, not an HTTP/2 SETTINGS frame"
        how = "with prior knowledge (h2c)" if self._prior else "although ALPN chose h2"
        raise ProtocolError("http2_not_supported", f"the server {said}: it does not speak HTTP/2 {how}")

    def _terminated(self, event: h2.events.ConnectionTerminated) -> None:
        """GOAWAY: fatal unless graceful (NO_ERROR) and still covering our stream, or we are done."""
        self._goaway = event
        graceful = event.error_code == h2.errors.ErrorCodes.NO_ERROR
        if not self._ended and (not graceful or (event.last_stream_id or 0) < _STREAM):
            raise self._goaway_error(event)

    def _goaway_error(self, event: h2.events.ConnectionTerminated) -> ProtocolError:
        extra = f": {event.additional_data!r}" if event.additional_data else ""
        return ProtocolError(
            "connection_terminated",
            f"the server closed the HTTP/2 connection (GOAWAY {_code(event.error_code)}, "
            f"last stream {event.last_stream_id}){extra}",
        )

    def _reset_error(self, event: h2.events.StreamReset) -> ProtocolError:
        when = "during the response" if self._head else "before responding"
        return ProtocolError(
            "stream_reset", f"the server reset the stream {when} (RST_STREAM {_code(event.error_code)})"
        )

    def _closed_error(self) -> ProtocolError:
        if self._goaway is not None:
            return self._goaway_error(self._goaway)
        if self._head:
            return ProtocolError(
                "incomplete_body", "incomplete body: the server closed the connection before END_STREAM"
            )
        hint = " (does it speak HTTP/2 with prior knowledge?)" if self._prior and not self._first else ""
        return ProtocolError(
            "server_disconnected", f"the server closed the connection without sending a response{hint}"
        )
