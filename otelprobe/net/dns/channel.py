"""One DNS message exchange over UDP, TCP, DNS-over-TLS or DNS-over-HTTPS, timed at the socket.

The dns probe (probes/dns/probe.py) and the per-target resolver (net/dns/resolver.py) open channels
(`tcp.connect` and `tls.handshake` phases for the stream transports) and exchange queries on them.
Each exchange leaves `sent_ns` (when the query's send() began) and `answered_ns` (the kernel's
receive stamp of the answer's last datagram or segment, `net/kernel_time.py`), the edges of
the caller's `dns.lookup` phase, so a late event loop does not lengthen it. A UDP query is
retransmitted per the caller's `RetransmitPolicy` (net/dns/retransmit.py: same ID and
question, a socket per try, an answer to any try accepted); then `sent_ns` is the first try's
send and `answered_ns` the arrival of the answer used. UDP answers with TC set are retried over
TCP inside the same exchange, as a stub resolver would.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Final, Literal

import dns.exception
import dns.flags
import dns.message

from otelprobe.errors import DNSError, ProtocolError
from otelprobe.net.connection import TimedConnection, timed_connect
from otelprobe.net.dns.retransmit import ONE_TRY, RetransmitPolicy, UDPExchange, UDPTries
from otelprobe.net.stream import BufferedConnection
from otelprobe.net.tls.openssl import ClientTLS
from otelprobe.timing import PhaseClock

DNSTransport = Literal["udp", "tcp", "tls", "https"]
DEFAULT_PORTS: Final[dict[str, int]] = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}
_DOH_TYPE: Final = "application/dns-message"


class DNSChannel:
    """A connection to one DNS server; `exchange` sends one query and returns its answer.

    After each exchange, `sent_ns` is when the query's (first) send() began and `answered_ns`
    when the answer arrived (kernel receive stamp where available), both on the perf_counter_ns
    clock; over UDP `tries` says how the tries went (also after a timeout or a cancellation).
    """

    def __init__(self, transport: DNSTransport, ip: str, port: int) -> None:
        self.transport = transport
        self.ip = ip
        self.port = port
        self.fell_back_to_tcp = False
        self.sent_ns = 0
        self.answered_ns = 0
        self._udp: UDPExchange | None = None
        self._stream: BufferedConnection | None = None
        self._doh_host = ip
        self._doh_path = "/dns-query"

    @classmethod
    async def open(
        cls,
        clock: PhaseClock,
        transport: DNSTransport,
        ip: str,
        port: int,
        *,
        tls_context: ClientTLS | None = None,
        server_hostname: str | None = None,
        doh_path: str = "/dns-query",
    ) -> DNSChannel:
        """Connect (and handshake) as phases of `clock`; UDP sockets are made per try, in exchange."""
        channel = cls(transport, ip, port)
        if transport == "udp":
            return channel
        try:
            conn = await timed_connect(clock, ip, port)
            channel._stream = BufferedConnection(channel._stamping(conn))
            if transport in ("tls", "https"):
                if tls_context is None:
                    raise ValueError(f"transport {transport} needs a TLS context")
                await conn.start_tls(tls_context, server_hostname, clock)
            channel._doh_host = server_hostname or ip
            channel._doh_path = doh_path
        except BaseException:
            channel.close()
            raise
        return channel

    @property
    def arrived_ns(self) -> int | None:
        """When an answer to the current exchange arrived, as soon as it has been read."""
        if self._udp is not None and self._udp.arrived_ns is not None:
            return self._udp.arrived_ns
        return self.answered_ns or None

    @property
    def invalid_answers(self) -> ProtocolError | None:
        """What was wrong with the answers of a UDP exchange that got no valid one, if it got any."""
        if self._udp is None or not self._udp.rejected:
            return None
        return self._udp.invalid_answers()

    @property
    def tries(self) -> UDPTries | None:
        """The tries of the last UDP exchange; None before one, and on stream transports."""
        return self._udp.tries if self._udp is not None else None

    async def exchange(
        self,
        query: dns.message.Message,
        *,
        tcp_fallback: bool = True,
        retransmit: RetransmitPolicy = ONE_TRY,
    ) -> dns.message.Message:
        """Send `query`, return the matching answer; DNSError / ProtocolError on failure.

        `retransmit` applies over UDP only: a stream transport's own retransmits recover a loss.
        """
        wire = query.to_wire()
        if self.transport == "udp":
            self._udp = UDPExchange(self.ip, self.port, query, lambda data: _parse(data, query), retransmit)
            self.answered_ns = 0
            try:
                response, self.answered_ns = await self._udp.run()
            finally:
                sent_ns = self._udp.tries.sent_ns
                self.sent_ns = sent_ns[0] if sent_ns else 0
            if response.flags & dns.flags.TC and tcp_fallback:
                self.fell_back_to_tcp = True
                response = await self._exchange_tcp_fallback(query, wire)
            return response
        assert self._stream is not None
        if self.transport == "https":
            return await self._exchange_doh(self._stream, query, wire)
        await self._stream.conn.write(struct.pack("!H", len(wire)) + wire)
        length = struct.unpack("!H", await self._stream.read_exactly(2, "the DNS answer length"))[0]
        return _parse(await self._stream.read_exactly(length, "the DNS answer"), query)

    def _stamping(self, conn: TimedConnection) -> TimedConnection:
        """Have `conn` report each query's first write and each answer read to this channel."""

        def wrote(first_ns: int, last_ns: int) -> None:
            self.sent_ns = first_ns

        def read(arrived_ns: int) -> None:
            self.answered_ns = arrived_ns

        conn.on_write = wrote
        conn.on_read = read
        return conn

    async def _exchange_tcp_fallback(self, query: dns.message.Message, wire: bytes) -> dns.message.Message:
        # Not a phase of its own: the fallback is part of resolving, as in any stub resolver.
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.ip else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            raise DNSError("tcp_fallback_failed", f"TCP fallback: no socket: {exc.strerror or exc}") from exc
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await loop.sock_connect(sock, (self.ip, self.port))
            except OSError as exc:
                raise DNSError(
                    "tcp_fallback_failed", f"TCP fallback to {self.ip}:{self.port}: {exc}"
                ) from exc
            conn = TimedConnection(sock, loop)
            conn.on_read = self._fallback_read
            stream = BufferedConnection(conn)
            await stream.conn.write(struct.pack("!H", len(wire)) + wire)
            length = struct.unpack("!H", await stream.read_exactly(2, "the DNS answer length"))[0]
            return _parse(await stream.read_exactly(length, "the DNS answer"), query)
        finally:
            sock.close()

    def _fallback_read(self, arrived_ns: int) -> None:
        self.answered_ns = arrived_ns

    async def _exchange_doh(
        self, stream: BufferedConnection, query: dns.message.Message, wire: bytes
    ) -> dns.message.Message:
        # RFC 8484 over HTTP/1.1 (every public DoH service accepts it); POST keeps the ID intact.
        head = (
            f"POST {self._doh_path} HTTP/1.1\r\nHost: {self._doh_host}\r\n"
            f"Content-Type: {_DOH_TYPE}\r\nAccept: {_DOH_TYPE}\r\n"
            f"Content-Length: {len(wire)}\r\nConnection: keep-alive\r\n\r\n"
        )
        await stream.conn.write(head.encode("ascii") + wire)
        status_line, headers = _parse_head(await stream.read_until(b"\r\n\r\n", "the DoH response headers"))
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ProtocolError("malformed_http_response", f"DoH status line {status_line!r}")
        status = int(parts[1])
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(stream)
        elif "content-length" in headers:
            body = await stream.read_exactly(int(headers["content-length"]), "the DoH response body")
        else:
            raise ProtocolError("malformed_http_response", "DoH response without a length")
        if status != 200:
            raise DNSError(f"doh_http_{status}", f"DoH server answered HTTP {status}")
        return _parse(body, query)

    def close(self) -> None:
        # A UDP exchange closes its sockets itself when it ends, however it ends.
        if self._stream is not None:
            self._stream.conn.close()


def _parse(data: bytes, query: dns.message.Message) -> dns.message.Message:
    try:
        response = dns.message.from_wire(data)
    except dns.exception.DNSException as exc:
        raise ProtocolError("invalid_dns_answer", f"malformed DNS answer: {exc}") from exc
    if not query.is_response(response):
        raise ProtocolError("invalid_dns_answer", "the answer does not match the query (ID or question)")
    return response


def _parse_head(raw: bytes) -> tuple[str, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def _read_chunked(stream: BufferedConnection) -> bytes:
    body = bytearray()
    while True:
        size_line = await stream.read_until(b"\r\n", "a DoH chunk size")
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError as exc:
            raise ProtocolError("malformed_http_response", f"bad chunk size {size_line!r}") from exc
        if size == 0:
            await stream.read_until(b"\r\n", "the DoH trailer")
            return bytes(body)
        body.extend((await stream.read_exactly(size + 2, "a DoH chunk"))[:size])
