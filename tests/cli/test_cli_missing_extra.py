"""Which extra a command that failed on a missing module asks for (tests/test_packaging_light_install.py
runs it for real in a light virtualenv: exit 69 and the pip command)."""

from __future__ import annotations

import pytest

from otelprobe.cli import missing_extra


@pytest.mark.parametrize(
    ("module", "command", "extra"),
    [
        ("lightgbm", "train", "attribution"),
        ("pandas.core", "evaluate", "attribution"),
        ("numpy", "sidecar", "sidecar"),
        ("aiohttp", "lab", "lab"),
        ("aiohttp", "demo", "lab,sidecar"),
        ("dns", "probe", None),  # a base dependency missing is a broken install, not an extra
        ("otelprobe.nothing", "run", None),
    ],
)
def test_the_extra_named_for_a_missing_module(module: str, command: str, extra: str | None) -> None:
    assert missing_extra(ModuleNotFoundError(f"No module named {module!r}", name=module), command) == extra
