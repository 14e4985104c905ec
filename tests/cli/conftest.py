"""A trained attribution model for the sidecar's end-to-end tests (trained once per session on
data/lab/train-101, ~20 s, unless models/default loads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelprobe.cli.demo import demo_model


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(demo_model(None, tmp_path_factory.getbasetemp() / "trained-model"))
