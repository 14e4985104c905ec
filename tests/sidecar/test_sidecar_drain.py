"""Stopping the sidecar while a window is being processed: every window it had taken is processed,
exactly once, and never two at a time (SlotProcessor belongs to one thread at a time)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

from otelprobe.sidecar.config import load_sidecar_config
from otelprobe.sidecar.service import SidecarService
from otelprobe.sidecar.windower import Slot
from tests.support.sidecar_spans import BASE, S, probe_spans, request

PROTOBUF = {"Content-Type": "application/x-protobuf"}
SLOW_S = 0.4  # how long each window's processing is held in its worker thread


async def test_a_stop_during_a_window_finishes_every_taken_window_once(
    tmp_path: Path, trained_model: Path
) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        "receiver: {grpc_port: null, http_port: 0}\n"
        "api: {port: null}\n"
        f"model: {trained_model}\n"
        "window: 1s\n"
        "allowed_lateness: 500ms\n"
    )
    service = SidecarService(load_sidecar_config(config), config)
    processed: list[int] = []
    running = 0
    most_at_once = 0
    lock = threading.Lock()
    first_started = threading.Event()
    process = service._process_in_worker

    def slow_process(slot: Slot, loop: asyncio.AbstractEventLoop, closed_s: float) -> Any:
        nonlocal running, most_at_once
        with lock:
            running += 1
            most_at_once = max(most_at_once, running)
        first_started.set()
        time.sleep(SLOW_S)  # a heavy window: stop() arrives while this one is in its thread
        try:
            return process(slot, loop, closed_s)
        finally:
            with lock:
                running -= 1
                processed.append(slot.start_ns)

    service._process_in_worker = slow_process  # type: ignore[method-assign]
    await service.start()
    try:
        # Six windows of probes, then one 10 s later: the watermark passes the six at once.
        spans = [span for n in range(6) for span in probe_spans(n + 1, BASE + n * S + S // 4)]
        spans += probe_spans(99, BASE + 10 * S)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{service.receiver.http_endpoint}/v1/traces",
                data=request(*spans).SerializeToString(),
                headers=PROTOBUF,
            ) as response,
        ):
            assert response.status == 200
        assert await asyncio.to_thread(first_started.wait, 5.0)
    finally:
        await service.stop()

    windows = [BASE + n * S for n in range(6)] + [BASE + 10 * S]
    assert sorted(processed) == windows  # the five still queued behind the first, then the drain's
    assert most_at_once == 1
    assert service.results == len(windows)
