"""Session fixtures of the model path: the held-out recording as a window table, and a model
trained on the shipped training recording (models/default when it loads; else trained once per
session and saved as files, shared with tests/cli through the same cache directory)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from otelprobe.attribution.dataset import WindowTable, read_window_table
from otelprobe.attribution.model import AttributionModel, load_model
from otelprobe.cli.demo import demo_model

EVAL_RECORDING = Path(__file__).resolve().parents[2] / "data" / "lab" / "eval-202" / "traces.jsonl.gz"


@pytest.fixture(scope="session")
def eval_table() -> WindowTable:
    return read_window_table([EVAL_RECORDING])


@pytest.fixture(scope="session")
def model_stem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stem of a model's files (STEM.cause.txt, STEM.scope.txt, STEM.json)."""
    # OTELPROBE_TEST_MODEL names a model to reuse (saves the training while iterating on tests).
    given = os.environ.get("OTELPROBE_TEST_MODEL")
    return Path(demo_model(given, tmp_path_factory.getbasetemp() / "trained-model"))


@pytest.fixture(scope="session")
def trained_model(model_stem: Path) -> AttributionModel:
    return load_model(model_stem)
