"""Body checks see the body with its Content-Encoding undone: real loopback servers that send
gzip, deflate (zlib-wrapped and raw), stacked, unknown and corrupt bodies, and a bomb."""

from __future__ import annotations

import gzip
import importlib.util
import struct
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from otelprobe.errors import ProtocolError
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.probes.http.content_coding import content_codings, decode_body
from otelprobe.probes.http.probe import HTTPProbe
from otelprobe.results import ProbeResult
from tests.support.http_servers import serve_app

CTX = ProbeContext(vantage="test")
TEXT = b'{"status": "up", "note": "' + b"compressible " * 200 + b'"}'
HAS_BROTLI = importlib.util.find_spec("brotli") is not None


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def gzip_zeros(mib: int) -> bytes:
    """`mib` MiB of zeros, gzipped (~1 KB per MiB) in ~50 ms instead of compressing them all:
    after a full flush every MiB of zeros compresses to the same bytes, so one is repeated."""
    zeros = bytes(1 << 20)
    compressor = zlib.compressobj(9, wbits=16 + zlib.MAX_WBITS)
    head = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    segment = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush(zlib.Z_FINISH)[:-8]  # the final block, without the 2 MiB trailer
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    return head + segment * (mib - 1) + end + struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)


BOMB = gzip_zeros(100)
GZIPPED = gzip.compress(TEXT)

# name -> (Content-Encoding, body on the wire)
BODIES: dict[str, tuple[str, bytes]] = {
    "gzip": ("gzip", GZIPPED),
    "x-gzip": ("x-gzip", GZIPPED),
    "deflate": ("deflate", zlib.compress(TEXT)),
    "raw-deflate": ("deflate", raw_deflate(TEXT)),
    # Listed in the order applied: deflate first, then gzip, so gzip is undone first.
    "stacked": ("deflate, gzip", gzip.compress(zlib.compress(TEXT))),
    "gzip-twice": ("gzip, gzip", gzip.compress(GZIPPED)),
    "unknown": ("compress", b"\x1f\x9d\x90" + TEXT[:40]),
    "corrupt": ("gzip", GZIPPED[:10] + b"\xff" * 40 + GZIPPED[50:]),
    "truncated": ("gzip", GZIPPED[: len(GZIPPED) // 2]),
    "bomb": ("gzip", BOMB),
    "identity": ("identity", TEXT),
}


def probe_config(url: str, **options: Any) -> HTTPProbeConfig:
    return HTTPProbeConfig.model_validate({"name": "t", "url": url, "ip": "ip4", **options})


async def probe_once(url: str, **options: Any) -> ProbeResult:
    probe = HTTPProbe(probe_config(url, **options), CTX)
    try:
        [result] = await probe.run()
    finally:
        await probe.aclose()
    return result


def error_of(result: ProbeResult) -> tuple[str, str]:
    assert result.error is not None, "the probe succeeded"
    return result.error.error_type, result.error.detail


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    """Serves BODIES at /coded/NAME (status from ?status=), and /negotiated, which gzips only
    when asked to, as most servers do; yields the port and every request's headers."""
    seen: list[dict[str, str]] = []

    async def coded(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        encoding, body = BODIES[request.match_info["name"]]
        status = int(request.query.get("status", "200"))
        return web.Response(status=status, body=body, headers={"Content-Encoding": encoding})

    async def negotiated(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()  # chunked, compressed as it is written
        await response.prepare(request)
        for start in range(0, len(TEXT), 500):
            await response.write(TEXT[start : start + 500])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/coded/{name}", coded)
    app.router.add_get("/negotiated", negotiated)
    async with serve_app(app) as port:
        yield port, seen


CHECKS: dict[str, Any] = {
    "body_regex": ["compressible compressible"],
    "body_not_regex": ["error"],
    "json_path": [{"path": "$.status", "equals": "up"}],
}


@pytest.mark.parametrize(
    "name", ["gzip", "x-gzip", "deflate", "raw-deflate", "stacked", "gzip-twice", "identity"]
)
async def test_body_checks_see_the_decoded_body(server: tuple[int, Any], name: str) -> None:
    port, _ = server
    result = await probe_once(f"http://127.0.0.1:{port}/coded/{name}", expect=CHECKS)

    assert result.success, result.error
    # The attribute stays the size on the wire, not the decoded size.
    assert result.attributes["probe.http.body_bytes"] == len(BODIES[name][1])


async def test_forbidden_text_inside_a_compressed_body_is_found(server: tuple[int, Any]) -> None:
    port, _ = server
    result = await probe_once(
        f"http://127.0.0.1:{port}/coded/gzip", expect={"body_not_regex": ['"status": "up"']}
    )

    assert error_of(result) == ("assertion_failed", "body_not_regex_matched")


async def test_no_accept_encoding_by_default_and_a_configured_one_is_honoured(
    server: tuple[int, list[dict[str, str]]],
) -> None:
    port, seen = server
    url = f"http://127.0.0.1:{port}/negotiated"
    plain = await probe_once(url, expect=CHECKS)
    compressed = await probe_once(url, headers={"Accept-Encoding": "gzip"}, expect=CHECKS)

    assert plain.success, plain.error
    assert compressed.success, compressed.error
    assert "Accept-Encoding" not in seen[0]
    assert seen[1]["Accept-Encoding"] == "gzip"
    assert plain.attributes["probe.http.body_bytes"] == len(TEXT)
    assert int(compressed.attributes["probe.http.body_bytes"]) < len(TEXT) // 4


async def test_unknown_coding_fails_the_body_checks_naming_it(server: tuple[int, Any]) -> None:
    port, _ = server
    result = await probe_once(f"http://127.0.0.1:{port}/coded/unknown", expect=CHECKS)

    assert error_of(result) == ("protocol_error", "unsupported_content_encoding")
    assert "'compress'" in str(result.error)


@pytest.mark.parametrize("name", ["corrupt", "truncated"])
async def test_corrupt_or_cut_compressed_body_fails(server: tuple[int, Any], name: str) -> None:
    port, _ = server
    result = await probe_once(f"http://127.0.0.1:{port}/coded/{name}", expect=CHECKS)

    assert error_of(result) == ("protocol_error", "content_decoding_failed")
    assert "gzip" in str(result.error)
    # The transfer itself went fine: the phase carries no error.
    transfer = result.phase("http.transfer")
    assert transfer is not None and transfer.error_type is None


async def test_a_wrong_status_is_reported_before_an_undecodable_body(server: tuple[int, Any]) -> None:
    port, _ = server
    result = await probe_once(f"http://127.0.0.1:{port}/coded/corrupt?status=502", expect=CHECKS)

    assert error_of(result) == ("http_status", "unexpected_status")
    assert "does not decode" in str(result.error)


async def test_decompression_bomb_fails_at_the_cap_fast(server: tuple[int, Any]) -> None:
    port, _ = server
    started = time.perf_counter()
    result = await probe_once(
        f"http://127.0.0.1:{port}/coded/bomb", body_max="1MiB", timeout="5s", expect=CHECKS
    )
    elapsed = time.perf_counter() - started

    assert error_of(result) == ("protocol_error", "body_too_large")
    assert "decoded" in str(result.error)
    assert result.attributes["probe.http.body_bytes"] == len(BOMB)
    assert elapsed < 1.0  # decoding all 100 MiB takes ~0.4 s on its own


@pytest.mark.parametrize("name", ["unknown", "corrupt", "bomb"])
async def test_without_body_checks_nothing_is_decoded(server: tuple[int, Any], name: str) -> None:
    port, _ = server
    result = await probe_once(f"http://127.0.0.1:{port}/coded/{name}")

    assert result.success, result.error
    assert result.attributes["probe.http.body_bytes"] == len(BODIES[name][1])


async def test_head_with_a_coding_and_no_body_passes(server: tuple[int, Any]) -> None:
    port, _ = server
    result = await probe_once(
        f"http://127.0.0.1:{port}/coded/gzip", method="HEAD", expect={"body_not_regex": ["error"]}
    )

    assert result.success, result.error
    assert result.attributes["probe.http.body_bytes"] == 0


# --- the decoder on its own -------------------------------------------------------------------


def test_bomb_decoding_allocates_about_the_cap() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as caught:
            decode_body(BOMB, ["gzip"], 1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert caught.value.detail == "body_too_large"
    assert peak < 3 << 20, f"peak {peak} bytes for a 1 MiB cap"


def test_stacked_bomb_is_bounded_at_every_layer() -> None:
    # A few KB whose outer layer inflates to ~260 KB and whose inner one to 256 MiB.
    bomb = gzip.compress(gzip_zeros(256))
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as caught:
            decode_body(bomb, ["gzip", "gzip"], 1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert caught.value.detail == "body_too_large"
    assert peak < 3 << 20


def test_exactly_the_cap_decodes() -> None:
    body = b"a" * (1 << 20)
    assert decode_body(gzip.compress(body), ["gzip"], 1 << 20) == body
    with pytest.raises(ProtocolError, match="body_max"):
        decode_body(gzip.compress(body + b"a"), ["gzip"], 1 << 20)


def test_members_and_trailing_bytes() -> None:
    # A second gzip member is decoded (gzip -c a b); other trailing bytes are ignored, as
    # browsers and curl do.
    assert decode_body(gzip.compress(b"ab") + gzip.compress(b"cd"), ["gzip"], 100) == b"abcd"
    assert decode_body(gzip.compress(b"ab") + b"\0\0junk", ["gzip"], 100) == b"ab"
    assert decode_body(zlib.compress(b"ab") + b"junk", ["deflate"], 100) == b"ab"


def test_codings_are_parsed_in_the_order_applied() -> None:
    headers = [
        (b"Content-Encoding", b"deflate, Identity"),
        (b"X-Other", b"br"),
        (b"content-encoding", b" GZIP "),
    ]
    assert content_codings(headers) == ["deflate", "gzip"]
    with pytest.raises(ProtocolError, match="more than"):
        decode_body(b"x", ["gzip"] * 5, 100)


@pytest.mark.skipif(HAS_BROTLI, reason="brotli is installed")
def test_br_without_a_decoder_names_the_package() -> None:
    with pytest.raises(ProtocolError, match="'br' needs the brotli package") as caught:
        decode_body(b"\x0b\x02\x80hi\x03", ["br"], 100)
    assert caught.value.detail == "unsupported_content_encoding"


def test_br_when_a_decoder_is_installed() -> None:
    brotli = pytest.importorskip("brotli")
    if not hasattr(brotli.Decompressor(), "can_accept_more_data"):
        pytest.skip("brotli < 1.2 cannot bound its output")
    assert decode_body(brotli.compress(TEXT), ["br"], 1 << 20) == TEXT
    assert decode_body(brotli.compress(GZIPPED), ["gzip", "br"], 1 << 20) == TEXT
    with pytest.raises(ProtocolError, match="body_max"):
        decode_body(brotli.compress(bytes(100 << 20), quality=5), ["br"], 1 << 20)
    with pytest.raises(ProtocolError, match="br stream ends early"):
        decode_body(brotli.compress(TEXT)[:-4], ["br"], 1 << 20)


def test_zstd_when_a_decoder_is_installed() -> None:
    try:
        zstd = importlib.import_module("compression.zstd")
    except ImportError:
        zstd = pytest.importorskip("backports.zstd")
    two_frames = zstd.compress(TEXT[:100]) + zstd.compress(TEXT[100:])
    assert decode_body(two_frames, ["zstd"], 1 << 20) == TEXT
    with pytest.raises(ProtocolError, match="body_max"):
        decode_body(zstd.compress(bytes(100 << 20)), ["zstd"], 1 << 20)
    with pytest.raises(ProtocolError, match="does not decode"):
        decode_body(b"\x28\xb5\x2f\xfd" + b"garbage", ["zstd"], 1 << 20)
