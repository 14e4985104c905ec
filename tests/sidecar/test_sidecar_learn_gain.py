"""The promotion gate measures what the feedback does, and the feedback wins reproducibly (issue
16): a retraining job (retrain.run_job, as the sidecar's child process runs it) on the live
model's own lab data, seed, rounds and parameters, plus eval-402's confirmed bandwidth-limit
incidents — the cause the live model confuses with packet loss.

- With no feedback, the candidate is the live model, tree for tree: whatever seed or rounds the
  sidecar's config says, the job takes the live model's, so the gate compares like with like.
- For live models trained with three seeds, the candidate ranks bandwidth_limit first on the
  confirmed incidents it did not train on (each scored by a model fit without it: leave one
  incident out) more often than the live model, keeps lab AC@1 and false attributions on
  shifted-503 within the default tolerance, and is promoted — with a stronger weighting than the
  default (WEIGHTING says why).

The live models are train-101's at 30 rounds (quick; the shipped model's scale is bench/README.md's
"Sidecar retraining").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from otelprobe.attribution.model import load_model
from otelprobe.attribution.table_cache import read_table_cached
from otelprobe.attribution.train import train_model
from otelprobe.sidecar.config import LearningConfig
from otelprobe.sidecar.lab_feedback import confirmed_incidents
from otelprobe.sidecar.retrain import run_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

LAB = Path(__file__).resolve().parents[2] / "data" / "lab"
LAB_TRAIN = LAB / "train-101" / "traces.jsonl.gz"
LAB_EVAL = LAB / "shifted-503" / "traces.jsonl.gz"
FEEDBACK = LAB / "eval-402" / "traces.jsonl.gz"
ROUNDS = 30
SEEDS = (7, 8, 9)
DEFAULTS = LearningConfig()
"""The sidecar's default tolerance (and time split)."""
WEIGHTING = {"feedback_weight": 10.0, "feedback_cap_share": 0.25}
"""Measured against train-101 at 30 rounds: the default (weight 3, cap 0.05) teaches nothing
measurable (unseen incidents 0.33 -> 0.36, 0.34 -> 0.32, 0.32 -> 0.33; seed 8 refused);
weight 10 uncapped (as test_sidecar_learn) gains more (0.33 -> 0.53) but adds 0.5-0.7 points of
false attributions, over the default tolerance on two seeds of three."""


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("tables")
    for path in (LAB_TRAIN, LAB_EVAL, FEEDBACK):
        read_table_cached([path], cache)
    return cache


def live_model(tables: Path, stem: Path, seed: int) -> Path:
    lab = read_table_cached([LAB_TRAIN], tables)
    info = {"name": f"lab-101-seed{seed}", "recordings": [str(LAB_TRAIN)]}
    train_model(lab.frame, window_s=lab.window_s, rounds=ROUNDS, seed=seed, training_info=info).save(stem)
    return stem


def job(tables: Path, work: Path, live: Path, cause: str | None, **spec: Any) -> dict[str, Any]:
    verdicts: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    if cause is not None:
        table = read_table_cached([FEEDBACK], tables).frame
        verdicts, windows = confirmed_incidents(table, cause, "eval-402", by="test")
    (work / "windows.json").write_text(json.dumps(windows))
    return run_job(
        {
            "version": "v0002",
            "registry_dir": str(work),
            "live_stem": str(live),
            "lab_recordings": [str(LAB_TRAIN)],
            "eval_recordings": [str(LAB_EVAL)],
            "table_cache": str(tables),
            "verdicts": verdicts,
            "windows_file": str(work / "windows.json"),
            "holdout_share": DEFAULTS.holdout_share,
            "feedback_weight": DEFAULTS.feedback_weight,
            "feedback_per_incident": DEFAULTS.feedback_per_incident,
            "feedback_cap_share": DEFAULTS.feedback_cap_share,
            "tolerance": DEFAULTS.tolerance.model_dump(),
            **spec,
        }
    )


def trees(booster: Any) -> Any:
    return booster.dump_model()["tree_info"]


def test_without_feedback_the_candidate_is_the_live_model(tables: Path, tmp_path: Path) -> None:
    live = live_model(tables, tmp_path / "live", seed=8)
    # The config's seed and rounds differ from the live model's: the live model's are used.
    result = job(tables, tmp_path, live, None, seed=7, rounds=ROUNDS + 20)
    old, new = load_model(live), load_model(tmp_path / "v0002")
    assert new.metadata.params["seed"] == 8 and new.metadata.training["rounds"] == ROUNDS
    assert new.metadata.training["hyper_parameters_from"] == "live"
    for part in ("gate_booster", "cause_booster", "scope_booster"):
        assert trees(getattr(new, part)) == trees(getattr(old, part)), part
    assert new.metadata.temperature == old.metadata.temperature
    lab = result["metrics"]["lab"]
    assert lab["candidate"] == lab["live"] and result["passed"], result["reason"]


def test_confirmed_bandwidth_limits_are_learned_whatever_the_live_models_seed(
    tables: Path, tmp_path: Path
) -> None:
    gains = []
    for seed in SEEDS:
        work = tmp_path / f"seed{seed}"
        work.mkdir()
        live = live_model(tables, work / "live", seed)
        result = job(tables, work, live, "bandwidth_limit", seed=seed, rounds=150, **WEIGHTING)
        print(f"\nseed {seed}: {result['reason']}", flush=True)  # the gate's comparison, for `pytest -s`
        # Promoted: lab AC@1 and false attributions on shifted-503 within the default tolerance.
        assert result["passed"], result["reason"]
        lab, tolerance = result["metrics"]["lab"], DEFAULTS.tolerance
        assert lab["candidate"]["ac1"] >= lab["live"]["ac1"] - tolerance.ac1
        # Confirmed incidents it did not learn from (each scored by a model fit without it): the
        # old model ranks bandwidth_limit first on a third of their windows, the new one on more.
        unseen = result["metrics"]["unseen_incidents"]
        assert unseen["candidate"]["cases"] == unseen["live"]["cases"] > 50
        before = unseen["live"]["recall"]["bandwidth_limit"]
        after = unseen["candidate"]["recall"]["bandwidth_limit"]
        assert before < 0.4 and after > before, (seed, before, after)
        gains.append(after - before)
        feedback = result["training"]["feedback"]
        assert len(feedback["trained_incidents"]) == 5 and feedback["held_out_incidents"]
    # Measured: +0.14 / +0.03 / +0.17 (seeds 7 / 8 / 9).
    assert sum(gains) / len(gains) >= 0.08, gains
