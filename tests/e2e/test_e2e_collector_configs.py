"""Every Collector config in collector-config/ passes the built Collector's own `validate`, and runs:
started for real (on loopback ports merged over the file), healthy, then stopped cleanly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.e2e_stack import (
    CONFIG_DIR,
    Binaries,
    endpoint,
    free_port,
    start_collector,
    validate_collector,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)
FILES = sorted(CONFIG_DIR.glob("*.yaml"))


def local_overlay(path: Path, tmp: Path) -> dict[str, Any]:
    """Loopback ports for every listener, loopback (closed) ports for every exporter, temporary
    files for the file exporter, and a static resolver instead of Kubernetes for load_balancing."""
    config = yaml.safe_load(path.read_text())
    overlay: dict[str, Any] = {"receivers": {}, "exporters": {}, "extensions": {}}
    for name, receiver in (config.get("receivers") or {}).items():
        protocols = (receiver or {}).get("protocols") or {}
        overlay["receivers"][name] = {"protocols": {p: {"endpoint": endpoint()} for p in protocols}}
    for name in config.get("extensions") or {}:
        overlay["extensions"][name] = {"endpoint": endpoint()}
    for name, exporter in (config.get("exporters") or {}).items():
        kind = name.split("/", 1)[0]
        if kind == "file":
            overlay["exporters"][name] = {"path": str(tmp / f"{name.replace('/', '-')}.jsonl")}
        elif kind in {"load_balancing", "loadbalancing"}:
            hostnames = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
            overlay["exporters"][name] = {"resolver": {"k8s": None, "static": {"hostnames": hostnames}}}
        elif "endpoint" in (exporter or {}):
            overlay["exporters"][name] = {"endpoint": f"127.0.0.1:{free_port()}"}
    return {section: value for section, value in overlay.items() if value}


def test_there_are_configs() -> None:
    assert len(FILES) >= 3


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
async def test_the_collector_validates_the_file_as_committed(binaries: Binaries, path: Path) -> None:
    result = await validate_collector(binaries, path)
    assert result.returncode == 0, result.stdout


async def test_validate_rejects_a_broken_config(binaries: Binaries, tmp_path: Path) -> None:
    """The check above means something: an unknown component fails validation."""
    broken = tmp_path / "broken.yaml"
    config = yaml.safe_load((CONFIG_DIR / "collector-file-recording.yaml").read_text())
    config["service"]["pipelines"]["traces"]["exporters"] = ["nosuchexporter"]
    broken.write_text(yaml.safe_dump(config))
    result = await validate_collector(binaries, broken)
    assert result.returncode != 0 and "nosuchexporter" in result.stdout


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
async def test_the_file_starts_for_real(binaries: Binaries, path: Path, tmp_path: Path) -> None:
    overlay = local_overlay(path, tmp_path)
    collector = await start_collector(binaries, tmp_path, path.stem, path, overlay)
    try:
        health = (overlay.get("extensions") or {}).get("health_check")
        if health:
            url = f"http://{health['endpoint']}/"

            async def healthy() -> bool:
                async with aiohttp.ClientSession() as session, session.get(url) as response:
                    return response.status == 200

            assert await wait_for(healthy, 30, "the health check to answer 200")
        metrics = f"http://127.0.0.1:{collector.ports['metrics']}/metrics"

        async def own_metrics() -> str:
            async with aiohttp.ClientSession() as session, session.get(metrics) as response:
                return await response.text() if response.status == 200 else ""

        assert "otelcol_" in await wait_for(own_metrics, 30, "the Collector's own metrics")
        assert collector.proc.running
    finally:
        code = await collector.stop()
    assert code == 0, collector.proc.text()[-4000:]
