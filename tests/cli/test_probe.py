"""`otelprobe probe URL`: one probe of any kind from its URL; waterfall, --json, exit codes (DESIGN §7)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from otelprobe.lab.servers.dns import DNSFaultServer
from otelprobe.lab.servers.http import HTTPFaultServer
from otelprobe.lab.servers.ports import RefusedPort
from tests.support.cli_process import run_otelprobe


async def _otelprobe(*args: str) -> tuple[int, str, str]:
    return await run_otelprobe("probe", *args)


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    """The lab's HTTP server: 200 on /, and `/?status=500` for a failing answer."""
    async with HTTPFaultServer() as server:
        yield server.port


async def test_waterfall_of_a_successful_http_probe(http_port: int) -> None:
    code, out, _ = await _otelprobe(f"http://127.0.0.1:{http_port}/")
    assert code == 0
    assert out.startswith("OK ")
    for phase in ("tcp.connect", "http.request", "http.ttfb", "http.transfer"):
        assert phase in out
    assert "status 200" in out


async def test_json_output_and_exit_code_of_a_failed_probe(http_port: int) -> None:
    code, out, _ = await _otelprobe(f"http://127.0.0.1:{http_port}/?status=500", "--json")
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
    code, _, _ = await _otelprobe(f"http://127.0.0.1:{http_port}/?status=500", "--expect-status", "500")
    assert code == 0


@pytest.mark.parametrize("args", [["ftp://example.test/"], ["http://127.0.0.1:1/", "--timeout", "soon"]])
async def test_bad_usage_exits_2(args: list[str]) -> None:
    code, _, err = await _otelprobe(*args)
    assert code == 2
    assert "otelprobe probe" in err


async def test_refused_port_is_a_classified_failure() -> None:
    with RefusedPort() as refused:
        code, out, _ = await _otelprobe(f"tcp://127.0.0.1:{refused.port}", "--json")
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
