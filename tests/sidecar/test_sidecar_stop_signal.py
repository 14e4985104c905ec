"""`otelprobe sidecar` acts on a SIGTERM that arrives while its event loop is behind on cross-thread
wake-ups (its slot worker and gRPC's poller thread wake the loop with call_soon_threadsafe): the
signal is not lost in a full self-pipe (scheduling/loop_signals.py), the sidecar drains and exits 0."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.support.sidecar_process import write_config

pytestmark = pytest.mark.timeout(90)

STOPPED_WITHIN_S = 30.0

# The real sidecar (`_serve`, signal handling included) on a real config. Once its signal handlers
# are in place, one loop callback keeps the loop busy while another thread makes many
# call_soon_threadsafe wake-ups (filling the loop's self-pipe), then sends the process SIGTERM.
_BEHIND_THEN_SIGTERM = """
import asyncio, os, signal, sys, threading
from otelprobe.cli.sidecar import _serve
from otelprobe.sidecar.config import load_sidecar_config

def flood_then_sigterm(loop):
    def flood():
        for _ in range(5000):
            loop.call_soon_threadsafe(lambda: None)
        os.kill(os.getpid(), signal.SIGTERM)
    thread = threading.Thread(target=flood)
    thread.start()
    thread.join()
    print("sigterm sent", flush=True)

def when_handled(loop, tries):
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        flood_then_sigterm(loop)
    elif tries:
        loop.call_later(0.2, when_handled, loop, tries - 1)

async def main(path):
    config = load_sidecar_config(path)
    loop = asyncio.get_running_loop()
    loop.call_soon(when_handled, loop, 150)
    return await _serve(config, path)

sys.exit(asyncio.run(main(sys.argv[1])))
"""


async def test_a_sigterm_while_the_loop_is_behind_is_not_lost(tmp_path: Path) -> None:
    config = write_config(tmp_path / "sidecar.yaml", state_dir=str(tmp_path / "state"))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _BEHIND_THEN_SIGTERM,
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(STOPPED_WITHIN_S):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(f"SIGTERM lost: still running\n{out.decode()}{err.decode()[-3000:]}") from None
    assert "sigterm sent" in out.decode()
    assert process.returncode == 0, err.decode()[-3000:]
    assert "signal wakeup fd" not in err.decode()
