"""`otelprobe sidecar` acts on a SIGTERM that arrives while its event loop is behind on cross-thread
wake-ups (its slot worker and gRPC's poller thread wake the loop with call_soon_threadsafe): the
signal is not lost in a full self-pipe (scheduling/loop_signals.py), the sidecar drains and exits 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.loop_behind import behind_then_sigterm
from tests.support.sidecar_process import write_config

pytestmark = pytest.mark.timeout(90)

STOPPED_WITHIN_S = 30.0

# The real sidecar (`_serve`, signal handling included) on a real config. Once its signal handlers
# are in place, one loop callback floods the loop's self-pipe from another thread and sends SIGTERM
# (tests/support/loop_behind.py).
_BEHIND_THEN_SIGTERM = """
import asyncio, signal, sys
from otelprobe.cli.sidecar import _serve
from otelprobe.sidecar.config import load_sidecar_config
from tests.support.loop_behind import flood_then_sigterm

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
    _, err = await behind_then_sigterm(_BEHIND_THEN_SIGTERM, config, within_s=STOPPED_WITHIN_S)
    assert "signal wakeup fd" not in err
