"""The lab's DNS fault server: one authoritative zone served over UDP, TCP, DoT and DoH.

Tests and lab scenarios start it on loopback and set faults per name at run time (delay,
SERVFAIL, NXDOMAIN, REFUSED, no answer, truncation, wrong answers, bogus DNSSEC signatures);
the zone logic lives in lab/servers/dns_zone.py, this module owns the sockets.

    async with DNSFaultServer(zone={"www": {"A": ["127.0.0.1"]}}) as server:
        server.set_fault("slow", DNSFault.delayed(0.2))
        ...  # query 127.0.0.1:server.port for www.lab.test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import struct
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Final

import dns.exception
import dns.flags
import dns.message
import dns.rdatatype
from aiohttp import web

from otelprobe.lab.servers.dns_zone import (
    DEFAULT_ORIGIN,
    DNSFault,
    ReceivedQuery,
    Reply,
    Transport,
    Zone,
    ZoneSpec,
)

__all__ = ["DNSFault", "DNSFaultServer", "ReceivedQuery", "Zone"]

logger = logging.getLogger(__name__)

_DOH_PATH: Final = "/dns-query"
_DOH_TYPE: Final = "application/dns-message"


class DNSFaultServer:
    """An authoritative DNS server on loopback whose answers can be faulted per name.

    UDP and TCP share `port`; DoT (`tls_port`) and DoH (`https_port`, `doh_url`) run when a
    server-side `tls_context` is given. With `sign=True` the zone is DNSSEC-signed (ECDSA P-256;
    `dnskey` and `ds` give the trust anchor) and RRSIGs are sent to queries with the DO bit; with
    `authenticated_data=True` it also sets AD on them, as a validating resolver would.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        zone: ZoneSpec | Zone | None = None,
        *,
        origin: str = DEFAULT_ORIGIN,
        tls_context: ssl.SSLContext | None = None,
        sign: bool = False,
        authenticated_data: bool = False,
        seed: int | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.zone = (
            zone
            if isinstance(zone, Zone)
            else Zone(zone, origin=origin, sign=sign, authenticated_data=authenticated_data, seed=seed)
        )
        self._tls_context = tls_context
        self.port = 0
        self.tls_port = 0
        self.https_port = 0
        self.queries: list[ReceivedQuery] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._dot: asyncio.Server | None = None
        self._doh: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    # --- run-time control --------------------------------------------------------------------
    def set_fault(self, pattern: str, fault: DNSFault | None) -> None:
        """Fault queries for `pattern` ("www", "www.lab.test.", "*.slow", "*"); None clears it."""
        self.zone.set_fault(pattern, fault)

    def clear_faults(self) -> None:
        self.zone.clear_faults()

    def set_records(self, name: str, rdtype: str, values: Sequence[str], ttl: int = 60) -> None:
        self.zone.set_records(name, rdtype, values, ttl)

    @property
    def dnskey(self) -> str | None:
        return self.zone.dnskey.to_text() if self.zone.dnskey else None

    @property
    def ds(self) -> str | None:
        ds = self.zone.ds
        return ds.to_text() if ds else None

    @property
    def doh_url(self) -> str:
        return f"https://{self.host}:{self.https_port}{_DOH_PATH}"

    # --- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> DNSFaultServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # UDP and TCP on the same port: bind UDP first, then TCP; an ephemeral UDP port may be
        # taken for TCP, so retry a few times.
        for _ in range(20):
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _UDPProtocol(self), local_addr=(self.host, self._requested_port)
            )
            self.port = int(self._udp.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve_stream("tcp"), self.host, self.port)
                break
            except OSError:
                self._udp.close()
                if self._requested_port:
                    raise
        else:
            raise OSError("no port free for both UDP and TCP")
        if self._tls_context is not None:
            self._dot = await asyncio.start_server(
                self._serve_stream("tls"), self.host, 0, ssl=self._tls_context
            )
            self.tls_port = int(self._dot.sockets[0].getsockname()[1])
            app = web.Application()
            app.router.add_route("GET", _DOH_PATH, self._doh_handler)
            app.router.add_route("POST", _DOH_PATH, self._doh_handler)
            self._doh = web.AppRunner(app, access_log=None)
            await self._doh.setup()
            site = web.TCPSite(self._doh, self.host, 0, ssl_context=self._tls_context)
            await site.start()
            self.https_port = _bound_port(site)
        logger.debug("DNS fault server on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        self._stopping.set()
        if self._udp is not None:
            self._udp.close()
            await asyncio.sleep(0)  # the transport closes its socket on the next loop iteration
        for server in (self._tcp, self._dot):
            if server is not None:
                server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in (self._tcp, self._dot):
            if server is not None:
                await server.wait_closed()
        if self._doh is not None:
            await self._doh.cleanup()

    # --- answering ---------------------------------------------------------------------------
    def _reply(self, wire: bytes, transport: Transport) -> Reply | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            logger.debug("malformed query over %s ignored", transport)
            return None
        if query.question:
            q = query.question[0]
            self.queries.append(
                ReceivedQuery(transport, q.name.to_text(), dns.rdatatype.to_text(q.rdtype), query)
            )
        return self.zone.reply(query, transport)

    async def _wait_reply(self, reply: Reply) -> bytes | None:
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        if reply.message is None:
            return None
        try:
            return reply.message.to_wire(max_size=reply.max_size)
        except dns.exception.TooBig:
            # Too big for the client's UDP buffer: send the header with TC set (RFC 2181 §9).
            reply.message.flags |= dns.flags.TC
            for section in (reply.message.answer, reply.message.authority, reply.message.additional):
                section.clear()
            return reply.message.to_wire(max_size=reply.max_size)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_udp(self, wire: bytes, addr: tuple[str, int]) -> None:
        reply = self._reply(wire, "udp")
        if reply is None:
            return
        data = await self._wait_reply(reply)
        if data is not None and self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(data, addr)

    def _serve_stream(
        self, transport: Transport
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                while True:
                    header = await reader.readexactly(2)
                    wire = await reader.readexactly(struct.unpack("!H", header)[0])
                    reply = self._reply(wire, transport)
                    data = await self._wait_reply(reply) if reply is not None else None
                    if data is None:
                        # No answer: hold the connection open until the client gives up.
                        await self._stopping.wait()
                        return
                    writer.write(struct.pack("!H", len(data)) + data)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                pass
            finally:
                if task is not None:
                    self._tasks.discard(task)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

        return serve

    async def _doh_handler(self, request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            wire = await request.read()
        else:
            encoded = request.query.get("dns", "")
            wire = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        reply = self._reply(wire, "https")
        if reply is None:
            raise web.HTTPBadRequest(text="malformed DNS query")
        data = await self._wait_reply(reply)
        if data is None:
            await self._stopping.wait()
            raise web.HTTPServiceUnavailable()
        return web.Response(body=data, content_type=_DOH_TYPE)


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSFaultServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        # One task per query, so a delayed answer does not hold back the others.
        self._server._spawn(self._server._answer_udp(data, (str(addr[0]), int(addr[1]))))

    def error_received(self, exc: Exception) -> None:
        logger.debug("DNS UDP error: %s", exc)


def _bound_port(site: web.TCPSite) -> int:
    """The port an aiohttp site bound to (aiohttp keeps its server private)."""
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1])
