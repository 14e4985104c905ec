"""`otelprobe run --workers 2` when things go wrong: a worker that keeps crashing stops the prober
(exit 3) instead of restarting forever, and workers do not outlive a supervisor killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.run_workers import two_workers, wait_until, worker_pids

pytestmark = pytest.mark.timeout(180)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_worker_that_cannot_start_again_ends_in_a_crash_loop_exit(tmp_path: Path) -> None:
    async with two_workers(tmp_path, [f"api-{i}" for i in range(4)]) as prober:
        # The running workers reject the broken file and keep probing; a restarted one cannot load it.
        prober.config.write_text("targets: [{name: broken, kind: nosuchkind}]\n")
        await wait_until(
            lambda: prober.log.read_text().count("rejected") >= 2, 20, "both workers reject it", prober.log
        )
        os.kill(worker_pids(prober.process.pid)[0], signal.SIGKILL)
        async with asyncio.timeout(120):
            await prober.process.wait()
    text = prober.log.read_text()
    assert prober.code == 3, text[-4000:]
    assert "worker 0 crashed 5 times in a row" in text, text[-4000:]
    assert text.count("worker 0 restarted") == 4, text[-4000:]
    assert "[w1] otelprobe.scheduling.runtime: prober stopped" in text  # worker 1 drained, not killed


async def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    async with two_workers(tmp_path, [f"db-{i}" for i in range(4)]) as prober:
        workers = worker_pids(prober.process.pid)
        assert len(workers) == 2
        prober.process.kill()
        await prober.process.wait()
        killed_at = time.monotonic()
        await wait_until(
            lambda: not any(alive(pid) for pid in workers.values()), 30, "the workers to exit", prober.log
        )
        print(f"workers gone {time.monotonic() - killed_at:.1f} s after the supervisor's SIGKILL")
    assert prober.log.read_text().count("the supervisor is gone; stopping") == 2
    assert prober.log.read_text().count("prober stopped") == 2
