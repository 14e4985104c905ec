"""Seed averaging (booster_mean.py, train.py's `members`): a model trained with k members scores
exactly the mean of the k single-seed models' raw scores, in every part, through save and load,
and its evidence (SHAP) is the mean of theirs. Trained on the held-out recording at few rounds:
this is about the arithmetic and the files, not accuracy (MODEL_CARD.md has that)."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from otelprobe.attribution.booster_mean import BoosterMeanError, mean_booster
from otelprobe.attribution.dataset import WindowTable
from otelprobe.attribution.features import feature_matrix
from otelprobe.attribution.model import AttributionModel, gate_input_matrix, load_model, scope_inputs
from otelprobe.attribution.shap_by_cause import contributions_for
from otelprobe.attribution.train import TrainingError, fit_cause_booster, train_model

ROUNDS = 12
SEEDS = (7, 8, 9)


@pytest.fixture(scope="module")
def singles(eval_table: WindowTable) -> list[AttributionModel]:
    return [train_model(eval_table.frame, window_s=eval_table.window_s, rounds=ROUNDS, seed=s) for s in SEEDS]


@pytest.fixture(scope="module")
def averaged(eval_table: WindowTable) -> AttributionModel:
    return train_model(
        eval_table.frame, window_s=eval_table.window_s, rounds=ROUNDS, seed=SEEDS[0], members=len(SEEDS)
    )


def _raw(booster: object, rows: np.ndarray) -> np.ndarray:
    return np.asarray(booster.predict(rows, raw_score=True), dtype=np.float64)  # type: ignore[attr-defined]


def test_every_part_scores_the_mean_of_the_seeds_raw_scores(
    eval_table: WindowTable, singles: list[AttributionModel], averaged: AttributionModel
) -> None:
    frame = eval_table.frame
    inputs = {
        "cause_booster": feature_matrix(frame),
        "gate_booster": gate_input_matrix(frame),
        "scope_booster": scope_inputs(frame),
    }
    for part, rows in inputs.items():
        members = [_raw(getattr(m, part), rows) for m in singles]
        mean = np.mean(members, axis=0)
        np.testing.assert_allclose(_raw(getattr(averaged, part), rows), mean, rtol=0, atol=1e-9, err_msg=part)
        # The seeds really differ, so the mean is not any one of them.
        assert max(float(np.abs(m - mean).max()) for m in members) > 1e-3, part
    assert averaged.metadata.training["members"] == len(SEEDS)
    assert singles[0].metadata.training["members"] == 1


def test_evidence_is_the_mean_of_the_seeds_shap_values(
    eval_table: WindowTable, singles: list[AttributionModel], averaged: AttributionModel
) -> None:
    rows = feature_matrix(eval_table.frame)[:40]
    mean = np.mean([m.cause_contributions(rows) for m in singles], axis=0)
    np.testing.assert_allclose(averaged.cause_contributions(rows), mean, rtol=0, atol=1e-9)
    # The per-cause split (shap_by_cause.py) reads the averaged booster like any other.
    asked = np.tile(np.array([0, 4, 10]), (len(rows), 1))
    picked = contributions_for(averaged.cause_booster, rows, asked)
    np.testing.assert_allclose(picked, np.take_along_axis(mean, asked[:, :, None], axis=1), rtol=0, atol=1e-9)


def test_an_averaged_model_saves_and_loads_as_lightgbm_text(
    eval_table: WindowTable, averaged: AttributionModel, tmp_path: Path
) -> None:
    averaged.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    rows = feature_matrix(eval_table.frame)
    np.testing.assert_array_equal(loaded.cause_scores(rows), averaged.cause_scores(rows))
    np.testing.assert_allclose(loaded.cause_scores(rows).sum(axis=1), 1.0)
    text = (tmp_path / "m.cause.txt").read_text()
    assert text.startswith("tree\n") and text.count("\nTree=") == len(SEEDS) * ROUNDS * 11
    assert json.loads((tmp_path / "m.json").read_text())["training"]["members"] == len(SEEDS)


def test_fit_cause_booster_averages_as_train_model_does(
    eval_table: WindowTable, averaged: AttributionModel
) -> None:
    alone = fit_cause_booster(eval_table.frame, rounds=ROUNDS, seed=SEEDS[0], members=len(SEEDS))
    rows = feature_matrix(eval_table.frame)
    np.testing.assert_array_equal(_raw(alone, rows), _raw(averaged.cause_booster, rows))


def test_boosters_that_cannot_be_averaged_are_refused(
    eval_table: WindowTable, singles: list[AttributionModel]
) -> None:
    with pytest.raises(BoosterMeanError, match="no booster"):
        mean_booster([])
    with pytest.raises(BoosterMeanError, match="differ"):
        mean_booster([singles[0].cause_booster, singles[0].gate_booster])
    assert mean_booster([singles[0].gate_booster]) is singles[0].gate_booster
    # A linear tree's leaves are linear models, not values to divide: refused, not mis-averaged.
    rows = feature_matrix(eval_table.frame)[:, :4]
    target = np.nan_to_num(rows[:, 0])
    linear = [
        lgb.train(
            {"objective": "regression", "linear_tree": True, "verbosity": -1, "seed": seed},
            lgb.Dataset(np.nan_to_num(rows), target),
            num_boost_round=3,
        )
        for seed in (1, 2)
    ]
    with pytest.raises(BoosterMeanError, match="linear trees"):
        mean_booster(linear)
    with pytest.raises(TrainingError, match="members must be at least 1"):
        train_model(eval_table.frame, window_s=eval_table.window_s, members=0)
