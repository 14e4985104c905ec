"""`pip install otelprobe` (no extras) into a clean virtualenv gives a working prober.

The repository is installed the way a user installs it, from the package index pip is configured
with, into a fresh `python -m venv` (no system site-packages): `validate`, `probe` and `run` must
work, and the attribution stack, the lab's aiohttp and pytest must be absent. Slow: one pip install.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest
from aiohttp import web

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO: Final = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT_S: Final = 840.0
COMMAND_TIMEOUT_S: Final = 60.0
ABSENT: Final = ("lightgbm", "pandas", "numpy", "sklearn", "matplotlib", "aiohttp", "pytest")


class LightVenv:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"

    def otelprobe(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.bin / "otelprobe"), *args, cwd=cwd)

    def run(self, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> LightVenv:
    root = tmp_path_factory.mktemp("light") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    venv = LightVenv(root)
    started = time.monotonic()
    install = subprocess.run(
        [str(venv.bin / "python"), "-m", "pip", "install", "--quiet", str(REPO)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    assert install.returncode == 0, f"pip install {REPO} failed:\n{install.stderr[-4000:]}"
    print(f"pip install of the light prober: {time.monotonic() - started:.1f} s")
    return venv


@pytest.fixture
async def http_server() -> AsyncIterator[str]:
    """A real HTTP server on loopback (this process has the dev extras; the venv under test not)."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="light prober ok\n")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


def test_the_extras_and_pytest_are_not_installed(light_venv: LightVenv, tmp_path: Path) -> None:
    for module in ABSENT:
        result = light_venv.run(str(light_venv.bin / "python"), "-c", f"import {module}", cwd=tmp_path)
        assert result.returncode != 0, f"`import {module}` works in the light install"
        assert "ModuleNotFoundError" in result.stderr, result.stderr
    check = light_venv.run(str(light_venv.bin / "python"), "-m", "pip", "check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_validate_works_without_extras(light_venv: LightVenv, tmp_path: Path) -> None:
    config = tmp_path / "probes.yaml"
    config.write_text("targets:\n  - {name: web, kind: http, url: 'http://127.0.0.1:8080/'}\n")
    result = light_venv.otelprobe("validate", str(config), cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, f"{config}: OK"), result.stderr


async def test_probe_works_without_extras(light_venv: LightVenv, http_server: str, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(light_venv.bin / "otelprobe"),
        "probe",
        "--json",
        http_server,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_S)
    assert proc.returncode == 0, stderr.decode()
    attempt = json.loads(stdout.decode().splitlines()[0])
    assert attempt["success"] is True
    assert attempt["attributes"]["http.response.status_code"] == 200
    assert [phase["name"] for phase in attempt["phases"]][:2] == ["tcp.connect", "http.request"]


async def test_run_works_without_extras(light_venv: LightVenv, http_server: str, tmp_path: Path) -> None:
    """`otelprobe run` probes on schedule and writes its spans (OTLP JSON file exporter)."""
    spans = tmp_path / "spans.jsonl"
    config = tmp_path / "probes.yaml"
    config.write_text(
        "telemetry:\n"
        "  queue: {schedule_delay: 100ms}\n"
        f"  exporters: [{{type: file, path: '{spans}'}}]\n"
        "defaults: {interval: 200ms, timeout: 150ms}\n"
        f"targets:\n  - {{name: web, kind: http, url: '{http_server}'}}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        str(light_venv.bin / "otelprobe"),
        "run",
        str(config),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while time.monotonic() < deadline and proc.returncode is None:
            if spans.exists() and "http.response.status_code" in spans.read_text():
                break
            await asyncio.sleep(0.1)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_S)
    assert spans.exists(), f"no span file; otelprobe run said:\n{stderr.decode()[-3000:]}"
    text = spans.read_text()
    assert '"http.response.status_code"' in text and '"web"' in text, text[:2000]


def test_a_command_that_needs_an_extra_names_it(light_venv: LightVenv, tmp_path: Path) -> None:
    recording = tmp_path / "recording.jsonl"
    recording.write_text("")
    result = light_venv.otelprobe("train", "--input", str(recording), cwd=tmp_path)
    assert result.returncode == 69, result.stderr
    assert "pip install 'otelprobe[attribution]'" in result.stderr, result.stderr
