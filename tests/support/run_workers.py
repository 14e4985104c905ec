"""Helpers for the `otelprobe run --workers` tests: a loopback HTTP server counting requests per
target, the config, the process and its workers, the spans a real OTLP receiver got."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from otelprobe.sidecar.receiver import OTLPReceiver, ReceivedSpan, iter_spans

INTERVAL_S = 0.5


@dataclass
class Hits:
    """Requests the target server answered: (target name, monotonic time)."""

    seen: list[tuple[str, float]] = field(default_factory=list)

    def count(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        return Counter(name for name, at in self.seen if since <= at < until)

    def first_after(self, name: str, since: float) -> float | None:
        return next((at for n, at in self.seen if n == name and at >= since), None)


@contextlib.asynccontextmanager
async def target_server() -> AsyncIterator[tuple[int, Hits]]:
    hits = Hits()

    async def answer(request: web.Request) -> web.Response:
        hits.seen.append((request.match_info["name"], time.monotonic()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{name}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, hits
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_text(port: int, names: list[str], receiver: OTLPReceiver, metrics_port: int) -> str:
    config = {
        "defaults": {"interval": f"{int(INTERVAL_S * 1000)}ms", "timeout": "400ms"},
        "telemetry": {
            "exporters": [
                {"type": "otlp_http", "endpoint": receiver.http_endpoint, "timeout": "2s"},
                {"type": "prometheus", "port": metrics_port},
            ],
            "queue": {"schedule_delay": "100ms"},
        },
        "targets": [{"name": n, "kind": "http", "url": f"http://127.0.0.1:{port}/{n}"} for n in names],
    }
    return yaml.safe_dump(config, sort_keys=False)


async def start_run(config: Path, log: Path, *extra: str) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "otelprobe.cli", "-v", "run", str(config), *extra, stdout=out, stderr=out
        )


def worker_pids(parent: int) -> dict[int, int]:
    """worker index -> pid, from the parent's children's command lines."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    found: dict[int, int] = {}
    for pid in children:
        with contextlib.suppress(OSError):
            match = re.search(rb"--worker=(\d+)/", Path(f"/proc/{pid}/cmdline").read_bytes())
            if match:
                found[int(match.group(1))] = int(pid)
    return found


async def wait_until(
    predicate: Callable[[], object], timeout_s: float, what: str, log: Path | None = None
) -> None:
    """Poll every 0.1 s; on time-out fail with the end of `log` (the prober's output)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tail}")


async def stop(process: asyncio.subprocess.Process, log: Path) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(40):
            return await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"otelprobe run did not stop; its log:\n{log.read_text()[-4000:]}") from None


def received(receiver: OTLPReceiver) -> list[ReceivedSpan]:
    spans: list[ReceivedSpan] = []
    while not receiver.queue.empty():
        spans.extend(iter_spans(receiver.queue.get_nowait()))
    return spans


def roots(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if not s.span.parent_span_id]


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


@dataclass
class RunningProber:
    """`otelprobe run --workers 2` on `names`, once every target has been probed (two_workers)."""

    process: asyncio.subprocess.Process
    hits: Hits
    receiver: OTLPReceiver
    port: int
    metrics_port: int
    config: Path
    log: Path
    code: int | None = None
    """Its exit code, once two_workers has stopped it (SIGTERM if it was still running)."""


@contextlib.asynccontextmanager
async def two_workers(
    tmp_path: Path, names: list[str], extra_config: Callable[[int], str] | None = None
) -> AsyncIterator[RunningProber]:
    """A target server, a real OTLP receiver and `otelprobe run --workers 2` probing `names`
    (`extra_config(port)` appended to the file); yields once every target was probed, stops it on
    exit. The receiver's queue keeps the spans after the block."""
    async with target_server() as (port, hits), OTLPReceiver(grpc_port=None) as receiver:
        metrics_port = free_port()
        config = tmp_path / "probes.yaml"
        extra = extra_config(port) if extra_config else ""
        config.write_text(config_text(port, names, receiver, metrics_port) + extra)
        log = tmp_path / "run.log"
        process = await start_run(config, log, "--workers", "2")
        prober = RunningProber(process, hits, receiver, port, metrics_port, config, log)
        try:
            await wait_until(lambda: set(hits.count()) == set(names), 90, "every target probed", log)
            yield prober
        finally:
            prober.code = await stop(process, log)
