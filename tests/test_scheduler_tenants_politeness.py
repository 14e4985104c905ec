"""`scheduler.per_destination`: at most N probes in flight per (host, port), whatever the tenants."""

from __future__ import annotations

import asyncio

from aiohttp import web

from otelprobe.config import load_text
from otelprobe.telemetry.pipeline import Telemetry
from tests.support.tenant_scheduler import tenant_scheduler


async def test_no_more_than_n_requests_reach_one_host_at_once() -> None:
    in_flight = peak = served = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal in_flight, peak, served
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.2)
        finally:
            in_flight -= 1
        served += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", slow)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    targets = "".join(
        f"  - {{name: t{i}, kind: http, url: 'http://127.0.0.1:{port}/{i}', interval: 1s, timeout: 500ms,"
        f" jitter: 0s, labels: {{tenant: {'a' if i % 2 else 'b'}}}}}\n"
        for i in range(24)
    )
    config = load_text(
        f"concurrency: 64\nscheduler: {{per_destination: 3}}\ntenants: {{a: {{}}, b: {{}}}}\n"
        f"targets:\n{targets}"
    )
    scheduler = tenant_scheduler(config, Telemetry(vantage="test"))
    try:
        await scheduler.apply(config.targets)
        await asyncio.sleep(2.5)
    finally:
        await scheduler.aclose(grace_s=1.0)
        await runner.cleanup()
    assert peak == 3  # reached, never passed: 24 targets due each second x 200 ms each = 4.8 wanted
    assert served >= 10
