"""Every example config in examples/ is valid (the docs must not rot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelprobe.config import validate

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    assert validate(path) == []
