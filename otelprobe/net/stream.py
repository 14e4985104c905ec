"""Buffered reads over a TimedConnection: exact lengths and delimiters.

Used by the line-oriented dialogues of the dns (TCP framing, DoH over HTTP/1.1) and tcp (send /
expect, STARTTLS) kinds; the connection underneath still stamps every socket read.
"""

from __future__ import annotations

from otelprobe.errors import ProtocolError
from otelprobe.net.connection import TimedConnection

_MAX_BUFFER = 1 << 20


class BufferedConnection:
    """Reads from a TimedConnection into a buffer; `conn` stays usable for writes and TLS."""

    def __init__(self, conn: TimedConnection) -> None:
        self.conn = conn
        self.buffer = bytearray()

    async def read_more(self, what: str = "data") -> None:
        """Append the next chunk to `buffer`; ProtocolError unexpected_eof at end of stream."""
        data = await self.conn.read()
        if not data:
            raise ProtocolError("unexpected_eof", f"connection closed while reading {what}")
        self.buffer.extend(data)
        if len(self.buffer) > _MAX_BUFFER:
            raise ProtocolError("response_too_large", f"more than {_MAX_BUFFER} bytes while reading {what}")

    async def read_exactly(self, n: int, what: str = "data") -> bytes:
        while len(self.buffer) < n:
            await self.read_more(what)
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read_until(self, delimiter: bytes, what: str = "data") -> bytes:
        """Everything up to and including `delimiter`."""
        while (index := self.buffer.find(delimiter)) < 0:
            await self.read_more(what)
        end = index + len(delimiter)
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    def take_pending(self) -> bytes:
        """Bytes already read but not consumed (must be empty before a STARTTLS upgrade)."""
        data = bytes(self.buffer)
        self.buffer.clear()
        return data
