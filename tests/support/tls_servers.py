"""Loopback TLS and line-protocol servers for the tcp and tls probe tests, where the lab has none.

`serve` runs a hand-written handler per connection (plain or TLS with any context: ALPN, client
certificates, a dialogue for the tcp probe's send/expect); `blocking_server` is for servers asyncio
cannot play (it drops TLS alerts; pyOpenSSL needs a plain socket); `smtp_server` and `pop3_server`
speak STARTTLS, a protocol no lab server speaks. A TLS server with a lab certificate (valid or
broken) is the lab's otelprobe.lab.servers.tls.TLSFront; a refused port is lab.servers.ports.RefusedPort.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve(
    handler: Handler, ssl_context: ssl.SSLContext | None = None, abort: bool = False
) -> AsyncIterator[int]:
    """Run `handler` per connection on 127.0.0.1:<port>; yields the port, closes everything after.
    Each connection is closed when its handler returns: with a FIN, or `abort`ed (a reset)."""
    tasks: set[asyncio.Task[None]] = set()

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Teardown: a handshake cancelled mid-way leaves wait_closed() pending forever.
            writer.transport.abort()
            raise
        finally:
            tasks.discard(task)
            if abort:
                writer.transport.abort()
        if abort:
            return
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@contextlib.contextmanager
def blocking_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A thread on 127.0.0.1:<port> running `handle` on each accepted (blocking) socket in turn.

    For servers asyncio cannot play: its TLS transport closes without flushing the alert that
    says why a handshake failed, and pyOpenSSL servers need a plain socket.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            with raw, contextlib.suppress(OSError):
                handle(raw)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()


async def close_after_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1024)


def smtp_server(tls_context: ssl.SSLContext, *, refuse: bool = False) -> Handler:
    """A minimal SMTP server that offers STARTTLS (or refuses it with 454)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220-lab.test ESMTP\r\n220 ready\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250-lab.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
        await reader.readline()  # STARTTLS
        if refuse:
            writer.write(b"454 4.7.0 TLS not available\r\n")
            await writer.drain()
            await reader.read(1024)
            return
        writer.write(b"220 go ahead\r\n")
        await writer.drain()
        await writer.start_tls(tls_context)
        await reader.read(1024)

    return handler


def pop3_server(tls_context: ssl.SSLContext) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK POP3 ready\r\n")
        await reader.readline()  # STLS
        writer.write(b"+OK begin TLS\r\n")
        await writer.drain()
        await writer.start_tls(tls_context)
        await reader.read(1024)

    return handler
