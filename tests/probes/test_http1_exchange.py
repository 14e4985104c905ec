"""HTTP/1.1 framing of the HTTP probe (probes/http/http1_exchange.py) against raw loopback servers.

Each server answers with canned bytes, so the edge cases of response framing (HEAD, 204/304,
1xx, chunked trailers, close-delimited bodies, oversized heads) and of request building are
exercised through the probe as a user sees them: status, headers, body, error detail.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from otelprobe import names
from otelprobe.probes.http import http1_exchange
from otelprobe.results import ProbeResult
from tests.support.http_probing import probe_once
from tests.support.http_servers import RawHandler, read_request, serve_raw


def canned(response: bytes, *, close: bool, requests: list[bytes] | None = None) -> RawHandler:
    """A server that answers every request with `response`, then closes or keeps the connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader)
        except asyncio.IncompleteReadError:
            return  # the client sent nothing (an invalid request is refused before it is sent)
        if requests is not None:
            requests.append(request)
        writer.write(response)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(30)  # cancelled when the server closes; the client must not wait

    return handler


async def probe_canned(response: bytes, *, close: bool = False, **options: Any) -> ProbeResult:
    async with serve_raw(canned(response, close=close)) as port:
        return await probe_once(f"http://127.0.0.1:{port}/", **options)


def assert_ok(result: ProbeResult, status: int, body_bytes: int) -> None:
    assert result.error is None, result.error
    assert result.attributes[names.HTTP_RESPONSE_STATUS_CODE] == status
    assert result.attributes[names.PROBE_BODY_BYTES] == body_bytes
    assert result.duration_s < 1.0  # nothing waited for a body that never comes


# --- bodies that are not there -----------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody",  # sent anyway: not the response's
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["content-length", "body-sent-anyway", "chunked"],
)
async def test_head_response_has_no_body_whatever_its_headers(response: bytes) -> None:
    result = await probe_canned(response, method="HEAD")

    assert_ok(result, 200, 0)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        b'HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: "x"\r\n\r\n',
    ],
)
async def test_204_and_304_have_no_body(response: bytes) -> None:
    status = int(response[9:12])
    result = await probe_canned(response, expect={"status": [status]})

    assert_ok(result, status, 0)


async def test_101_is_the_response_and_what_follows_is_not_a_body() -> None:
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00"
    )
    result = await probe_canned(response, expect={"status": [101]})

    assert_ok(result, 101, 0)


# --- heads ---------------------------------------------------------------------------------------


async def test_informational_responses_are_skipped_with_their_headers() -> None:
    response = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nhello"
    )
    result = await probe_canned(response, expect={"headers": {"X-Final": "^yes$"}, "body_regex": ["^hello$"]})
    assert_ok(result, 200, 5)

    only_early = await probe_canned(response, expect={"headers": {"Link": "preload"}})
    assert only_early.error is not None
    assert only_early.error.detail == "header_missing"


async def test_header_values_lose_surrounding_whitespace_as_with_h11() -> None:
    response = b"HTTP/1.1 200 OK\r\nX-Build:  v1 \t\r\nContent-Length: 0\r\n\r\n"
    result = await probe_canned(response, expect={"headers": {"X-Build": "^v1$"}})

    assert_ok(result, 200, 0)


@pytest.mark.parametrize(
    ("version", "expected"), [(b"HTTP/1.1", "1.1"), (b"HTTP/1.0", "1.0")], ids=["1.1", "1.0"]
)
async def test_protocol_version_from_the_status_line(version: bytes, expected: str) -> None:
    result = await probe_canned(version + b" 200 OK\r\nContent-Length: 0\r\n\r\n")

    assert_ok(result, 200, 0)
    assert result.attributes[names.NETWORK_PROTOCOL_VERSION] == expected


async def test_a_head_with_bare_lf_line_ends_is_read_as_h11_did() -> None:
    response = b"HTTP/1.1 200 OK\nX-Build: v1\nContent-Length: 2\n\nok"
    result = await probe_canned(response, expect={"headers": {"X-Build": "^v1$"}, "body_regex": ["^ok$"]})

    assert_ok(result, 200, 2)


async def test_a_head_that_never_ends_fails_at_the_bound() -> None:
    sent = [0]

    async def endless_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for index in range(200_000):  # bounded: 5 MB at most, the client gives up after 100 KiB
            line = b"X-Filler-%d: %s\r\n" % (index, b"f" * 10)
            writer.write(line)
            sent[0] += len(line)
            await writer.drain()

    async with serve_raw(endless_head) as port:
        result = await probe_once(f"http://127.0.0.1:{port}/")

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("protocol_error", "malformed_response")
    assert "longer than 102400 bytes" in result.error.message
    assert 100 * 1024 < sent[0] < 5_000_000


async def test_a_status_below_100_is_malformed() -> None:
    result = await probe_canned(b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n")

    assert result.error is not None
    assert result.error.detail == "malformed_response"


async def test_data_after_the_response_is_ignored() -> None:
    response = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nokSSH-2.0 garbage\r\n\r\n"
    result = await probe_canned(response, close=True, expect={"body_regex": ["^ok$"]})

    assert_ok(result, 200, 2)


# --- bodies --------------------------------------------------------------------------------------


CHUNKED_WITH_TRAILERS = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
)


async def test_chunked_body_with_trailers() -> None:
    result = await probe_canned(CHUNKED_WITH_TRAILERS, expect={"body_regex": ["^hello, world$"]})
    assert_ok(result, 200, 12)

    trailer_as_header = await probe_canned(CHUNKED_WITH_TRAILERS, expect={"headers": {"X-Checksum": "abc"}})
    assert trailer_as_header.error is not None
    assert trailer_as_header.error.detail == "header_missing"


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",  # not chunked: runs to the close
    ],
    ids=["no-length", "http1.0", "transfer-encoding-not-chunked"],
)
async def test_body_delimited_by_the_close(head: bytes) -> None:
    result = await probe_canned(
        head + b"until the end", close=True, expect={"body_regex": ["^until the end$"]}
    )

    assert_ok(result, 200, 13)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhalf",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["content-length", "chunked-no-chunk", "chunked-mid-chunk", "chunked-no-last-chunk"],
)
async def test_close_before_the_end_of_a_framed_body_is_incomplete(response: bytes) -> None:
    result = await probe_canned(response, close=True)

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("protocol_error", "incomplete_body")


async def test_close_mid_head_is_a_disconnect_after_the_response_started() -> None:
    result = await probe_canned(b"HTTP/1.1 200 OK\r\nContent-Le", close=True)

    assert result.error is not None
    assert result.error.detail == "incomplete_body"  # as with h11: bytes of the response had arrived


@pytest.mark.parametrize(
    ("response", "options", "status", "body_bytes"),
    [
        (CHUNKED_WITH_TRAILERS, {"expect": {"body_regex": ["^hello, world$"]}}, 200, 12),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b \r\n\r\nabc",
            {"expect": {"body_regex": ["^abc$"], "headers": {"X-A": "^b$"}}},
            200,
            3,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", {"method": "HEAD"}, 200, 0),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", {"expect": {"status": [304]}}, 304, 0),
    ],
    ids=["chunked-trailers", "1xx-content-length", "head", "304"],
)
async def test_response_read_one_byte_at_a_time(
    monkeypatch: pytest.MonkeyPatch, response: bytes, options: dict[str, Any], status: int, body_bytes: int
) -> None:
    monkeypatch.setattr(http1_exchange, "_READ_SIZE", 1)
    result = await probe_canned(response, **options)

    assert_ok(result, status, body_bytes)


# --- requests ------------------------------------------------------------------------------------


async def test_request_bytes_on_the_wire() -> None:
    requests: list[bytes] = []
    handler = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", close=True, requests=requests)
    async with serve_raw(handler) as port:
        result = await probe_once(
            f"http://127.0.0.1:{port}/a/b?q=1&r=%20",
            headers={"X-Token": "t0k3n"},
            propagate_trace_context=False,
        )

    assert result.error is None, result.error
    [request] = requests
    lines = request.split(b"\r\n")
    assert lines[0] == b"GET /a/b?q=1&r=%20 HTTP/1.1"
    assert lines[1] == b"Host: 127.0.0.1:%d" % port
    assert b"X-Token: t0k3n" in lines
    assert request.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Injected": "s3cr3t\r\nX-Evil: 1"},
        {"X-Newline": "s3cr3t\nb"},
        {"X-Nul": "s3cr3t\x00b"},
        {"X Bad Name": "s3cr3t"},
        {"X-Colon:": "s3cr3t"},
    ],
    ids=["crlf", "lf", "nul", "space-in-name", "colon-in-name"],
)
async def test_invalid_request_header_is_a_local_protocol_error(headers: dict[str, str]) -> None:
    requests: list[bytes] = []
    handler = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", close=True, requests=requests)
    async with serve_raw(handler) as port:
        result = await probe_once(f"http://127.0.0.1:{port}/", headers=headers)

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("protocol_error", "local_protocol_error")
    assert "s3cr3t" not in result.error.message  # header values may be secrets
    assert requests == []  # nothing was sent
