"""HTTP targets that misbehave on purpose (issue 11): each is a classified failure (DESIGN §4)
within the probe's deadline, whatever the server does with the response head.

Raw asyncio servers on loopback: slowloris headers (one byte per 100 ms), endless header lines,
a 10 MB header, absurd Content-Length values, and hostile redirect Location headers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from otelprobe.errors import ERROR_TYPES
from otelprobe.results import ProbeResult
from tests.support.http_probing import probe_once
from tests.support.http_servers import read_request, serve_raw

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
TIMEOUT_S = 1.5
SLACK_S = 1.0  # a loaded 2-core machine


async def _probe(handler: Handler, path: str = "/", **options: object) -> ProbeResult:
    async with serve_raw(handler) as port:
        started = asyncio.get_running_loop().time()
        result = await probe_once(f"http://127.0.0.1:{port}{path}", timeout=f"{TIMEOUT_S}s", **options)
        elapsed = asyncio.get_running_loop().time() - started
    assert elapsed < TIMEOUT_S + SLACK_S, f"took {elapsed:.2f} s"
    assert result.error is not None, "a misbehaving server made a successful probe"
    assert result.error.error_type in ERROR_TYPES
    return result


async def _write_slowly(writer: asyncio.StreamWriter, data: bytes, pause_s: float) -> None:
    for index in range(len(data)):
        writer.write(data[index : index + 1])
        await writer.drain()
        await asyncio.sleep(pause_s)


async def slowloris_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Slow-%d: yes\r\n" % i for i in range(100)) + b"\r\n"
    await _write_slowly(writer, head, 0.1)


async def endless_header_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\n")
    with contextlib.suppress(ConnectionError):
        for index in range(1_000_000):  # bounded: the client hangs up long before
            writer.write(b"X-Line-%d: more\r\n" % index)
            if index % 1000 == 0:
                await writer.drain()


async def ten_megabyte_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * 10_000_000 + b"\r\n\r\nok")
    with contextlib.suppress(ConnectionError):
        await writer.drain()


def content_length(value: bytes, body: bytes = b"short", *, close: bool = True) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\n" + body)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(10)  # cancelled when the server closes

    return handler


@pytest.mark.parametrize(
    ("handler", "error_type", "detail"),
    [
        # The first byte ends http.ttfb: a head that trickles in times out in http.transfer.
        (slowloris_head, "timeout", "deadline_exceeded_in_http_transfer"),
        (endless_header_lines, "protocol_error", "malformed_response"),
        (ten_megabyte_header, "protocol_error", "malformed_response"),
    ],
    ids=["slowloris", "endless-header-lines", "10MB-header"],
)
async def test_a_hostile_response_head_is_classified_within_the_deadline(
    handler: Handler, error_type: str, detail: str
) -> None:
    result = await _probe(handler)
    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == (error_type, detail), result.error


@pytest.mark.parametrize(
    ("handler", "error_type"),
    [
        (content_length(b"99999999999999999999999999999999"), "protocol_error"),
        (content_length(b"18446744073709551616"), "protocol_error"),
        (content_length(b"-1"), "protocol_error"),
        (content_length(b"1e9"), "protocol_error"),
        (content_length(b"5, 6"), "protocol_error"),
        (content_length(b"1000000000000", close=False), "timeout"),
        (content_length(b"1000000000000", body=b"x" * 100_000), "protocol_error"),
    ],
    ids=["2^100", "2^64", "negative", "float", "list", "never-sent", "closed-early"],
)
async def test_an_absurd_content_length_is_classified_within_the_deadline(
    handler: Handler, error_type: str
) -> None:
    result = await _probe(handler)
    assert result.error is not None
    assert result.error.error_type == error_type, result.error


def redirect_to(location: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(10)

    return handler


HOSTILE_LOCATIONS = {
    "ftp": b"ftp://127.0.0.1/file",
    "javascript": b"javascript:alert(1)",
    "file": b"file:///etc/passwd",
    "data": b"data:text/html,hi",
    "no-host": b"http:///path",
    "broken-bracket": b"http://[::1/x",
    "port-out-of-range": b"http://127.0.0.1:99999/",
    "port-not-a-number": b"http://127.0.0.1:x/",
    "port-zero": b"http://127.0.0.1:0/",
    "control-byte": b"/next\x01hop",
    "escape-sequence": b"/\x1b[2Jcleared",
    "c1-control": b"/a\x85b",
    "space": b"/a b",
    "absurd-length": b"/" + b"a" * 100_000,
    "label-too-long": b"http://" + b"a" * 64 + b".invalid/",
    "empty-label": b"http://a..b.invalid/",
    "numeric-tld": b"http://1.2.3.999/",
    "empty": b"",
}


@pytest.mark.parametrize("location", sorted(HOSTILE_LOCATIONS))
async def test_a_hostile_location_is_an_invalid_redirect(location: str) -> None:
    result = await _probe(redirect_to(HOSTILE_LOCATIONS[location]))
    assert result.error is not None
    assert (result.error.error_type, result.error.detail) in {
        ("protocol_error", "invalid_redirect"),
        ("protocol_error", "malformed_response"),  # bytes llhttp itself refuses in a header
    }, result.error
    assert len(result.error.message) < 300
    assert "\x1b" not in result.error.message and "\x01" not in result.error.message


async def test_a_location_with_credentials_is_followed_but_never_shown() -> None:
    async def final(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if b"GET /final" in request:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        else:
            port = writer.get_extra_info("sockname")[1]
            writer.write(
                b"HTTP/1.1 302 Found\r\nLocation: http://user:pw-9f3e@127.0.0.1:%d/final?token=tok-77a1\r\n"
                b"Content-Length: 0\r\n\r\n" % port
            )
        await writer.drain()
        writer.close()

    async with serve_raw(final) as port:
        result = await probe_once(f"http://127.0.0.1:{port}/start", timeout="2s")
    assert result.success, result.error
    shown = repr(result.attributes)
    assert "pw-9f3e" not in shown and "tok-77a1" not in shown
