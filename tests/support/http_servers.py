"""Loopback HTTP servers for the HTTP probe's tests that the lab has no equivalent of: an aiohttp
application that records what it received (headers, bodies), a runner for hand-written raw
handlers (framing edge cases no fault mode covers), and a tiny HTTP/2 server (h2 over TLS with
ALPN, or h2c with prior knowledge; the lab's servers speak HTTP/1.1 only).

Faults a user would inject (a slow first byte, a trickled body, a status, redirect chains and
loops, a reset or a close mid-body, garbage, a hang, an endless body) come from the lab:
otelprobe.lab.servers.http.HTTPFaultServer and otelprobe.lab.servers.raw.RawFaultServer.

Each server is an async context manager bound to 127.0.0.1 on an ephemeral port, and closes
everything it opened (the tests run with filterwarnings=error).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
from aiohttp import web
from hyperframe.frame import GoAwayFrame

from tests.support.tls_servers import serve

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Seen:
    """What the aiohttp app received, for assertions on the server side."""

    headers: list[dict[str, str]] = field(default_factory=list)


def make_app(seen: Seen) -> web.Application:
    """A healthy application: /ok (a short body and an X-Build header), /json, /echo (method and
    body back as JSON), and /redirect/{n}, a chain of dot-relative Locations (`../redirect/1`)
    where the lab's redirect chain sends path-absolute ones. Headers received go to `seen`."""

    async def ok(request: web.Request) -> web.Response:
        seen.headers.append(dict(request.headers))
        return web.Response(text="hello otelprobe", headers={"X-Build": "v1.2.3"})

    async def data(request: web.Request) -> web.Response:
        return web.json_response({"status": "up", "items": [{"id": 7}, {"id": 8}], "ok": True})

    async def redirect(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        target = "/ok" if left == 0 else f"../redirect/{left - 1}"  # relative Location
        raise web.HTTPFound(target)

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.headers.append(dict(request.headers))
        return web.Response(text=json.dumps({"method": request.method, "body": body.decode()}))

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/json", data)
    app.router.add_get("/redirect/{n}", redirect)
    app.router.add_route("*", "/echo", echo)
    return app


@contextlib.asynccontextmanager
async def serve_app(
    app: web.Application, ssl_context: ssl.SSLContext | None = None, hosts: tuple[str, ...] = ("127.0.0.1",)
) -> AsyncIterator[int]:
    """Serve `app` on every host in `hosts`, all on the same ephemeral port; yields the port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    try:
        first = web.TCPSite(runner, hosts[0], 0, ssl_context=ssl_context)
        await first.start()
        server = first._server
        assert isinstance(server, asyncio.Server)
        port = int(server.sockets[0].getsockname()[1])
        for host in hosts[1:]:
            await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
        yield port
    finally:
        await runner.cleanup()


def serve_raw(handler: RawHandler) -> contextlib.AbstractAsyncContextManager[int]:
    """A raw asyncio TCP server running `handler` per connection, each connection aborted when
    its handler returns; yields its port."""
    return serve(handler, abort=True)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


@dataclass
class H2Server:
    """HTTP/2 with the h2 package: over TLS (ALPN h2), or cleartext with prior knowledge (h2c) when
    `ssl_context` is None. Answers every request once its stream ends, after `delay_s`, with
    `body` in `chunks` DATA frames `chunk_pause_s` apart; `/redirect` answers 302 to `/final`,
    `/echo` answers the length of the request body. `fault` makes it misbehave instead:

    - "reset": RST_STREAM (CANCEL) on the request's stream instead of a response;
    - "reset_mid_body": the headers and first chunk, then RST_STREAM (INTERNAL_ERROR);
    - "goaway": GOAWAY (INTERNAL_ERROR) instead of a response, then close;
    - "goaway_refused": GOAWAY (NO_ERROR, last stream 0: the request was not processed), then close;
    - "goaway_graceful": GOAWAY (NO_ERROR, last stream 1), then the response as usual;
    - "early_413": 413 and RST_STREAM (NO_ERROR) as soon as the request's HEADERS arrive, without
      reading its body (nor opening the flow-control window for it).
    """

    ssl_context: ssl.SSLContext | None = None
    delay_s: float = 0.0
    body: bytes = b"hello over h2"
    chunks: int = 1
    chunk_pause_s: float = 0.0
    fault: str | None = None
    requests: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    whole_request_in_first_read: list[bool] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> H2Server:
        if self.ssl_context is not None:
            self.ssl_context.set_alpn_protocols(["h2"])
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())  # server SETTINGS go out before any request arrives
        paths: dict[int, str] = {}
        bodies: dict[int, bytearray] = {}
        reads = 0
        try:
            while data := await reader.read(65536):
                reads += 1
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        assert event.stream_id is not None
                        headers = {k.decode(): v.decode() for k, v in event.headers or []}
                        self.requests.append(headers)
                        paths[event.stream_id] = headers[":path"]
                        bodies[event.stream_id] = bytearray()
                        if self.fault == "early_413":
                            conn.send_headers(event.stream_id, [(":status", "413")], end_stream=True)
                            conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.NO_ERROR)
                            del paths[event.stream_id]
                    elif isinstance(event, h2.events.DataReceived) and event.stream_id in bodies:
                        assert event.stream_id is not None
                        conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
                        bodies[event.stream_id] += event.data or b""
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id in paths:
                        stream_id = event.stream_id
                        self.whole_request_in_first_read.append(reads == 1)
                        self.bodies.append(bytes(bodies[stream_id]))
                        path = paths.pop(stream_id)
                        if not await self._answer(conn, writer, stream_id, path, len(bodies[stream_id])):
                            return
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def _answer(
        self,
        conn: h2.connection.H2Connection,
        writer: asyncio.StreamWriter,
        stream_id: int,
        path: str,
        got: int,
    ) -> bool:
        """Answer one request; False when the connection is to be closed."""
        await asyncio.sleep(self.delay_s)
        if self.fault == "reset":
            conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            return True
        if self.fault in ("goaway", "goaway_refused"):
            code = (
                h2.errors.ErrorCodes.INTERNAL_ERROR
                if self.fault == "goaway"
                else h2.errors.ErrorCodes.NO_ERROR
            )
            conn.close_connection(code, last_stream_id=stream_id if self.fault == "goaway" else 0)
            writer.write(conn.data_to_send())
            await writer.drain()
            return False
        if self.fault == "goaway_graceful":
            # Written by hand: h2 stops sending on its side of a connection once it sent GOAWAY.
            writer.write(GoAwayFrame(0, last_stream_id=stream_id, error_code=0).serialize())
            await writer.drain()
            await asyncio.sleep(0.05)  # the response follows in its own segments
        if path == "/redirect":
            conn.send_headers(stream_id, [(":status", "302"), ("location", "/final")], end_stream=True)
            return True
        body = str(got).encode() if path == "/echo" else self.body
        conn.send_headers(stream_id, [(":status", "200"), ("content-length", str(len(body)))])
        size = -(-len(body) // self.chunks)
        for index in range(self.chunks):
            if index:
                await asyncio.sleep(self.chunk_pause_s)
            if self.fault == "reset_mid_body" and index:
                conn.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                return True
            conn.send_data(
                stream_id, body[index * size : (index + 1) * size], end_stream=index == self.chunks - 1
            )
            writer.write(conn.data_to_send())
            await writer.drain()
        return True
