"""One request on a fresh timed connection: HTTP/1.1 spoken directly with h11, HTTP/2 via httpcore.

probes/http/probe.py calls `exchange` once per hop. It connects and runs TLS through
`backend.TimedBackend` / `TimedStream` (so `ExchangeTimer` marks the phases as before), then
frames HTTP/1.1 itself with h11 — httpcore's per-connection objects and anyio locks cost CPU and
event-loop round trips that a one-request connection does not need — and hands HTTP/2 (ALPN
"h2", or prior knowledge) to httpcore's `AsyncHTTP2Connection` over the same stream. h11's errors
are raised as httpcore's, so `backend.HTTPCORE_ERRORS` and `remote_protocol_error` serve both.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Final

import h11
import httpcore

from otelprobe.probes.http.backend import TimedBackend

_READ_SIZE: Final = 64 * 1024
_MAX_INCOMPLETE_EVENT_SIZE: Final = 100 * 1024  # httpcore's bound on a response head


async def exchange(
    backend: TimedBackend,
    request: httpcore.Request,
    content: bytes | None,
    ssl_context: ssl.SSLContext | None,
    *,
    http1: bool,
) -> tuple[httpcore.Response, httpcore.AsyncHTTP2Connection | None]:
    """Connect, handshake and send `request`; the response's body is still to be read.

    Returns the HTTP/2 connection too when one carries the response (the caller closes it);
    `http1=False` means HTTP/2 only (prior knowledge on plain http).
    """
    origin = request.url.origin
    host = origin.host.decode("ascii")
    stream = await backend.connect_tcp(host, origin.port)
    if ssl_context is not None:
        sni = request.extensions.get("sni_hostname")
        stream = await stream.start_tls(ssl_context, server_hostname=sni if isinstance(sni, str) else host)
    ssl_object = stream.get_extra_info("ssl_object")
    if not http1 or (ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"):
        connection = httpcore.AsyncHTTP2Connection(origin=origin, stream=stream)
        return await connection.handle_async_request(request), connection
    return await _http11(stream, request, content), None


async def _http11(
    stream: httpcore.AsyncNetworkStream, request: httpcore.Request, content: bytes | None
) -> httpcore.Response:
    state = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_INCOMPLETE_EVENT_SIZE)
    try:
        data = state.send(
            h11.Request(method=request.method, target=request.url.target, headers=request.headers)
        )
        if content:
            data += state.send(h11.Data(data=content))
        data += state.send(h11.EndOfMessage())
    except h11.LocalProtocolError as exc:
        raise httpcore.LocalProtocolError(str(exc)) from exc
    try:
        await stream.write(data)  # the whole request in one write: one send() for small requests
    except httpcore.WriteError:
        # As httpcore does: servers may answer (e.g. 413) and close before taking the whole request.
        pass
    while True:
        event = await _next_event(stream, state)
        if isinstance(event, h11.Response):
            break
        if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            break
    return httpcore.Response(
        event.status_code,
        headers=event.headers.raw_items(),
        content=_body(stream, state),
        extensions={"http_version": b"HTTP/" + event.http_version},
    )


async def _body(stream: httpcore.AsyncNetworkStream, state: h11.Connection) -> AsyncIterator[bytes]:
    while True:
        event = await _next_event(stream, state)
        if isinstance(event, h11.Data):
            yield bytes(event.data)
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            return


async def _next_event(stream: httpcore.AsyncNetworkStream, state: h11.Connection) -> object:
    while True:
        try:
            event = state.next_event()
        except h11.RemoteProtocolError as exc:
            raise httpcore.RemoteProtocolError(str(exc)) from exc
        if event is not h11.NEED_DATA:
            return event
        data = await stream.read(_READ_SIZE)
        if not data and state.their_state is h11.SEND_RESPONSE:
            # httpcore's wording, which `remote_protocol_error` classifies as server_disconnected.
            raise httpcore.RemoteProtocolError("Server disconnected without sending a response.")
        state.receive_data(data)
