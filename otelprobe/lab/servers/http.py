"""An aiohttp HTTP(S) server whose misbehaviour is set while it runs: slow first byte, trickled
body, 5xx, reset mid-body, wrong content, redirect chains and loops, hanging requests.

Faults come from two places. `apply()` turns on a fault from lab/faults.py for every request
(a scenario switches faults on and off this way); query parameters set one for a single request
(tests and `otelprobe probe` use them: `/?ttfb=200ms&size=64KiB&trickle=8KiB`). See `QUERY_KEYS`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import random
import socket
import ssl
import struct
import termios
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

from aiohttp import web
from multidict import MultiMapping

from otelprobe.lab.faults import (
    Hang,
    HTTP5xx,
    RedirectChain,
    ResetMidBody,
    TrickleBody,
    TTFBDelay,
    WrongContent,
)
from otelprobe.lab.servers._lifecycle import LabServer
from otelprobe.settings.durations import parse_duration, parse_size

logger = logging.getLogger(__name__)

HTTPFault = TTFBDelay | TrickleBody | HTTP5xx | ResetMidBody | WrongContent | RedirectChain | Hang
"""The faults this server injects."""

LAB_BODY_LINE: Final = b"otelprobe-lab ok\n"
"""The healthy body repeats this line; content assertions look for it."""

QUERY_KEYS: Final[Mapping[str, str]] = {
    "ttfb": "delay before the response starts, e.g. 200ms",
    "size": "body size, e.g. 64KiB (default: the server's body_size)",
    "trickle": "body rate in bytes per second, e.g. 8KiB",
    "chunk": "trickle chunk size (default 1024)",
    "status": "answer with this status code",
    "reset_after": "reset (RST) the connection after this many body bytes",
    "close_after": "close the connection (FIN) after this many body bytes, short of the Content-Length",
    "wrong": "1: serve a body without the expected content",
    "redirects": "redirect this many times before answering",
    "redirect_loop": "1: redirect forever",
    "hang": "1: never answer",
    "coalesce": "1: headers and body in one write; 0: headers first",
}
_HOP: Final = "lab_hop"
"""Query key carrying a redirect's position in its chain."""
_RESET_FLUSH_TIMEOUT_S: Final = 2.0


def lab_body(size: int, line: bytes = LAB_BODY_LINE) -> bytes:
    """`size` bytes of `line` repeated: a healthy lab body, or a wrong one with another line."""
    return (line * (size // len(line) + 1))[:size]


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    """Everything one response will do, decided before any byte is written."""

    status: int = 200
    ttfb_delay_s: float = 0.0
    body: bytes = b""
    coalesce: bool = False
    trickle_bytes_per_s: float | None = None
    trickle_chunk: int = 1024
    reset_after: int | None = None
    close_after: int | None = None
    location: str | None = None
    hang: bool = False


class BadQuery(ValueError):
    """A per-request fault parameter could not be parsed (answered with 400)."""


def _flag(query: MultiMapping[str], key: str) -> bool:
    return query.get(key, "0").lower() in {"1", "true", "yes"}


def _redirect_location(path: str, query: MultiMapping[str], hop: int) -> str:
    kept = [f"{k}={v}" for k, v in query.items() if k != _HOP]
    return f"{path}?{'&'.join([*kept, f'{_HOP}={hop}'])}"


def plan_response(
    faults: Mapping[str, HTTPFault],
    path: str,
    query: MultiMapping[str],
    rng: random.Random,
    body_size: int,
    coalesce: bool,
) -> ResponsePlan:
    """Decide one response from the active faults, then let the query override them.

    Raises:
        BadQuery: a query parameter has a value that does not parse.
    """
    plan = ResponsePlan(body=b"", coalesce=coalesce)
    size, body_line = body_size, LAB_BODY_LINE

    def hits(fault: TTFBDelay | TrickleBody | ResetMidBody | WrongContent | RedirectChain | Hang) -> bool:
        return fault.probability >= 1.0 or rng.random() < fault.probability

    try:
        hop = int(query.get(_HOP, "0"))
        if (f := faults.get("ttfb_delay")) is not None and isinstance(f, TTFBDelay) and hits(f):
            plan = replace(plan, ttfb_delay_s=f.sample_delay(rng))
        if (f := faults.get("trickle_body")) is not None and isinstance(f, TrickleBody) and hits(f):
            plan = replace(plan, trickle_bytes_per_s=float(f.rate_bytes_per_s), trickle_chunk=f.chunk_bytes)
        if (f := faults.get("reset_mid_body")) is not None and isinstance(f, ResetMidBody) and hits(f):
            plan = replace(plan, reset_after=f.after_bytes)
        if (f := faults.get("wrong_content")) is not None and isinstance(f, WrongContent) and hits(f):
            body_line = f.body.encode()
        if (f := faults.get("hang")) is not None and isinstance(f, Hang) and hits(f):
            plan = replace(plan, hang=True)
        redirect = faults.get("redirect_chain")
        if isinstance(redirect, RedirectChain) and (hop > 0 or hits(redirect)):
            if redirect.loop or hop < redirect.hops:
                next_hop = (2 if hop == 1 else 1) if redirect.loop else hop + 1
                plan = replace(
                    plan, status=redirect.status, location=_redirect_location(path, query, next_hop)
                )
        error = faults.get("http_5xx")
        if isinstance(error, HTTP5xx) and error.rate > 0 and rng.random() < error.rate:
            plan = replace(plan, status=error.status)

        # Per-request query parameters win over the server-wide faults.
        if "ttfb" in query:
            plan = replace(plan, ttfb_delay_s=parse_duration(query["ttfb"]))
        if "size" in query:
            size = parse_size(query["size"])
        if "trickle" in query:
            plan = replace(plan, trickle_bytes_per_s=float(parse_size(query["trickle"])))
        if "chunk" in query:
            plan = replace(plan, trickle_chunk=max(1, parse_size(query["chunk"])))
        if "reset_after" in query:
            plan = replace(plan, reset_after=parse_size(query["reset_after"]))
        if "close_after" in query:
            plan = replace(plan, close_after=parse_size(query["close_after"]))
        if _flag(query, "wrong"):
            body_line = WrongContent().body.encode()
        if _flag(query, "hang"):
            plan = replace(plan, hang=True)
        if "coalesce" in query:
            plan = replace(plan, coalesce=_flag(query, "coalesce"))
        if _flag(query, "redirect_loop"):
            plan = replace(plan, status=302, location=_redirect_location(path, query, 2 if hop == 1 else 1))
        elif "redirects" in query and hop < int(query["redirects"]):
            plan = replace(plan, status=302, location=_redirect_location(path, query, hop + 1))
        if "status" in query:
            plan = replace(plan, status=int(query["status"]))
    except ValueError as exc:
        raise BadQuery(str(exc)) from exc
    if plan.trickle_bytes_per_s is not None and plan.trickle_bytes_per_s <= 0:
        raise BadQuery("trickle rate must be positive")
    if plan.location is not None or plan.status >= 300:
        body = b"" if plan.location is not None else f"lab injected {plan.status}\n".encode()
        return replace(plan, body=body)
    return replace(plan, body=lab_body(size, body_line))


class HTTPFaultServer(LabServer):
    """The lab's HTTP(S) server on `host:port` (port 0 picks a free one).

    Args:
        ssl_context: serve HTTPS with this context (see lab/certs.py); None serves plain HTTP.
        body_size: bytes in a healthy body unless a request asks for `size`.
        coalesce: write headers and body in one write (True) or headers first (False, default),
            LAB-NOTES pitfall 4: the two give different first-byte times on a slow link.
        seed: seeds the Random that decides probabilistic faults, for reproducible scenarios.
        think_spike_rate: share of requests on which the backend stalls (garbage collection, a
            cold cache, a lock): background noise on top of any fault, not a fault itself.
        think_spike_s: a stall's mean length; each is drawn between 0.5x and 1.5x of it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        body_size: int = 1024,
        coalesce: bool = False,
        seed: int | None = None,
        max_hang_s: float = 300.0,
        think_spike_rate: float = 0.0,
        think_spike_s: float = 0.2,
    ) -> None:
        self.host, self._port = host, port
        self.think_spike_rate, self.think_spike_s = think_spike_rate, think_spike_s
        self._ssl_context = ssl_context
        self.body_size, self.coalesce = body_size, coalesce
        self.max_hang_s = max_hang_s
        self._rng = random.Random(seed)
        self._faults: dict[str, HTTPFault] = {}
        self._runner: web.AppRunner | None = None
        self.statuses: collections.Counter[int] = collections.Counter()
        """Responses started, by status code (0 for a hang that was never answered)."""
        self.think_spikes = 0
        """Requests the backend stalled on (`think_spike_rate`)."""

    # --- fault state -------------------------------------------------------------------------

    def apply(self, fault: HTTPFault) -> None:
        """Turn on `fault` for every following request (replacing one of the same kind)."""
        logger.info("http fault on: %s", fault)
        self._faults[fault.kind] = fault

    def clear(self, kind: str | None = None) -> None:
        """Turn off the fault of `kind`, or every fault."""
        if kind is None:
            self._faults.clear()
        else:
            self._faults.pop(kind, None)

    @property
    def active(self) -> Mapping[str, HTTPFault]:
        return dict(self._faults)

    # --- life cycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("server not started")
        return int(self._runner.addresses[0][1])

    @property
    def scheme(self) -> str:
        return "https" if self._ssl_context is not None else "http"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that gives up on a hanging request frees its handler.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port, ssl_context=self._ssl_context)
        await site.start()
        logger.info("http fault server on %s", self.url)

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- serving -----------------------------------------------------------------------------

    def _think_spike_s(self) -> float:
        if self.think_spike_rate <= 0 or self._rng.random() >= self.think_spike_rate:
            return 0.0
        self.think_spikes += 1
        return self.think_spike_s * self._rng.uniform(0.5, 1.5)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            plan = plan_response(
                self._faults, request.path, request.query, self._rng, self.body_size, self.coalesce
            )
        except BadQuery as exc:
            self.statuses[400] += 1
            return web.Response(status=400, text=f"bad lab parameter: {exc}\n")
        delay_s = plan.ttfb_delay_s + self._think_spike_s()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        if plan.hang:
            self.statuses[0] += 1
            await asyncio.sleep(self.max_hang_s)
            raise web.HTTPGatewayTimeout(text="lab hang ended\n")
        self.statuses[plan.status] += 1
        headers = {"Content-Type": "text/plain", "Cache-Control": "no-store"}
        if plan.location is not None:
            headers["Location"] = plan.location
        cut = plan.reset_after if plan.reset_after is not None else plan.close_after
        streamed = plan.trickle_bytes_per_s is not None or cut is not None
        if plan.coalesce and not streamed:
            return web.Response(status=plan.status, body=plan.body, headers=headers)
        response = web.StreamResponse(status=plan.status, headers=headers)
        response.content_length = len(plan.body)
        await response.prepare(request)  # sends the headers now: headers first
        body = plan.body if cut is None else plan.body[:cut]
        if plan.trickle_bytes_per_s is not None:
            await _trickle(response, body, plan.trickle_bytes_per_s, plan.trickle_chunk)
        elif body:
            await response.write(body)
        if plan.reset_after is not None and plan.reset_after < len(plan.body):
            await _reset(request)
            return response
        if plan.close_after is not None and plan.close_after < len(plan.body):
            if request.transport is not None:
                request.transport.close()  # flushes what was written, then FIN
            return response
        await response.write_eof()
        return response


async def _trickle(response: web.StreamResponse, body: bytes, rate: float, chunk: int) -> None:
    """Write `body` so that byte n leaves at n / rate seconds after the headers.

    Chunk deadlines come from one start time, so sleep overshoot does not accumulate.
    """
    start = time.monotonic()
    for offset in range(0, len(body), chunk):
        piece = body[offset : offset + chunk]
        wait = start + (offset + len(piece)) / rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await response.write(piece)


async def _reset(request: web.Request) -> None:
    """Abort the connection with RST once what was written has reached the peer.

    SO_LINGER 0 makes close() send RST and discard unsent data, so first wait (bounded) until
    the kernel send queue is empty; otherwise the reset would come before the promised bytes.
    """
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        deadline = time.monotonic() + _RESET_FLUSH_TIMEOUT_S
        while transport.get_write_buffer_size() > 0 or _unsent_bytes(sock) > 0:
            if time.monotonic() > deadline:
                logger.warning("reset_mid_body: send queue did not drain; resetting anyway")
                break
            await asyncio.sleep(0.001)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _unsent_bytes(sock: socket.socket) -> int:
    """Bytes in the kernel send queue not yet acknowledged (SIOCOUTQ); 0 where unsupported."""
    with contextlib.suppress(OSError):
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        return int(struct.unpack("i", buf)[0])
    return 0
