"""The WebSocket probe against a real aiohttp WebSocket server on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import WSMsgType, web

from otelprobe import names
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.websocket import WebSocketProbe, WebSocketProbeConfig

UPGRADE_DELAY_S = 0.2


async def _echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat.v1",))
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(f"echo:{msg.data}")
    return ws


async def _slow_upgrade(request: web.Request) -> web.WebSocketResponse:
    await asyncio.sleep(UPGRADE_DELAY_S)
    return await _echo(request)


async def _greets_then_errors(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str("hello")
    await ws.close(code=1011, message=b"internal error")
    return ws


async def _forbidden(request: web.Request) -> web.Response:
    raise web.HTTPForbidden()


def _app() -> web.Application:
    app = web.Application()
    app.router.add_get("/echo", _echo)
    app.router.add_get("/slow", _slow_upgrade)
    app.router.add_get("/greet", _greets_then_errors)
    app.router.add_get("/forbidden", _forbidden)
    return app


async def _serve(ssl_context: ssl.SSLContext | None) -> AsyncIterator[int]:
    runner = web.AppRunner(_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@pytest.fixture
async def ws_port() -> AsyncIterator[int]:
    async for port in _serve(None):
        yield port


@pytest.fixture
async def wss_port(cert_authority: trustme.CA) -> AsyncIterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert_authority.issue_cert("ws.test").configure_cert(context)
    async for port in _serve(context):
        yield port


def _probe(url: str, **overrides: object) -> WebSocketProbe:
    config = WebSocketProbeConfig.from_url(url, name="ws-target", **overrides)
    return WebSocketProbe(config, ProbeContext(vantage="test"))


async def test_echo_exchange_and_clean_close(ws_port: int) -> None:
    probe = _probe(
        f"ws://127.0.0.1:{ws_port}/echo",
        subprotocols=["chat.v1"],
        messages=[{"send": "ping-1", "expect": "^echo:ping-1$"}, {"send": "ping-2", "expect": "ping-2"}],
    )
    [result] = await probe.run()

    assert result.success, result.error
    assert [p.name for p in result.phases] == [
        names.SPAN_TCP_CONNECT,
        names.SPAN_HTTP_REQUEST,
        names.SPAN_HTTP_TTFB,
        names.SPAN_WS_MESSAGE,
        names.SPAN_WS_MESSAGE,
    ]
    assert result.attributes[names.HTTP_RESPONSE_STATUS_CODE] == 101
    assert result.attributes[names.PROBE_WS_SUBPROTOCOL] == "chat.v1"
    assert result.attributes[names.PROBE_WS_CLOSE_CODE] == 1000
    indexes = [
        p.attributes[names.PROBE_WS_MESSAGE_INDEX] for p in result.phases if p.name == names.SPAN_WS_MESSAGE
    ]
    assert indexes == [0, 1]


async def test_slow_upgrade_shows_in_ttfb_only(ws_port: int) -> None:
    [result] = await _probe(f"ws://127.0.0.1:{ws_port}/slow").run()

    assert result.success, result.error
    ttfb, connect = result.phase(names.SPAN_HTTP_TTFB), result.phase(names.SPAN_TCP_CONNECT)
    assert ttfb is not None and connect is not None
    assert UPGRADE_DELAY_S <= ttfb.duration_s < UPGRADE_DELAY_S + 1.0
    assert connect.duration_s < 0.1


async def test_reply_not_matching_is_an_assertion_failure(ws_port: int) -> None:
    probe = _probe(f"ws://127.0.0.1:{ws_port}/echo", messages=[{"send": "a", "expect": "^nope$"}])
    [result] = await probe.run()

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("assertion_failed", "message_mismatch")
    failed = result.phase(names.SPAN_WS_MESSAGE)
    assert failed is not None and failed.error_type == "assertion_failed"


async def test_bad_close_code_is_a_protocol_error(ws_port: int) -> None:
    probe = _probe(f"ws://127.0.0.1:{ws_port}/greet", messages=[{"expect": "^hello$"}])
    [result] = await probe.run()

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("protocol_error", "close_code_1011")
    assert result.attributes[names.PROBE_WS_CLOSE_CODE] == 1011


async def test_rejected_upgrade_is_an_http_status_failure(ws_port: int) -> None:
    [result] = await _probe(f"ws://127.0.0.1:{ws_port}/forbidden").run()

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("http_status", "status_403")
    assert result.attributes[names.HTTP_RESPONSE_STATUS_CODE] == 403


async def test_wss_adds_a_tls_handshake(wss_port: int, cert_authority: trustme.CA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    cert_authority.cert_pem.write_to_path(str(ca_file))
    probe = _probe(
        f"wss://127.0.0.1:{wss_port}/echo",
        tls={"ca_file": str(ca_file), "sni": "ws.test"},
        messages=[{"send": "x", "expect": "echo:x"}],
    )
    [result] = await probe.run()

    assert result.success, result.error
    assert [p.name for p in result.phases][:4] == [
        names.SPAN_TCP_CONNECT,
        names.SPAN_TLS_HANDSHAKE,
        names.SPAN_HTTP_REQUEST,
        names.SPAN_HTTP_TTFB,
    ]
    assert result.attributes[names.TLS_PROTOCOL_VERSION] in ("1.2", "1.3")


async def test_wss_untrusted_certificate_is_a_tls_error(wss_port: int) -> None:
    [result] = await _probe(f"wss://127.0.0.1:{wss_port}/echo").run()

    assert result.error is not None
    assert result.error.error_type == "tls_error"


def test_config_rejects_other_schemes_and_empty_exchanges() -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        WebSocketProbeConfig.from_url("http://example.test/")
    with pytest.raises(ValueError, match="needs `send`"):
        WebSocketProbeConfig.from_url("ws://example.test/", messages=[{}])
