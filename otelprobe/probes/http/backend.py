"""The HTTP probe's timed connection: DNS, connect and TLS phases, and the request's own phases.

probes/http/http1_exchange.py frames HTTP/1.1 (httptools parses) and http2_exchange.py HTTP/2
(h2); this module owns the sockets under both. `TimedBackend` resolves and connects (the
`dns.lookup` / `tcp.connect` phases of probes/base.py and net/connection.py),
`TimedStream.start_tls` is the `tls.handshake` phase, and `ExchangeTimer` derives `http.request`,
`http.ttfb` and `http.transfer` from the bytes that cross the stream (DESIGN §3):

- `http.request`: first request byte written -> last request byte written. On HTTP/1.1 the
  request is complete at the first read (the whole request is written before reading).
  On HTTP/2 it starts with the connection preface (the server needs it before it can serve the
  request) and ends with the write that carries END_STREAM on a request stream.
- `http.ttfb`: last request byte written -> first response byte read. Only decrypted
  application data counts: TLS 1.3 NewSessionTicket records arriving before the response are
  consumed inside `TimedConnection.read` and never reach the stream. On HTTP/2 the server's
  SETTINGS / WINDOW_UPDATE / PING frames (stream 0) are not the response either, nor are a
  request stream's WINDOW_UPDATE or RST_STREAM (a reset is a failure of this phase): the first
  HEADERS frame on a request stream is. A response that arrives before the request is complete
  (the server answers early) ends the request where it stopped, with a zero `http.ttfb`.
- `http.transfer`: first response byte -> last body byte read (`ExchangeTimer.finish`).
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from otelprobe import names
from otelprobe.errors import ProtocolError
from otelprobe.net.connection import TimedConnection
from otelprobe.net.dns.resolver import Resolver
from otelprobe.net.happy_eyeballs import connect_first
from otelprobe.net.tls.handshake import handshake_attributes, protocol_version
from otelprobe.net.tls.openssl import ClientTLS, TLSSession
from otelprobe.probes.base import Attributes, timed_resolve
from otelprobe.settings.common import IPFamily
from otelprobe.timing import OpenPhase, PhaseClock

_H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_H2_FRAME_HEADER: Final = 9
_H2_DATA: Final = 0x0
_H2_HEADERS: Final = 0x1
_H2_END_STREAM: Final = 0x1


class _FrameScanner:
    """Finds HTTP/2 frame headers in a byte stream fed in arbitrary chunks (payloads are skipped)."""

    __slots__ = ("_header", "_skip")

    def __init__(self, skip: int = 0) -> None:
        self._skip = skip
        self._header = b""

    def feed(self, data: bytes) -> list[tuple[int, int, int]]:
        """(type, flags, stream_id) of every frame whose header completes in `data`."""
        frames: list[tuple[int, int, int]] = []
        position, size = 0, len(data)
        while position < size:
            if self._skip:
                taken = min(self._skip, size - position)
                self._skip -= taken
                position += taken
                continue
            need = _H2_FRAME_HEADER - len(self._header)
            self._header += data[position : position + need]
            position += need
            if len(self._header) == _H2_FRAME_HEADER:
                header, self._header = self._header, b""
                self._skip = int.from_bytes(header[:3], "big")
                stream_id = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
                frames.append((header[3], header[4], stream_id))
        return frames


class ExchangeTimer:
    """Marks `http.request`, `http.ttfb` and `http.transfer` of one request on one connection."""

    __slots__ = (
        "_attributes",
        "_clock",
        "_incoming",
        "_outgoing",
        "_request",
        "_transfer",
        "_ttfb",
        "last_read_ns",
        "last_write_ns",
        "response_started",
    )

    def __init__(self, clock: PhaseClock, attributes: Attributes) -> None:
        self._clock = clock
        self._attributes = attributes
        self._request: OpenPhase | None = None
        self._ttfb: OpenPhase | None = None
        self._transfer: OpenPhase | None = None
        # Set on HTTP/2 only (recognised by the connection preface of the first write).
        self._outgoing: _FrameScanner | None = None
        self._incoming: _FrameScanner | None = None
        self.last_write_ns = 0
        self.last_read_ns = 0
        self.response_started = False

    def _open(self, name: str, start_ns: int) -> OpenPhase:
        phase = self._clock.start(name, start_ns)
        phase.attributes.update(self._attributes)
        return phase

    def _request_done(self) -> None:
        assert self._request is not None
        self._request.end(self.last_write_ns)
        self._request = None
        self._ttfb = self._open(names.SPAN_HTTP_TTFB, self.last_write_ns)

    def wrote(self, data: bytes, first_ns: int, last_ns: int) -> None:
        if self._request is None:
            if self.last_write_ns:
                return  # the request is complete: this is a SETTINGS ACK, WINDOW_UPDATE, ...
            self._request = self._open(names.SPAN_HTTP_REQUEST, first_ns)
            if data.startswith(_H2_PREFACE):
                self._outgoing = _FrameScanner(skip=len(_H2_PREFACE))
                self._incoming = _FrameScanner()
        self.last_write_ns = last_ns
        if self._outgoing is not None and any(
            kind in (_H2_DATA, _H2_HEADERS) and flags & _H2_END_STREAM and stream
            for kind, flags, stream in self._outgoing.feed(data)
        ):
            self._request_done()

    def reading(self) -> None:
        """The exchange is about to read: on HTTP/1.1 the request has been written in full."""
        if self._request is not None and self._outgoing is None:
            self._request_done()

    def received(self, data: bytes, read_ns: int) -> None:
        self.last_read_ns = read_ns
        if self._incoming is not None:
            # Fed from the first read on, so frames stay aligned whenever the response begins.
            if not any(kind == _H2_HEADERS and stream for kind, _, stream in self._incoming.feed(data)):
                return
            self._incoming = None
            if self._request is not None:
                self._request_done()  # answered before the whole request was sent (e.g. 413)
        if self._ttfb is None:
            return
        # The kernel stamps arrival: an early answer may predate the last write (zero, not negative).
        read_ns = max(read_ns, self._ttfb.start_ns)
        self._ttfb.end(read_ns)
        self._ttfb = None
        self.response_started = True
        self._transfer = self._open(names.SPAN_HTTP_TRANSFER, read_ns)

    def finish(self) -> None:
        """The body has been read in full: `http.transfer` ends at the last byte read."""
        if self._transfer is not None:
            self._transfer.end(max(self.last_read_ns, self._transfer.start_ns))
            self._transfer = None


class WriteFailed(ProtocolError):
    """A write to the server failed; the response may still be read (servers answer 413 and close)."""

    def __init__(self, exc: OSError) -> None:
        super().__init__("write_error", f"write_error: {exc}")


class TimedStream:
    """A `TimedConnection` carrying one exchange, reporting its bytes to an `ExchangeTimer`."""

    __slots__ = ("_clock", "_connection", "_read_ns", "_timer", "_write_span")

    def __init__(self, connection: TimedConnection, clock: PhaseClock, timer: ExchangeTimer) -> None:
        self._connection = connection
        self._clock = clock
        self._timer = timer
        self._write_span = (0, 0)
        self._read_ns = 0
        connection.on_write = self._stamp_write
        connection.on_read = self._stamp_read

    def _stamp_write(self, first_ns: int, last_ns: int) -> None:
        self._write_span = (first_ns, last_ns)

    def _stamp_read(self, read_ns: int) -> None:
        self._read_ns = read_ns

    @property
    def response_started(self) -> bool:
        return self._timer.response_started

    @property
    def tls(self) -> TLSSession | None:
        """The TLS session, once `start_tls` has completed."""
        return self._connection.tls

    async def read(self, max_bytes: int) -> bytes:
        self._timer.reading()
        # Until the response's first byte, each read is done the moment data arrives, so that a
        # busy loop cannot let the next segments merge into it and take its stamp (net/prompt_read.py).
        self._connection.prompt_reads = not self._timer.response_started
        try:
            data = await self._connection.read(max_bytes)
        except (ConnectionResetError, BrokenPipeError) as exc:
            detail = "reset_mid_body" if self._timer.response_started else "connection_reset"
            raise ProtocolError(detail, f"connection reset by peer ({detail})") from exc
        except OSError as exc:
            raise ProtocolError("read_error", f"read failed: {exc}") from exc
        if data:
            self._timer.received(data, self._read_ns)
        return data

    async def write(self, data: bytes) -> None:
        """Write `data`; WriteFailed if the connection refuses it (the caller decides if that is fatal)."""
        if not data:
            return
        try:
            await self._connection.write(data)
        except OSError as exc:
            raise WriteFailed(exc) from exc
        self._timer.wrote(data, *self._write_span)

    async def start_tls(self, client: ClientTLS, server_hostname: str) -> None:
        """The `tls.handshake` phase on net/tls/openssl.py; the connection is closed if it fails."""
        try:
            await self._connection.start_tls(client, server_hostname, self._clock)
        except BaseException:
            self._connection.close()
            raise


class TimedBackend:
    """Resolves through the target's resolver and connects with timed phases; one per request."""

    def __init__(
        self,
        clock: PhaseClock,
        timer: ExchangeTimer,
        resolver: Resolver,
        family: IPFamily,
        *,
        root_attributes: Attributes,
        pinned_address: str | None = None,
        source_address: str | None = None,
    ) -> None:
        self._clock = clock
        self._timer = timer
        self._resolver = resolver
        self._family = family
        self._root_attributes = root_attributes
        self._pinned_address = pinned_address
        self._source_address = source_address
        self._connections: list[TimedConnection] = []
        self.peer_address: str | None = None

    @property
    def ssl_object(self) -> TLSSession | None:
        """The TLS session of the last connection, once its handshake has completed."""
        return self._connections[-1].tls if self._connections else None

    async def connect_tcp(self, host: str, port: int) -> TimedStream:
        if self._pinned_address is not None:
            addresses = [self._pinned_address]
        else:
            addresses = await timed_resolve(
                self._clock, self._resolver, host, self._family, self._root_attributes
            )
        # RFC 8305: the next address when one fails or is silent for 250 ms; the first to connect wins.
        connection = await connect_first(
            self._clock, addresses, port, source_address=self._source_address, attrs=self._root_attributes
        )
        self._connections.append(connection)
        self.peer_address = connection.peer[0]
        return TimedStream(connection, self._clock, self._timer)

    def close(self) -> None:
        """Close every socket this backend opened."""
        for connection in self._connections:
            connection.close()


class TLSAttributeCache:
    """`tls.*` attributes of handshakes, parsing a certificate only when it differs from the last.

    One per probe: the same target presents the same chain attempt after attempt, and parsing
    it with `cryptography` is most of the CPU a handshake costs us beyond OpenSSL's own work.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[bytes, Attributes, dt.datetime] | None = None

    def attributes(self, ssl_object: TLSSession) -> Attributes:
        der = ssl_object.leaf_der() or b""
        if self._last is None or self._last[0] != der:
            parsed = handshake_attributes(ssl_object)
            not_after = parsed.get(names.PROBE_TLS_CHAIN_NOT_AFTER)
            if isinstance(not_after, str):
                self._last = (der, parsed, dt.datetime.fromisoformat(not_after))
            return parsed
        _, cached, not_after_dt = self._last
        attrs = dict(cached)
        attrs[names.PROBE_TLS_CERT_REMAINING] = (not_after_dt - dt.datetime.now(dt.UTC)).total_seconds()
        cipher = ssl_object.cipher()
        for key, value in (
            (names.TLS_PROTOCOL_VERSION, protocol_version(ssl_object)),
            (names.TLS_CIPHER, cipher[0] if cipher else None),
            (names.TLS_NEXT_PROTOCOL, ssl_object.selected_alpn_protocol()),
        ):
            if value:
                attrs[key] = value
            else:
                attrs.pop(key, None)
        return attrs
