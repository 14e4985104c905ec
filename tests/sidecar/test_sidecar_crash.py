"""A sidecar killed outright (SIGKILL: no drain, no final save, an un-checkpointed WAL left behind)
restarts from its last committed state: the store is intact and the baselines come back warm."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import sqlite3
from pathlib import Path

from otelprobe.lab.servers.http import HTTPFaultServer
from tests.support.sidecar_process import start_prober, start_sidecar, stop_process, wait_for, write_config

KILLS = 3
RESTORED = re.compile(r"state restored from .*: (\d+) series baselines")


async def test_a_killed_sidecar_restarts_from_its_last_committed_state(
    tmp_path: Path, trained_model: Path
) -> None:
    state = tmp_path / "state"
    config = write_config(tmp_path / "sidecar.yaml", model=str(trained_model), state_dir=str(state))
    pace = random.Random(7)
    async with HTTPFaultServer(seed=3) as shop, HTTPFaultServer(seed=4) as cart:
        targets = {"shop": shop.url, "cart": cart.url}
        for kill in range(KILLS + 1):
            log = tmp_path / f"sidecar-{kill}.log"  # a killed one never logs "stopped"
            sidecar = await start_sidecar(config, log)
            prober = await start_prober(tmp_path, sidecar, targets)
            try:
                if kill == 0:
                    await wait_for(lambda s=sidecar: _all_warm(s), 30, "warm baselines")
                else:
                    # Restored, not started afresh: both series' baselines, warm from the first
                    # window on (a new series needs three healthy windows).
                    restored = [int(n) for n in RESTORED.findall(log.read_text(errors="replace"))]
                    assert restored == [len(targets)], log.read_text()
                    assert "not restored" not in log.read_text()
                    await wait_for(lambda s=sidecar: _closed_windows(s, 1), 10, "a window")
                    assert (await sidecar.get("/healthz"))["warm_series"] == len(targets)
                # Windows close (and are saved) every second: kill somewhere inside one.
                await wait_for(lambda s=sidecar: _closed_windows(s, 2), 10, "two more windows")
                await asyncio.sleep(pace.uniform(0.0, 1.0))
            finally:
                await stop_process(prober)
                if kill < KILLS:
                    assert await sidecar.stop(signal.SIGKILL) == -signal.SIGKILL
                else:
                    assert await sidecar.stop() == 0
            with sqlite3.connect(state / "sidecar.sqlite3") as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def _all_warm(sidecar: object) -> bool:
    health = await sidecar.get("/healthz")  # type: ignore[attr-defined]
    return bool(health["series"] >= 2 and health["warm_series"] == health["series"])


async def _closed_windows(sidecar: object, at_least: int) -> bool:
    health = await sidecar.get("/healthz")  # type: ignore[attr-defined]
    return bool(health["windows_closed"] >= at_least)
