"""A TLS front for the lab: accepts TCP, waits (the `tls_delay` fault), then handshakes with any
lab certificate (the `bad_certificate` fault), then proxies to an upstream HTTP server or answers
HTTP itself.

It sits in front of lab/servers/http.py so TLS faults and HTTP faults combine. The delay happens
between accept and wrap: the raw socket is accepted, we sleep, and only then does asyncio wrap it
(LAB-NOTES pitfall 5: sleeping before `start_tls` on an existing transport hangs the handshake).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import socket
import ssl
import struct
from typing import Final

from otelprobe.lab.certs import LabCA, LeafKind
from otelprobe.lab.faults import BadCertificate, TLSDelay
from otelprobe.lab.servers._lifecycle import LabServer
from otelprobe.lab.servers.http import lab_body

logger = logging.getLogger(__name__)

TLSFault = TLSDelay | BadCertificate
_PUMP_BYTES: Final = 65536
_MAX_HEAD_BYTES: Final = 65536


class TLSFront(LabServer):
    """A TLS server on `host:port` (port 0 picks a free one).

    Args:
        ca: the lab CA whose leaves are served (`valid` unless a bad_certificate fault is on).
        upstream: (host, port) of a plain HTTP server to proxy to; None answers every request
            itself with a small 200 (`lab_body`).
        seed: seeds the Random for jittered / probabilistic delays.
        handshake_timeout_s: a client that never finishes its handshake is dropped after this.
        record_bytes: the largest TLS record written towards the client. None writes what the
            backend gave in one read as one record (up to TLS's 16 KiB a record), as servers
            without dynamic record sizing do: a first record larger than the initial congestion
            window can be decrypted only after a second flight. Small records (~1400 bytes, as
            with dynamic record sizing) let the first byte through after one round trip.
    """

    scheme = "https"

    def __init__(
        self,
        ca: LabCA,
        upstream: tuple[str, int] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: int | None = None,
        handshake_timeout_s: float = 10.0,
        body_size: int = 1024,
        record_bytes: int | None = None,
    ) -> None:
        self.ca, self.upstream = ca, upstream
        self.record_bytes = record_bytes
        self.host, self._port = host, port
        self.handshake_timeout_s, self.body_size = handshake_timeout_s, body_size
        self._rng = random.Random(seed)
        self._delay: TLSDelay | None = None
        self._leaf: LeafKind = "valid"
        self._contexts: dict[LeafKind, ssl.SSLContext] = {}
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts: collections.Counter[str] = collections.Counter()
        """`accepted`, `handshakes` (completed) and `handshake_failures`."""

    # --- fault state -------------------------------------------------------------------------

    def apply(self, fault: TLSFault) -> None:
        """Turn on a handshake delay or a bad certificate for every following connection."""
        logger.info("tls fault on: %s", fault)
        if isinstance(fault, TLSDelay):
            self._delay = fault
        else:
            self._leaf = fault.problem

    def clear(self, kind: str | None = None) -> None:
        """Turn off the fault of `kind` ("tls_delay" / "bad_certificate"), or both."""
        if kind in (None, "tls_delay"):
            self._delay = None
        if kind in (None, "bad_certificate"):
            self._leaf = "valid"

    @property
    def leaf(self) -> LeafKind:
        """The certificate currently served."""
        return self._leaf

    def _context(self) -> ssl.SSLContext:
        if self._leaf not in self._contexts:
            self._contexts[self._leaf] = self.ca.server_context(self._leaf)
        return self._contexts[self._leaf]

    def _sample_delay(self) -> float:
        fault = self._delay
        if fault is None or (fault.probability < 1.0 and self._rng.random() >= fault.probability):
            return 0.0
        return fault.sample_delay(self._rng)

    # --- life cycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("server not started")
        return int(self._listener.getsockname()[1])

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._port))
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._context()  # load the certificate now, not on the first connection's clock
        self._accept_task = asyncio.create_task(self._accept_loop(listener))
        logger.info("tls front on %s -> %s", self.url, self.upstream or "itself")

    async def aclose(self) -> None:
        tasks = [t for t in (self._accept_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._accept_task = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    # --- serving -----------------------------------------------------------------------------

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(listener)
            self.counts["accepted"] += 1
            task = asyncio.create_task(self._serve(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            delay = self._sample_delay()
            if delay > 0:
                # Count the delay from the ClientHello's arrival, not from accept: a client that
                # writes its hello late must still see the whole delay inside its handshake. The
                # ClientHello then waits in the receive buffer; nothing reads it yet.
                await _readable(sock, self.handshake_timeout_s)
                await asyncio.sleep(delay)
            writer, reader = await self._wrap(sock)
            self.counts["handshakes"] += 1
            if self.upstream is None:
                await self._answer_http(reader, writer)
            else:
                await self._proxy(reader, writer, self.upstream)
        except (ssl.SSLError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
            if writer is None:
                self.counts["handshake_failures"] += 1
            logger.debug("tls front connection ended: %r", exc)
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            else:
                sock.close()

    async def _wrap(self, sock: socket.socket) -> tuple[asyncio.StreamWriter, asyncio.StreamReader]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_MAX_HEAD_BYTES)
        protocol = asyncio.StreamReaderProtocol(reader)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol,
            sock,
            ssl=self._context(),
            ssl_handshake_timeout=self.handshake_timeout_s,
        )
        return asyncio.StreamWriter(transport, protocol, reader, loop), reader

    async def _answer_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A minimal keep-alive HTTP/1.1 responder: every request gets 200 and the lab body."""
        body = lab_body(self.body_size)
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        while True:
            try:
                request = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed between requests
            if b"content-length:" in request.lower():
                length = int(request.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
            _write_records(writer, head + body, self.record_bytes)
            await writer.drain()

    async def _proxy(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: tuple[str, int]
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
        up_writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        requests = asyncio.create_task(_pump(reader, up_writer))

        def client_gone(task: asyncio.Task[str]) -> None:
            # A client that resets (or fails) is gone for good: without this the upstream
            # connection waited out the backend's keep-alive (75 s for aiohttp), ~1,450 of them
            # in a 200/s soak.
            if not task.cancelled() and (task.exception() is not None or task.result() == "reset"):
                up_writer.transport.abort()

        requests.add_done_callback(client_gone)
        try:
            # The response direction decides when the connection ends: upstream closing (or
            # resetting) ends it even though TLS cannot be half-closed towards the client.
            if await _pump(up_reader, writer, self.record_bytes) == "reset":
                _abort_with_rst(writer)
        finally:
            # Close first: a cancel (the front closing) at one of the awaits below must not skip
            # it, or the upstream connection is left to the garbage collector.
            requests.cancel()
            up_writer.close()
            await asyncio.gather(requests, return_exceptions=True)
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()


async def _readable(sock: socket.socket, timeout_s: float) -> None:
    """Wait until `sock` has data (or EOF) to read, without reading it."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():  # the loop may call again before the waiter removes the reader
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await asyncio.wait_for(ready, timeout_s)
    finally:
        loop.remove_reader(sock.fileno())


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record_bytes: int | None = None
) -> str:
    """Copy until EOF ("eof", half-closing the other side where it can be) or a reset ("reset")."""
    try:
        while data := await reader.read(_PUMP_BYTES):
            _write_records(writer, data, record_bytes)
            await writer.drain()
    except ConnectionResetError:
        return "reset"
    if writer.can_write_eof():
        writer.write_eof()
    return "eof"


def _write_records(writer: asyncio.StreamWriter, data: bytes, record_bytes: int | None) -> None:
    """Write `data`, at most `record_bytes` per TLS record: asyncio's SSL transport hands each
    write to one SSL_write, which makes records of at most that write's size."""
    if record_bytes is None:
        writer.write(data)
        return
    for offset in range(0, len(data), record_bytes):
        writer.write(data[offset : offset + record_bytes])


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Pass an upstream reset on to the client as a reset (reset_mid_body through the front)."""
    sock = writer.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
