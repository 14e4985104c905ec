"""The HTTP probe's own request and response: what one hop sends and what it gets back.

probes/http/probe.py builds a `Request` per hop; probes/http/http1_exchange.py and
http2_exchange.py frame it over a `ByteStream` (backend.TimedStream) and return a `Response`
whose body is still to be read. Bytes wherever they go on the wire as they are.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

Headers = Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class URL:
    """Where a request goes: the origin to connect to and the request-target to ask for."""

    scheme: str  # "http" or "https"
    host: str  # ASCII (an IDN as its A-label), IPv6 without brackets
    port: int  # explicit or the scheme's default
    target: bytes  # path and query, percent-encoded: printable ASCII only


@dataclass(frozen=True, slots=True)
class Request:
    """One request of one hop; `headers` include Host (HTTP/2 sends it as :authority)."""

    method: bytes
    url: URL
    headers: Headers
    content: bytes | None = None
    sni_hostname: str | None = None  # the TLS server name when it is not `url.host`


@dataclass(frozen=True, slots=True)
class Response:
    """The final response's head; `body` yields the body as it arrives (close it when done)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    http_version: str  # "1.0", "1.1" or "2"
    body: AsyncGenerator[bytes, None]


class ByteStream(Protocol):
    """The connection a request is framed over (backend.TimedStream; an in-memory one in benches)."""

    @property
    def response_started(self) -> bool:
        """Whether the first byte of the response has arrived (a close then cuts the body short)."""
        ...

    async def read(self, max_bytes: int) -> bytes: ...

    async def write(self, data: bytes) -> None: ...
