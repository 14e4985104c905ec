"""The terminal view: golden screens from real pipeline output, and the poller against a live API."""

from __future__ import annotations

import asyncio
import io
import re

from aiohttp.test_utils import TestServer

from otelprobe.sidecar.api import build_api_app
from otelprobe.sidecar.view import MemoryView
from otelprobe.sidecar.watch import render, watch
from tests.support.sidecar_view_data import T0_NS, WINDOW_NS, fill

URL = "http://127.0.0.1:8787"
GOLDEN_OPEN = """\
otelprobe sidecar · http://127.0.0.1:8787 · ok · model train-101@0123456789ab · 20 windows · 6 series · 1 open
  spans 1,234 · requests 56 · records 264 · late 2 · duplicate 1 · evicted 0 · rejected 0 · queue 0/0

● OPEN d911584e8a5ac954  since 11:07:28Z  api from eu-1, us-1  slo availability  8 attributions
   1. backend_slow        target    82.0%  ████████████████░░░░
        http.ttfb median 41 robust SDs above its baseline  (ttfb_p50_z +1.70)
        half the probes failed  (fail_share +0.40)
   2. bandwidth_limit     path       1.8%  ░░░░░░░░░░░░░░░░░░░░
   3. certificate_invalid path       1.8%  ░░░░░░░░░░░░░░░░░░░░
      then content_mismatch 1.8%, dns_failure 1.8%, dns_latency 1.8%, …

recently closed
✓ closed ce103fe2a8716a0e  11:06:48Z–11:06:56Z (8 s)  api  network_latency (target, 82%)
"""
GOLDEN_STARTING = """\
otelprobe sidecar · http://127.0.0.1:8787 · starting · model no model · 0 windows · 0 series · 0 open
  warming up baselines ░░░░░░░░░░░░░░░░░░░░ 0/0 series warm (0%) — waiting for the first window
  spans 0 · requests 0 · records 0 · late 0 · duplicate 0 · evicted 0 · rejected 0 · queue 0/0

no open incidents
"""
_ANSI = re.compile(r"\x1b\[[0-9;]*[a-zA-Z]")


def _view() -> MemoryView:
    view = MemoryView()
    fill(view, recovered=3, top="network_latency")
    fill(view, recovered=1, t0_ns=T0_NS + 20 * WINDOW_NS)
    return view


def test_golden_screen_with_an_open_and_a_closed_incident() -> None:
    view = _view()
    assert render(URL, view.health(), view.incidents()) == GOLDEN_OPEN


def test_golden_screen_before_the_first_window() -> None:
    view = MemoryView()
    assert render(URL, view.health(), view.incidents()) == GOLDEN_STARTING


def test_warm_up_progress_and_colour() -> None:
    view = _view()
    view.health_state.warm_series = 2
    screen = render(URL, view.health(), view.incidents(), color=True)
    plain = _ANSI.sub("", screen)
    assert "warming_up" in plain.splitlines()[0]
    assert "warming up baselines ███████░░░░░░░░░░░░░ 2/6 series warm (33%)" in plain
    assert "\x1b[1;31m● OPEN " in screen  # open incidents in bold red
    assert plain.replace(plain.splitlines()[1] + "\n", "").replace("warming_up", "ok") == GOLDEN_OPEN


async def test_watch_once_against_a_live_api() -> None:
    view = _view()
    async with TestServer(build_api_app(view), host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        out = io.StringIO()
        assert await watch(url, once=True, out=out) == 0
    assert out.getvalue() == GOLDEN_OPEN.replace(URL, url)


async def test_watch_redraws_as_incidents_change() -> None:
    view = MemoryView()
    async with TestServer(build_api_app(view), host="127.0.0.1") as server:
        url = str(server.make_url(""))
        out = io.StringIO()
        task = asyncio.create_task(watch(url, interval_s=0.05, out=out, duration_s=3.0))
        async with asyncio.timeout(3):
            while "no open incidents" not in out.getvalue():
                await asyncio.sleep(0.02)
        fill(view, recovered=1)  # the pipeline closes windows while the watcher runs
        async with asyncio.timeout(3):
            while "● OPEN" not in out.getvalue():
                await asyncio.sleep(0.02)
        task.cancel()
    screens = out.getvalue()
    assert screens.index("starting") < screens.index("● OPEN")
    assert "1. backend_slow" in screens


async def test_watch_with_a_token() -> None:
    view = _view()
    async with TestServer(build_api_app(view, token="tok-123"), host="127.0.0.1") as server:
        url = str(server.make_url(""))
        out = io.StringIO()
        assert await watch(url, token="tok-123", once=True, out=out) == 0
        assert "● OPEN" in out.getvalue()
        for token in (None, "wrong"):
            out = io.StringIO()
            assert await watch(url, token=token, once=True, out=out, duration_s=1.0) == 1
            assert "bearer token" in out.getvalue() and "tok-123" not in out.getvalue()


async def test_watch_unreachable_sidecar() -> None:
    server = TestServer(build_api_app(MemoryView()), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url(""))
    await server.close()  # nothing listens on the port now
    out = io.StringIO()
    assert await watch(url, once=True, out=out, timeout_s=2.0) == 1
    assert out.getvalue().startswith(f"otelprobe sidecar watch: cannot read {url.rstrip('/')}")
    out = io.StringIO()
    assert await watch(url, interval_s=0.05, out=out, duration_s=0.2, timeout_s=1.0) == 0
    assert "retrying every 0.05 s" in out.getvalue()
