"""Helpers of the sidecar's end-to-end tests: a real `otelprobe sidecar` process and a real
`otelprobe run` prober process, both on loopback, started and stopped with bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

LISTENING = re.compile(r"sidecar listening: OTLP gRPC (\w+), OTLP HTTP (\w+), API (\w+)")


@dataclass
class SidecarProcess:
    process: asyncio.subprocess.Process
    log: Path
    http_port: int
    api_port: int

    @property
    def otlp_http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.api_port}{path}", headers=headers) as response,
        ):
            response.raise_for_status()
            return await response.json()

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it may have just exited
                self.process.send_signal(sig)
        async with asyncio.timeout(30):
            return await self.process.wait()


def write_config(path: Path, **overrides: Any) -> Path:
    config: dict[str, Any] = {
        "receiver": {"grpc_port": None, "http_port": 0},
        "api": {"port": 0},
        "window": "1s",
        "allowed_lateness": "400ms",
    }
    config.update(overrides)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def start_sidecar(config: Path, log: Path, timeout_s: float = 30.0) -> SidecarProcess:
    """Start `otelprobe sidecar CONFIG` and wait for its listening line (ports picked by the OS)."""
    out = log.open("ab")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "otelprobe.cli", "sidecar", str(config), stdout=out, stderr=out
    )
    out.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = log.read_text(errors="replace").splitlines()
        found = [m for line in lines if (m := LISTENING.search(line))]
        if found and len(found) > sum(1 for line in lines if "sidecar stopped" in line):
            _, http_port, api_port = found[-1].groups()
            return SidecarProcess(process, log, int(http_port), int(api_port))
        if process.returncode is not None:
            break
        await asyncio.sleep(0.1)
    process.kill()
    await process.wait()
    raise AssertionError(f"the sidecar did not start:\n{log.read_text(errors='replace')}")


async def start_prober(
    tmp: Path, sidecar: SidecarProcess, targets: dict[str, str]
) -> asyncio.subprocess.Process:
    """`otelprobe run` probing `targets` (name -> URL) every 500 ms, exporting to the sidecar."""
    config = {
        "vantage": "test-vantage",
        "defaults": {"interval": "500ms", "timeout": "400ms"},
        "telemetry": {
            "exporters": [{"type": "otlp_http", "endpoint": sidecar.otlp_http}],
            "queue": {"schedule_delay": "100ms"},
        },
        "targets": [{"name": name, "kind": "http", "url": url} for name, url in targets.items()],
    }
    path = tmp / "prober.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = (tmp / "prober.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "otelprobe.cli", "run", str(path), stdout=log, stderr=log
    )
    log.close()
    return process


async def stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    async with asyncio.timeout(20):
        await process.wait()


def jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_for(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.25) -> Any:
    """Poll `predicate()` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
