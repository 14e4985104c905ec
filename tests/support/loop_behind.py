"""A SIGTERM sent while a process's event loop is behind on cross-thread wake-ups, for the tests that
check it is not lost (scheduling/loop_signals.py): `behind_then_sigterm` runs a script that starts
the real service, and the script calls `flood_then_sigterm` from a loop callback — the loop busy,
another thread makes many call_soon_threadsafe wake-ups (filling the loop's self-pipe, as the
prompt-reads thread, the sidecar's slot worker or gRPC's poller do under load), then SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
WAKE_UPS: Final = 5000
"""Far more than the ~280 one-byte writes the self-pipe holds."""


def flood_then_sigterm(loop: asyncio.AbstractEventLoop) -> None:
    """Call from a loop callback: the loop stays busy while another thread floods it, then SIGTERM."""

    def flood() -> None:
        for _ in range(WAKE_UPS):
            loop.call_soon_threadsafe(lambda: None)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=flood)
    thread.start()
    thread.join()
    print("sigterm sent", flush=True)


async def behind_then_sigterm(script: str, config: Path, within_s: float) -> tuple[str, str]:
    """Run `script CONFIG` (it calls flood_then_sigterm) and return its stdout and stderr once it has
    exited 0 within `within_s`; fail if it is still running then (the signal was lost)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        str(config),
        cwd=REPO,  # the script imports tests.support
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(within_s):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(
            f"SIGTERM lost: still running {within_s:g} s later\n{out.decode()}{err.decode()[-3000:]}"
        ) from None
    assert "sigterm sent" in out.decode()
    assert process.returncode == 0, err.decode()[-3000:]
    return out.decode(), err.decode()
