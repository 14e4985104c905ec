"""SIGHUP on a real `otelprobe sidecar` process re-reads its config (a bad file is rejected and
the running one kept, the process still serving); the file's stamp is kept as it was, so only
the signal, not the 2 s poll of the file, can have caused the reload."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.support.sidecar_process import start_sidecar, wait_for, write_config


def _rewrite_keeping_stamp(path: Path, old: str, new: str) -> None:
    assert len(old) == len(new)  # same size, same mtime: the file poll sees no change
    info = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


async def test_sighup_reloads_the_config_and_a_bad_one_is_rejected(
    tmp_path: Path, trained_model: Path
) -> None:
    config = write_config(tmp_path / "sidecar.yaml", model=str(trained_model))
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(config, log)
    try:
        _rewrite_keeping_stamp(config, "allowed_lateness: 400ms", "allowed_lateness: 900ms")
        sidecar.process.send_signal(signal.SIGHUP)
        await wait_for(lambda: f"config {config} reloaded" in log.read_text(), 10, "the reload")

        _rewrite_keeping_stamp(config, "allowed_lateness: 900ms", "allowed_lateness: never")
        sidecar.process.send_signal(signal.SIGHUP)
        await wait_for(lambda: "rejected, keeping the running one" in log.read_text(), 10, "the rejection")
        assert "allowed_lateness: invalid duration 'never'" in log.read_text()
        assert sidecar.process.returncode is None
        assert (await sidecar.get("/healthz"))["status"] in ("starting", "warming_up", "ok")
    finally:
        assert await sidecar.stop() == 0
