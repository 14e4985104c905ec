"""`otelprobe run --workers 2` when things go wrong: a worker that keeps crashing stops the prober
(exit 3) instead of restarting forever, and workers do not outlive a supervisor killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from otelprobe.sidecar.receiver import OTLPReceiver
from tests.support.run_workers import (
    config_text,
    free_port,
    start_run,
    stop,
    target_server,
    wait_until,
    worker_pids,
)

pytestmark = pytest.mark.timeout(180)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_worker_that_cannot_start_again_ends_in_a_crash_loop_exit(tmp_path: Path) -> None:
    names = [f"api-{i}" for i in range(4)]
    async with target_server() as (port, hits), OTLPReceiver(grpc_port=None) as receiver:
        config = tmp_path / "probes.yaml"
        config.write_text(config_text(port, names, receiver, free_port()))
        log = tmp_path / "run.log"
        process = await start_run(config, log, "--workers", "2")
        try:
            await wait_until(lambda: set(hits.count()) == set(names), 90, "every target probed", log)
            # The running workers reject the broken file and keep probing; a restarted one cannot load it.
            config.write_text("targets: [{name: broken, kind: nosuchkind}]\n")
            await wait_until(
                lambda: log.read_text().count("rejected") >= 2, 20, "both workers reject it", log
            )
            os.kill(worker_pids(process.pid)[0], signal.SIGKILL)
            async with asyncio.timeout(120):
                code = await process.wait()
        finally:
            if process.returncode is None:
                await stop(process, log)
    text = log.read_text()
    assert code == 3, text[-4000:]
    assert "worker 0 crashed 5 times in a row" in text, text[-4000:]
    assert text.count("worker 0 restarted") == 4, text[-4000:]
    assert "[w1] otelprobe.scheduling.runtime: prober stopped" in text  # worker 1 drained, not killed


async def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    names = [f"db-{i}" for i in range(4)]
    async with target_server() as (port, hits), OTLPReceiver(grpc_port=None) as receiver:
        config = tmp_path / "probes.yaml"
        config.write_text(config_text(port, names, receiver, free_port()))
        log = tmp_path / "run.log"
        process = await start_run(config, log, "--workers", "2")
        try:
            await wait_until(lambda: set(hits.count()) == set(names), 90, "every target probed", log)
            workers = worker_pids(process.pid)
            assert len(workers) == 2
            process.kill()
            await process.wait()
            killed_at = time.monotonic()
            await wait_until(
                lambda: not any(alive(pid) for pid in workers.values()), 30, "the workers to exit", log
            )
            print(f"workers gone {time.monotonic() - killed_at:.1f} s after the supervisor's SIGKILL")
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert log.read_text().count("the supervisor is gone; stopping") == 2
    assert log.read_text().count("prober stopped") == 2
