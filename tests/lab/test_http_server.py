"""Each HTTP fault does what it says, measured from a raw socket client (not the prober)."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from otelprobe.lab.faults import (
    Hang,
    HTTP5xx,
    RedirectChain,
    ResetMidBody,
    TrickleBody,
    TTFBDelay,
    WrongContent,
    parse_fault,
)
from otelprobe.lab.servers.http import LAB_BODY_LINE, HTTPFaultServer
from otelprobe.lab.servers.measure import HTTPTiming, http_get, measure_accuracy
from otelprobe.lab.servers.raw import GARBAGE, RawFaultServer


@pytest.fixture
async def server() -> AsyncIterator[HTTPFaultServer]:
    async with HTTPFaultServer(seed=7) as srv:
        yield srv


async def get(server: HTTPFaultServer, target: str = "/", timeout_s: float = 10.0) -> HTTPTiming:
    return await http_get(server.host, server.port, target, timeout_s=timeout_s)


async def test_healthy_response(server: HTTPFaultServer) -> None:
    result = await get(server)
    assert result.status == 200
    assert result.outcome == "complete"
    assert len(result.body) == server.body_size
    assert result.body.startswith(LAB_BODY_LINE)
    assert result.ttfb_s < 0.05


async def test_ttfb_delay_applied_at_run_time(server: HTTPFaultServer) -> None:
    server.apply(TTFBDelay(delay_s=0.2))
    delayed = [(await get(server)).ttfb_s for _ in range(5)]
    server.clear("ttfb_delay")
    normal = (await get(server)).ttfb_s
    assert 0.2 <= statistics.median(delayed) < 0.2 + 0.02
    assert normal < 0.05


async def test_ttfb_delay_per_request_leaves_connect_alone(server: HTTPFaultServer) -> None:
    result = await get(server, "/?ttfb=100ms")
    assert 0.1 <= result.ttfb_s < 0.1 + 0.03
    assert result.connect_s < 0.05


async def test_ttfb_jitter_stays_in_range(server: HTTPFaultServer) -> None:
    server.apply(TTFBDelay(delay_s=0.06, jitter_s=0.04))
    samples = [(await get(server)).ttfb_s for _ in range(8)]
    assert all(0.02 <= s < 0.1 + 0.03 for s in samples)
    assert max(samples) - min(samples) > 0.005  # it does vary


async def test_trickled_body_rate(server: HTTPFaultServer) -> None:
    server.apply(TrickleBody(rate_bytes_per_s=64 * 1024, chunk_bytes=4096))
    result = await get(server, "/?size=32KiB")
    assert result.outcome == "complete" and len(result.body) == 32 * 1024
    # 32 KiB at 64 KiB/s: the last byte 0.5 s after the headers; the first byte is not held back.
    assert 0.45 <= result.transfer_s < 0.5 + 0.1
    assert result.ttfb_s < 0.05
    achieved = len(result.body) / result.transfer_s
    assert 0.85 * 64 * 1024 < achieved < 1.15 * 64 * 1024


async def test_5xx_rate_over_bounded_requests(server: HTTPFaultServer) -> None:
    server.apply(HTTP5xx(rate=0.3, status=502))
    statuses = [(await get(server)).status for _ in range(200)]
    errors = statuses.count(502)
    assert set(statuses) <= {200, 502}
    assert 35 <= errors <= 85  # Binomial(200, 0.3): mean 60, sd 6.5
    assert server.statuses[502] == errors


async def test_reset_mid_body(server: HTTPFaultServer) -> None:
    server.apply(ResetMidBody(after_bytes=1000))
    result = await get(server, "/?size=10000")
    assert result.status == 200
    assert result.headers["content-length"] == "10000"
    assert result.outcome == "reset"
    assert len(result.body) == 1000


async def test_reset_mid_body_after_a_large_prefix(server: HTTPFaultServer) -> None:
    # More than the socket buffers hold at once: the server must flush before resetting.
    result = await get(server, "/?size=4MiB&reset_after=3MiB")
    assert result.outcome == "reset"
    assert len(result.body) == 3 * 1024 * 1024


async def test_close_mid_body(server: HTTPFaultServer) -> None:
    # A FIN, not a RST: the client reads the promised prefix, then end of stream short of the length.
    result = await get(server, "/?size=10000&close_after=1000")
    assert result.status == 200
    assert result.headers["content-length"] == "10000"
    assert result.outcome == "incomplete"
    assert len(result.body) == 1000


async def test_wrong_content(server: HTTPFaultServer) -> None:
    server.apply(WrongContent())
    result = await get(server, "/?size=300")
    assert result.status == 200 and len(result.body) == 300
    assert LAB_BODY_LINE not in result.body


async def follow(server: HTTPFaultServer, limit: int) -> list[HTTPTiming]:
    target, seen = "/start", []
    for _ in range(limit):
        result = await get(server, target)
        seen.append(result)
        if "location" not in result.headers:
            break
        target = urlsplit(result.headers["location"])._replace(scheme="", netloc="").geturl()
    return seen


async def test_redirect_chain(server: HTTPFaultServer) -> None:
    server.apply(RedirectChain(hops=3))
    chain = await follow(server, 10)
    assert [r.status for r in chain] == [302, 302, 302, 200]
    assert chain[-1].body.startswith(LAB_BODY_LINE)


async def test_redirect_loop(server: HTTPFaultServer) -> None:
    fault = parse_fault({"kind": "redirect_chain", "loop": True, "status": 301})
    assert isinstance(fault, RedirectChain)
    server.apply(fault)
    chain = await follow(server, 8)
    assert len(chain) == 8 and all(r.status == 301 for r in chain)
    assert len({r.headers["location"] for r in chain}) == 2


async def test_redirects_per_request(server: HTTPFaultServer) -> None:
    result = await get(server, "/x?redirects=2")
    assert result.status == 302 and result.headers["location"].startswith("/x?redirects=2&lab_hop=1")


async def test_hang_never_answers_and_shuts_down_cleanly() -> None:
    async with HTTPFaultServer() as srv:
        srv.apply(Hang())
        with pytest.raises(TimeoutError):
            await http_get(srv.host, srv.port, timeout_s=0.3)
        await asyncio.sleep(0.05)
        srv.clear()
        assert (await http_get(srv.host, srv.port)).status == 200
        assert srv.statuses[0] == 1


async def test_bad_query_is_a_400(server: HTTPFaultServer) -> None:
    assert (await get(server, "/?ttfb=soon")).status == 400


async def test_headers_first_vs_coalesced_writes(server: HTTPFaultServer) -> None:
    # LAB-NOTES pitfall 4. The head travels in its own TCP segment, or with the body.
    headers_first = await get(server, "/?size=1KiB")
    coalesced = await get(server, "/?size=1KiB&coalesce=1")
    assert headers_first.data_segments_in == 2
    assert coalesced.data_segments_in == 1
    assert headers_first.body == coalesced.body


async def test_raw_server_modes() -> None:
    async with RawFaultServer(mode="garbage") as raw:
        garbage = await http_get(raw.host, raw.port)
        assert garbage.status is None and garbage.body == b""
        raw.mode = "reset"
        assert (await http_get(raw.host, raw.port)).outcome == "reset"
        raw.mode = "hang"
        with pytest.raises(TimeoutError):
            await http_get(raw.host, raw.port, timeout_s=0.2)
        raw.mode = "close"
        closed = await http_get(raw.host, raw.port)
        assert (closed.status, closed.body, closed.outcome) == (None, b"", "incomplete")
        raw.mode = "endless_body"
        raw.max_body_bytes = 2 * 1024 * 1024
        endless = await http_get(raw.host, raw.port)
        assert endless.status == 200 and len(endless.body) > 2 * 1024 * 1024
        assert raw.counts == {"garbage": 1, "reset": 1, "hang": 1, "close": 1, "endless_body": 1}
    assert GARBAGE[:1] == b"\x16"  # looks like TLS, is not HTTP


async def test_measure_accuracy_reports_achieved_vs_requested() -> None:
    report = await measure_accuracy("ttfb_delay", 0.03, samples=5)
    assert report.samples == 5 and report.requested_s == 0.03
    assert 0.0 <= report.median_error_s < 0.015
    assert report.median_error_s <= report.p90_error_s <= report.max_error_s
