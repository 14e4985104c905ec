"""A trained attribution model for the sidecar's end-to-end tests (trained once per session on
data/lab/train-101, ~20 s, unless models/default loads), and an HTTP client session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from otelprobe.cli.demo import demo_model


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # OTELPROBE_TEST_MODEL names a model to reuse (saves the training while iterating on tests).
    given = os.environ.get("OTELPROBE_TEST_MODEL")
    return Path(demo_model(given, tmp_path_factory.getbasetemp() / "trained-model"))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for the receiver and API tests."""
    async with aiohttp.ClientSession() as session:
        yield session
