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


MANIFEST = CONFIG_DIR / "builder" / "otelcol-builder.yaml"
# Module name in the builder manifest -> the component type it registers.
MODULE_TYPES = {
    "otlpreceiver": "otlp",
    "batchprocessor": "batch",
    "memorylimiterprocessor": "memory_limiter",
    "debugexporter": "debug",
    "otlpexporter": "otlp",
    "otlphttpexporter": "otlphttp",
    "fileexporter": "file",
    "loadbalancingexporter": "load_balancing",
    "prometheusexporter": "prometheus",
    "healthcheckextension": "health_check",
}
# Built in but unused by the configs on purpose: debug for troubleshooting, otlphttp for backends
# that only take OTLP/HTTP.
EXTRA_TYPES = {"exporters": {"debug", "otlphttp"}}


def _manifest() -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    return manifest


def test_the_builder_manifest_pins_one_release() -> None:
    versions = {
        entry["gomod"].split()[1]
        for section in ("receivers", "processors", "exporters", "extensions")
        for entry in _manifest()[section]
    }
    assert versions == {"v0.161.0"}
    assert "v0.161.0" in (CONFIG_DIR.parent / "scripts" / "otel-build.sh").read_text()


def test_the_builder_manifest_has_exactly_the_components_the_configs_use() -> None:
    used: dict[str, set[str]] = {
        section: set() for section in ("receivers", "processors", "exporters", "extensions")
    }
    for path in FILES:
        config = yaml.safe_load(path.read_text())
        for section, ids in used.items():
            ids.update(
                _type(component).replace("loadbalancing", "load_balancing")
                for component in config.get(section) or {}
            )
    manifest = _manifest()
    for section, ids in used.items():
        built = {MODULE_TYPES[entry["gomod"].split()[0].rsplit("/", 1)[1]] for entry in manifest[section]}
        assert built == ids | EXTRA_TYPES.get(section, set()), section
