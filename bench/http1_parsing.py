"""CPU of HTTP/1.1 framing per exchange: h11 (the replaced path) vs probes/http/http1_exchange.py.

One exchange = build and write the request, parse a typical small response (nginx-like head, a
1-byte body) and read its body through the `Response.body` generator as probes/http/probe.py
does. The stream is in memory and never suspends, so each exchange is run by driving its
coroutine directly: no event loop, no sockets, framing CPU only. A and B alternate, `--rounds`
each; the median µs per exchange is reported.

    .venv/bin/python bench/http1_parsing.py [--rounds 7] [--exchanges 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

import h11

from otelprobe.probes.http import http1_exchange
from otelprobe.probes.http.messages import URL, ByteStream, Request, Response

RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.24.0\r\n"
    b"Date: Tue, 04 Jun 2024 12:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 1\r\n"
    b"Last-Modified: Mon, 03 Jun 2024 08:30:00 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b'ETag: "665d7f18-1"\r\n'
    b"Accept-Ranges: bytes\r\n"
    b"\r\n"
    b"x"
)

REQUEST = Request(
    b"GET",
    URL(scheme="https", host="example.com", port=443, target=b"/health"),
    headers=[
        (b"Host", b"example.com"),
        (b"User-Agent", b"otelprobe/0.1.0"),
        (b"Accept", b"*/*"),
        (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ],
)


class MemoryStream:
    """Takes the request, then returns the whole response in one read and EOF after it."""

    def __init__(self) -> None:
        self._pending = RESPONSE
        self.response_started = False

    async def read(self, max_bytes: int) -> bytes:
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        self.response_started = True
        return data

    async def write(self, data: bytes) -> None:
        return None


async def h11_http11(stream: ByteStream, request: Request) -> Response:
    """The h11 framing this repository used before httptools (commit 6d75d6d), unchanged."""
    state = h11.Connection(h11.CLIENT, max_incomplete_event_size=100 * 1024)
    data = state.send(h11.Request(method=request.method, target=request.url.target, headers=request.headers))
    data += state.send(h11.EndOfMessage())
    await stream.write(data)
    while True:
        event = await _h11_next_event(stream, state)
        if isinstance(event, h11.Response):
            break
    return Response(
        event.status_code,
        event.headers.raw_items(),
        event.http_version.decode("ascii"),
        _h11_body(stream, state),
    )


async def _h11_body(stream: ByteStream, state: h11.Connection) -> AsyncGenerator[bytes, None]:
    while True:
        event = await _h11_next_event(stream, state)
        if isinstance(event, h11.Data):
            yield bytes(event.data)
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            return


async def _h11_next_event(stream: ByteStream, state: h11.Connection) -> object:
    while True:
        event = state.next_event()
        if event is not h11.NEED_DATA:
            return event
        state.receive_data(await stream.read(64 * 1024))


async def httptools_http11(stream: ByteStream, request: Request) -> Response:
    return await http1_exchange._http11(stream, request)


Framer = Callable[[ByteStream, Request], Coroutine[Any, Any, Response]]


async def one_exchange(framer: Framer) -> int:
    response = await framer(MemoryStream(), REQUEST)
    size = 0
    async for chunk in response.body:
        size += len(chunk)
    await response.body.aclose()
    return size


def run_sync(coroutine: Coroutine[Any, Any, int]) -> int:
    """Run a coroutine that never suspends (the memory stream never waits)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return int(done.value)
    raise RuntimeError("the exchange suspended")


def us_per_exchange(framer: Framer, exchanges: int) -> float:
    started = time.perf_counter()
    for _ in range(exchanges):
        run_sync(one_exchange(framer))
    return (time.perf_counter() - started) / exchanges * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--exchanges", type=int, default=20_000)
    args = parser.parse_args()
    framers: dict[str, Framer] = {"h11": h11_http11, "httptools": httptools_http11}
    for framer in framers.values():
        assert run_sync(one_exchange(framer)) == 1
        us_per_exchange(framer, 1000)  # warm up
    results: dict[str, list[float]] = {name: [] for name in framers}
    for _ in range(args.rounds):
        for name, framer in framers.items():
            results[name].append(us_per_exchange(framer, args.exchanges))
    for name, values in results.items():
        runs = " ".join(f"{v:.1f}" for v in values)
        print(f"{name:9s} median {statistics.median(values):6.1f} us/exchange  (runs: {runs})")
    ratio = statistics.median(results["h11"]) / statistics.median(results["httptools"])
    print(f"h11 / httptools: {ratio:.1f}x")


if __name__ == "__main__":
    main()
