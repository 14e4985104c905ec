"""STARTTLS negotiation for SMTP (RFC 3207), IMAP (RFC 2595) and POP3 (RFC 2595).

The tcp probe (probes/tcp/probe.py) runs `negotiate` as the `starttls.negotiate` phase, from the first
banner byte awaited to the server's go-ahead; the TLS handshake that follows is its own phase.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from otelprobe.errors import ProtocolError
from otelprobe.net.stream import BufferedConnection

StartTLSProtocol = Literal["smtp", "imap", "pop3"]


@dataclass(frozen=True, slots=True)
class _Step:
    send: bytes | None
    expect: re.Pattern[bytes]
    refuse: re.Pattern[bytes]
    """A reply that means the server will not go on (checked when `expect` matched nothing)."""


# Multi-line SMTP replies end with the line whose code is followed by a space.
_SMTP_FINAL: Final = re.compile(rb"(?m)^(\d{3}) [^\r\n]*\r?\n")

_SCRIPTS: Final[dict[str, tuple[_Step, ...]]] = {
    "smtp": (
        _Step(None, re.compile(rb"(?m)^220 [^\r\n]*\r?\n"), re.compile(rb"(?m)^[45]\d\d [^\r\n]*\r?\n")),
        _Step(b"EHLO otelprobe\r\n", re.compile(rb"(?m)^250 [^\r\n]*\r?\n"), _SMTP_FINAL),
        _Step(b"STARTTLS\r\n", re.compile(rb"(?m)^220 [^\r\n]*\r?\n"), _SMTP_FINAL),
    ),
    "imap": (
        _Step(
            None, re.compile(rb"(?m)^\* OK[^\r\n]*\r?\n"), re.compile(rb"(?m)^\* (NO|BAD|BYE)[^\r\n]*\r?\n")
        ),
        _Step(
            b"a1 STARTTLS\r\n",
            re.compile(rb"(?m)^a1 OK[^\r\n]*\r?\n"),
            re.compile(rb"(?m)^a1 (NO|BAD)[^\r\n]*\r?\n"),
        ),
    ),
    "pop3": (
        _Step(None, re.compile(rb"^\+OK[^\r\n]*\r?\n"), re.compile(rb"^-ERR[^\r\n]*\r?\n")),
        _Step(b"STLS\r\n", re.compile(rb"^\+OK[^\r\n]*\r?\n"), re.compile(rb"^-ERR[^\r\n]*\r?\n")),
    ),
}


async def negotiate(stream: BufferedConnection, protocol: StartTLSProtocol) -> None:
    """Drive the plaintext exchange up to the go-ahead for TLS; ProtocolError if refused."""
    for step in _SCRIPTS[protocol]:
        if step.send is not None:
            await stream.conn.write(step.send)
        await _await_reply(stream, step, protocol)
    if stream.take_pending():
        # Bytes after the go-ahead would be injected into the TLS stream (CVE-2011-0411 class).
        raise ProtocolError("starttls_injection", f"{protocol} server sent data after the STARTTLS go-ahead")


async def _await_reply(stream: BufferedConnection, step: _Step, protocol: str) -> None:
    while True:
        match = step.expect.search(stream.buffer)
        if match is not None:
            del stream.buffer[: match.end()]
            return
        refused = step.refuse.search(stream.buffer)
        if refused is not None and not step.expect.search(refused.group(0)):
            reply = refused.group(0).decode("utf-8", "replace").strip()
            raise ProtocolError("starttls_refused", f"{protocol} server refused: {reply}")
        try:
            await stream.read_more("the STARTTLS exchange")
        except ProtocolError as exc:
            raise ProtocolError(
                "starttls_eof", f"{protocol} server closed the connection during STARTTLS"
            ) from exc
