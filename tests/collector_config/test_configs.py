"""Collector configs stay true to the otelcol-contrib schema: every pipeline references defined
components, every defined component is used, and component types exist in contrib."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

CONFIG_DIR = Path(__file__).resolve().parents[2] / "collector-config"
# Component types of otelcol-contrib that these configs may use.
KNOWN = {
    "receivers": {"otlp", "prometheus", "hostmetrics", "httpcheck"},
    "processors": {"batch", "memory_limiter", "resource", "attributes", "transform", "groupbytrace"},
    "exporters": {"otlp", "otlphttp", "debug", "file", "prometheus", "load_balancing", "loadbalancing"},
    "extensions": {"health_check", "pprof", "zpages"},
}
FILES = sorted(CONFIG_DIR.glob("*.yaml"))


def _type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def test_there_are_configs() -> None:
    assert len(FILES) >= 3


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_pipelines_reference_defined_components(path: Path) -> None:
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    pipelines = config["service"]["pipelines"]
    assert pipelines, "a config without pipelines does nothing"
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in pipelines.items():
        assert _type(name) in {"traces", "metrics", "logs"}, name
        assert pipeline.get("receivers") and pipeline.get("exporters"), name
        for section in used:
            for component in pipeline.get(section, []):
                assert component in (config.get(section) or {}), (
                    f"{name} uses undefined {section}: {component}"
                )
                used[section].add(component)
    for section, ids in used.items():
        defined = set(config.get(section) or {})
        assert defined == ids, f"{section} defined but unused: {defined - ids}"
        for component in defined:
            assert _type(component) in KNOWN[section], f"unknown {section} type {component}"
    for extension in config.get("service", {}).get("extensions", []):
        assert extension in config["extensions"]
        assert _type(extension) in KNOWN["extensions"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_readme_documents_every_file(path: Path) -> None:
    assert path.name in (CONFIG_DIR / "README.md").read_text()
