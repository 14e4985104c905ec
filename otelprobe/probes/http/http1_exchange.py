"""One request on a fresh timed connection: HTTP/1.1 framed here (httptools parses), HTTP/2 by h2.

probes/http/probe.py calls `exchange` once per hop. It connects and runs TLS through
`backend.TimedBackend` / `TimedStream` (so `ExchangeTimer` marks the phases), then speaks
HTTP/1.1 itself: the request is joined from byte strings and the response parsed by httptools
(llhttp, in C) — a general client's connection objects and locks, or h11 in pure Python, cost CPU
that a one-request connection does not need — or hands the stream to
probes/http/http2_exchange.py: after ALPN "h2", or at once with prior knowledge (`http_version:
"2"` on plain http). `http_version: "2"` on https needs ALPN to choose h2 (RFC 9113 §3.3: prior
knowledge is for cleartext only). Failures are ProtocolErrors whose detail says what happened:
`local_protocol_error` (a request we refuse to send), `server_disconnected`, `incomplete_body`,
`malformed_response`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Final

import httptools

from otelprobe.errors import ProtocolError
from otelprobe.net.tls.openssl import ClientTLS
from otelprobe.probes.http import http2_exchange
from otelprobe.probes.http.backend import TimedBackend, WriteFailed
from otelprobe.probes.http.messages import ByteStream, Request, Response

_READ_SIZE: Final = 64 * 1024
_MAX_HEAD_SIZE: Final = 100 * 1024  # bound on a response head (1xx heads included), as h11's
# RFC 9110 token (method, header name) and request-target characters (visible ASCII).
_TOKEN_CHARS: Final = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TARGET_CHARS: Final = bytes(range(0x21, 0x7F))


async def exchange(
    backend: TimedBackend,
    request: Request,
    ssl_context: ClientTLS | None,
    *,
    http1: bool,
) -> Response:
    """Connect, handshake and send `request`; the response's body is still to be read.

    `http1=False` means HTTP/2 only. Nothing outlives the exchange but the socket, which the
    caller's `backend.close()` closes.
    """
    url = request.url
    stream = await backend.connect_tcp(url.host, url.port)
    if ssl_context is None:
        if not http1:
            return await _http2(stream, request, prior_knowledge=True)
        return await _http11(stream, request)
    await stream.start_tls(ssl_context, request.sni_hostname or url.host)
    tls = stream.tls
    alpn = tls.selected_alpn_protocol() if tls is not None else None
    if alpn == "h2":
        return await _http2(stream, request, prior_knowledge=False)
    if not http1:
        chose = f"it chose {alpn}" if alpn else "it chose no protocol"
        raise ProtocolError(
            "alpn_h2_not_negotiated",
            f'http_version "2": the server did not agree to HTTP/2 by ALPN ({chose})',
        )
    return await _http11(stream, request)


async def _http2(stream: ByteStream, request: Request, *, prior_knowledge: bool) -> Response:
    _check_request(request)
    return await http2_exchange.request(stream, request, prior_knowledge=prior_knowledge)


async def _http11(stream: ByteStream, request: Request) -> Response:
    data = _request_head(request)
    if request.content:
        data += request.content
    try:
        await stream.write(data)  # the whole request in one write: one send() for small requests
    except WriteFailed:
        # Servers may answer (e.g. 413) and close before taking the whole request: read on.
        pass
    parser = _ResponseParser(head_only=request.method == b"HEAD")
    received = 0
    while not parser.head_done:
        data = await stream.read(_READ_SIZE)
        if not data:
            # A head cut short is a body cut short once the response has begun.
            detail = "incomplete_body" if stream.response_started else "server_disconnected"
            raise ProtocolError(detail, f"{detail}: Server disconnected without sending a response.")
        received += len(data)
        parser.feed(data)
        if received > _MAX_HEAD_SIZE and not parser.head_done:
            raise _malformed(f"response head longer than {_MAX_HEAD_SIZE} bytes")
    if parser.status < 100:
        raise _malformed(f"invalid response status {parser.status}")
    return Response(parser.status, parser.headers, parser.version, _body(stream, parser))


def _malformed(message: str) -> ProtocolError:
    return ProtocolError("malformed_response", f"malformed_response: {message}")


def _refused(message: str) -> ProtocolError:
    """A request we do not send: a value that would end its line or its head, or break framing."""
    return ProtocolError("local_protocol_error", f"local_protocol_error: {message}")


def _request_head(request: Request) -> bytes:
    """The request line and headers, refusing what would let a value end the line or the head."""
    method, target = request.method, request.url.target
    _check_request_line(method, target)
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers:
        _check_header(name, value)
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _check_request(request: Request) -> None:
    """HTTP/2 refuses the same (RFC 9113 §8.2.1, §8.3.1), with the same errors as HTTP/1.1."""
    _check_request_line(request.method, request.url.target)
    for name, value in request.headers:
        _check_header(name, value)


def _check_request_line(method: bytes, target: bytes) -> None:
    if not method or method.translate(None, _TOKEN_CHARS):
        raise _refused(f"illegal request method {method!r}")
    if not target or target.translate(None, _TARGET_CHARS):
        # Not shown: the query may carry a secret.
        raise _refused("illegal character in the request target")


def _check_header(name: bytes, value: bytes) -> None:
    if not name or name.translate(None, _TOKEN_CHARS):
        raise _refused(f"illegal header name {name!r}")
    if b"\r" in value or b"\n" in value or b"\0" in value:
        # The value is not shown: headers may carry secrets.
        raise _refused(f"illegal header value for {name.decode()}: CR, LF or NUL")


class _ResponseParser:
    """llhttp's callbacks, keeping the final response: its head, then its body as it is parsed.

    Informational (1xx) responses before it are skipped, except 101 (the connection then speaks
    another protocol: no body). Whatever follows the response on the connection is ignored.
    """

    __slots__ = ("_head_only", "_parser", "body", "complete", "head_done", "headers", "status", "version")

    def __init__(self, *, head_only: bool) -> None:
        self._head_only = head_only  # a response to HEAD has no body, whatever its headers say
        parser = httptools.HttpResponseParser(self)
        # A bare LF ends a line of the head, as with h11 (RFC 9112 §2.2 lets recipients accept it).
        parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self._parser: httptools.HttpResponseParser | None = parser
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.version = ""
        self.head_done = False
        self.complete = False
        self.body: list[bytes] = []  # parsed since the last `take_body`

    def feed(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            return
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            # After the response (101, data after `Connection: close`) llhttp stops; so do we.
            if not self.complete:
                raise _malformed(f"malformed HTTP/1.1 response: {exc}") from exc

    def take_body(self) -> bytes:
        body, self.body = self.body, []
        return b"".join(body)

    def ends_at_close(self) -> bool:
        """Whether the body is delimited by the end of the connection (RFC 9112 §6.3)."""
        coding: bytes | None = None
        has_length = False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"transfer-encoding":
                coding = value
            elif lowered == b"content-length":
                has_length = True
        if coding is not None:
            return coding.rpartition(b",")[2].strip().lower() != b"chunked"
        return not has_length

    def _finish(self) -> None:
        self.complete = True
        self._parser = None  # the parser holds our callbacks: no reference cycle outlives the response

    def on_message_begin(self) -> None:
        if not self.head_done:
            self.headers = []  # a 1xx response's headers are not the final response's

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:  # trailers are not kept (nor were they with h11)
            self.headers.append((name, value.rstrip(b" \t")))  # llhttp keeps trailing whitespace

    def on_headers_complete(self) -> None:
        parser = self._parser
        if self.head_done or parser is None:
            return
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # informational: the final response follows
        self.status = status
        self.version = parser.get_http_version()
        self.head_done = True
        if self._head_only or status == 101:
            self._finish()

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.head_done and not self.complete:
            self._finish()


async def _body(stream: ByteStream, parser: _ResponseParser) -> AsyncGenerator[bytes, None]:
    """The body as it arrives, one piece per read; its end is llhttp's, or the connection's."""
    while True:
        if parser.body:
            yield parser.take_body()
        if parser.complete:
            return
        data = await stream.read(_READ_SIZE)
        if not data:
            if parser.ends_at_close():
                return
            raise ProtocolError(
                "incomplete_body",
                "incomplete_body: incomplete body: "
                "the server closed the connection before the end of the message",
            )
        parser.feed(data)
