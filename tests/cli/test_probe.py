"""`otelprobe probe URL`: one probe of any kind from its URL; waterfall, --json, exit codes (DESIGN §7)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from otelprobe.lab.servers.dns import DNSFaultServer


async def _otelprobe(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "otelprobe.cli",
        "probe",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="hello otelprobe")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    app = web.Application()
    app.router.add_get("/", ok)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


async def test_waterfall_of_a_successful_http_probe(http_port: int) -> None:
    code, out, _ = await _otelprobe(f"http://127.0.0.1:{http_port}/")
    assert code == 0
    assert out.startswith("OK ")
    for phase in ("tcp.connect", "http.request", "http.ttfb", "http.transfer"):
        assert phase in out
    assert "status 200" in out


async def test_json_output_and_exit_code_of_a_failed_probe(http_port: int) -> None:
    code, out, _ = await _otelprobe(f"http://127.0.0.1:{http_port}/broken", "--json")
    assert code == 1
    record = json.loads(out)
    assert record["kind"] == "http"
    assert record["success"] is False
    assert record["error_type"] == "http_status"
    assert [p["name"] for p in record["phases"]] == [
        "tcp.connect",
        "http.request",
        "http.ttfb",
        "http.transfer",
    ]
    assert record["phases"][0]["start_ms"] >= 0.0
    assert record["attributes"]["http.response.status_code"] == 500


async def test_expect_status_option_maps_to_config(http_port: int) -> None:
    code, _, _ = await _otelprobe(f"http://127.0.0.1:{http_port}/broken", "--expect-status", "500")
    assert code == 0


@pytest.mark.parametrize("args", [["ftp://example.test/"], ["http://127.0.0.1:1/", "--timeout", "soon"]])
async def test_bad_usage_exits_2(args: list[str]) -> None:
    code, _, err = await _otelprobe(*args)
    assert code == 2
    assert "otelprobe probe" in err


async def test_refused_port_is_a_classified_failure() -> None:
    import socket

    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        code, out, _ = await _otelprobe(f"tcp://127.0.0.1:{port}", "--json")
    assert code == 1
    assert json.loads(out)["error_type"] == "connect_refused"


async def test_dns_url_queries_the_named_server() -> None:
    async with DNSFaultServer(zone={"www": {"A": ["127.0.0.1"]}}) as server:
        code, out, _ = await _otelprobe(f"dns://127.0.0.1:{server.port}/www.lab.test?type=A", "--json")
    assert code == 0, out
    record = json.loads(out)
    assert record["kind"] == "dns"
    assert [p["name"] for p in record["phases"]] == ["dns.lookup"]
    assert "127.0.0.1" in record["attributes"]["dns.answers"]


async def test_set_reaches_any_config_field(http_port: int) -> None:
    code, out, _ = await _otelprobe(
        f"http://127.0.0.1:{http_port}/", "--json", "--set", "expect.body_regex=[nothing-like-this]"
    )
    assert code == 1
    assert json.loads(out)["error_type"] == "assertion_failed"
    code, _, err = await _otelprobe(f"http://127.0.0.1:{http_port}/", "--set", "no_such_field=1")
    assert code == 2
    assert "no_such_field" in err
