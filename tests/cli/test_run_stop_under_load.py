"""`otelprobe run` stops on SIGTERM within a bound, however busy: in-flight probes get the grace
period, then are cancelled; the telemetry is flushed; exit 0. And a SIGTERM that arrives while the
event loop is behind on cross-thread wake-ups is not lost (scheduling/loop_signals.py)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from otelprobe.scheduling.runtime import GRACE_S
from tests.support.loop_behind import behind_then_sigterm
from tests.support.run_workers import start_run, wait_until

pytestmark = pytest.mark.timeout(60)

STOP_BOUND_S = GRACE_S + 6.0
"""The grace period, then cancelling (1 s per probe at most, concurrently) and the flush (5 s at most)."""


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """Accepts connections, reads nothing, answers nothing: every probe stays in flight."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, held
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


def stuck_config(port: int, targets: int) -> str:
    config = {
        # Timeouts longer than the grace period: the drain has to cut these probes.
        "defaults": {"interval": "30s", "timeout": "30s"},
        "concurrency": 40,
        "telemetry": {"exporters": [], "metric_export_interval": "60s"},
        "targets": [
            {"name": f"stuck-{i:03d}", "kind": "http", "url": f"http://127.0.0.1:{port}/{i}"}
            for i in range(targets)
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


async def test_sigterm_cuts_probes_still_in_flight_after_the_grace_period(tmp_path: Path) -> None:
    async with silent_server() as (port, held):
        config, log = tmp_path / "probes.yaml", tmp_path / "run.log"
        config.write_text(stuck_config(port, 200))
        process = await start_run(config, log)
        try:
            # Targets start spread over their 30 s interval: wait until a dozen probes hang.
            await wait_until(lambda: len(held) >= 12, 20, "probes in flight", log)
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(STOP_BOUND_S + 10):
                code = await process.wait()
            took = time.monotonic() - sent
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert took < STOP_BOUND_S, f"stopped {took:.1f} s after SIGTERM\n{text[-3000:]}"
    assert "probe runs in flight get up to" in text
    assert f"probe runs still going after {GRACE_S:.1f}s" in text, text[-3000:]
    assert "prober stopped" in text


# A process running the real `runtime.run` (signal handling included) on a real config; half a
# second in, one loop callback floods the loop's self-pipe from another thread and sends SIGTERM
# (tests/support/loop_behind.py; as the prompt-reads thread, net/prompt_read.py, does under load).
_BEHIND_THEN_SIGTERM = """
import asyncio, sys
from otelprobe.scheduling.runtime import Runtime, run
from tests.support.loop_behind import flood_then_sigterm

def runtime_factory(path):
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, flood_then_sigterm, loop)
    return Runtime(path)

sys.exit(run(sys.argv[1], runtime_factory=runtime_factory))
"""


async def test_a_sigterm_while_the_loop_is_behind_is_not_lost(tmp_path: Path) -> None:
    config = tmp_path / "probes.yaml"
    config.write_text(yaml.safe_dump({"telemetry": {"exporters": []}, "targets": []}))
    await behind_then_sigterm(_BEHIND_THEN_SIGTERM, config, within_s=10)
