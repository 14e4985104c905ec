"""A raw asyncio TCP server for the faults an HTTP framework will not produce: hang after accept,
garbage instead of HTTP, an endless body, and a reset or a close as soon as the request arrives.

It complements lab/servers/http.py (which always speaks valid HTTP); `mode` can change while it
runs, and applies to connections accepted afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import struct
from typing import Final, Literal

from otelprobe.lab.servers._lifecycle import LabServer

logger = logging.getLogger(__name__)

RawMode = Literal["hang", "garbage", "endless_body", "reset", "close"]
"""hang: accept, read, never write. garbage: answer the request with bytes that are not HTTP.
endless_body: a 200 whose chunked body never ends (bounded by `max_body_bytes`).
reset: RST as soon as the request head has arrived.
close: FIN as soon as the request head has arrived, no answer (a backend that died on the request)."""

GARBAGE: Final = b"\x16\x03\x01\x00\xffSSH-2.0-not-http \x00\xfe\r\n\r\n"
_CHUNK: Final = 16384


class RawFaultServer(LabServer):
    """A TCP server on `host:port` (port 0 picks a free one) that misbehaves per `mode`.

    Args:
        mode: what each new connection gets (see RawMode); may be changed at run time.
        endless_rate_bytes_per_s: pace of the endless body; None writes as fast as the client reads.
        max_body_bytes: the endless body stops (and the connection closes) after this many bytes,
            so a forgotten client cannot keep the server busy forever.
        max_hang_s: a hanging connection is closed after this long.
    """

    scheme = "http"

    def __init__(
        self,
        mode: RawMode = "hang",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        endless_rate_bytes_per_s: float | None = None,
        max_body_bytes: int = 1 << 30,
        max_hang_s: float = 300.0,
    ) -> None:
        self.mode: RawMode = mode
        self.host, self._port = host, port
        self.endless_rate_bytes_per_s = endless_rate_bytes_per_s
        self.max_body_bytes, self.max_hang_s = max_body_bytes, max_hang_s
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts: collections.Counter[RawMode] = collections.Counter()
        """Connections served, by the mode they got."""

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, self.host, self._port)
        logger.info("raw fault server (%s) on %s", self.mode, self.url)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Tracked so aclose() can end connections that would otherwise outlive the server.
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        self.counts[mode] += 1
        try:
            if mode == "hang":
                await _hang(reader, self.max_hang_s)
                return
            await reader.readuntil(b"\r\n\r\n")
            if mode == "garbage":
                writer.write(GARBAGE)
                await writer.drain()
            elif mode == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            elif mode == "endless_body":
                await self._endless(writer)
            # close: nothing to write; the finally below closes the connection with FIN.
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            logger.debug("raw connection ended: %r", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _endless(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        payload = b"otelprobe-lab endless\n" * (_CHUNK // 22)
        chunk = f"{len(payload):x}\r\n".encode() + payload + b"\r\n"
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        while sent < self.max_body_bytes:
            writer.write(chunk)
            await writer.drain()
            sent += len(payload)
            if self.endless_rate_bytes_per_s:
                wait = start + sent / self.endless_rate_bytes_per_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)


async def _hang(reader: asyncio.StreamReader, max_hang_s: float) -> None:
    """Read and discard whatever comes, never answer, until the client leaves or time is up."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max_hang_s):
            while await reader.read(_CHUNK):
                pass
