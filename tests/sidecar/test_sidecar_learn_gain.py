"""The promotion gate measures what the feedback does (issue 16): with no feedback, a retraining
job (retrain.run_job, as the sidecar's child process runs it) on the live model's own lab data
gives the live model back, tree for tree — whatever seed or rounds the sidecar's config says, the
job takes the live model's, so the gate compares like with like.

The live model is train-101's at 30 rounds (quick). What confirmed incidents teach the shipped
model: test_sidecar_learn_shipped.py; for several seeds and weightings: bench/README.md, "Sidecar
retraining".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from otelprobe.attribution.model import load_model
from otelprobe.attribution.table_cache import read_table_cached
from otelprobe.attribution.train import train_model
from otelprobe.sidecar.config import LearningConfig
from otelprobe.sidecar.retrain import job_spec, run_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

LAB = Path(__file__).resolve().parents[2] / "data" / "lab"
LAB_TRAIN = LAB / "train-101" / "traces.jsonl.gz"
LAB_EVAL = LAB / "shifted-503" / "traces.jsonl.gz"
ROUNDS = 30
DEFAULTS = LearningConfig()
"""The sidecar's default tolerance (and time split)."""


@pytest.fixture(scope="module")
def tables(shipped_table_cache: Path) -> Path:
    """The session's window tables (conftest), train-101's and shifted-503's among them."""
    return shipped_table_cache


def live_model(tables: Path, stem: Path, seed: int, members: int = 1) -> Path:
    lab = read_table_cached([LAB_TRAIN], tables)
    info = {"name": f"lab-101-seed{seed}", "recordings": [str(LAB_TRAIN)]}
    model = train_model(
        lab.frame, window_s=lab.window_s, rounds=ROUNDS, seed=seed, members=members, training_info=info
    )
    model.save(stem)
    return stem


def job(tables: Path, work: Path, live: Path, **learning: Any) -> dict[str, Any]:
    """A retraining job with no feedback, the sidecar's defaults changed by `learning`."""
    (work / "windows.json").write_text("[]")
    spec = job_spec(
        DEFAULTS.model_copy(update=learning),
        version="v0002",
        registry_dir=work,
        live_stem=live,
        lab_recordings=[LAB_TRAIN],
        eval_recordings=[LAB_EVAL],
        table_cache=tables,
        verdicts=[],
        windows_file=work / "windows.json",
    )
    return run_job(spec)


def trees(booster: Any) -> Any:
    return booster.dump_model()["tree_info"]


def test_without_feedback_the_candidate_is_the_live_model(tables: Path, tmp_path: Path) -> None:
    live = live_model(tables, tmp_path / "live", seed=8, members=2)
    # The config's seed and rounds differ from the live model's: the live model's are used, and
    # so is its number of averaged seeds.
    result = job(tables, tmp_path, live, seed=7, rounds=ROUNDS + 20)
    old, new = load_model(live), load_model(tmp_path / "v0002")
    assert new.metadata.params["seed"] == 8 and new.metadata.training["rounds"] == ROUNDS
    assert new.metadata.training["members"] == 2
    assert new.metadata.training["hyper_parameters_from"] == "live"
    for part in ("gate_booster", "cause_booster", "scope_booster"):
        assert trees(getattr(new, part)) == trees(getattr(old, part)), part
    assert new.metadata.temperature == old.metadata.temperature
    lab = result["metrics"]["lab"]
    assert lab["candidate"] == lab["live"] and result["passed"], result["reason"]
