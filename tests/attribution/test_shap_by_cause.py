"""SHAP values for the top causes only equal the full `pred_contrib` bit for bit (the shipped model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from otelprobe.attribution.features import FEATURE_NAMES
from otelprobe.attribution.model import load_model
from otelprobe.attribution.shap_by_cause import class_boosters, contributions_for

MODEL = Path(__file__).resolve().parents[2] / "models" / "default"


def test_top_cause_contributions_equal_the_full_computation() -> None:
    model = load_model(MODEL)
    rng = np.random.default_rng(7)
    features = rng.normal(0.0, 2.0, size=(40, len(FEATURE_NAMES)))
    features[rng.random(features.shape) < 0.2] = np.nan  # LightGBM's missing values take their own path
    full = model.cause_contributions(features)
    top = np.argsort(-model.cause_scores(features), axis=1, kind="stable")[:, :3]

    picked = contributions_for(model.cause_booster, features, top)

    assert picked.shape == (40, 3, len(FEATURE_NAMES) + 1)
    assert np.array_equal(picked, np.take_along_axis(full, top[:, :, None], axis=1))
    split = class_boosters(model.cause_booster)
    assert split is not None and len(split) == len(model.metadata.causes)
    assert class_boosters(model.cause_booster) is split  # split once per booster


def test_a_booster_it_cannot_split_falls_back_to_the_full_computation() -> None:
    model = load_model(MODEL)
    features = np.zeros((3, len(model.metadata.gate_features)))
    assert class_boosters(model.gate_booster) is None  # binary: nothing to split
    picked = contributions_for(model.gate_booster, features, np.zeros((3, 1), dtype=np.int64))
    full = np.asarray(model.gate_booster.predict(features, pred_contrib=True))
    assert np.array_equal(picked[:, 0, :], full)


def test_causes_not_asked_for_are_zero_and_the_rest_unchanged() -> None:
    """attribute asks for no SHAP values for unlikely causes (-1); the split and the fallback
    path both leave those zero and give the asked ones exactly."""
    model = load_model(MODEL)
    rng = np.random.default_rng(11)
    features = rng.normal(0.0, 2.0, size=(30, len(FEATURE_NAMES)))
    full = model.cause_contributions(features)
    top = np.argsort(-model.cause_scores(features), axis=1, kind="stable")[:, :3]
    asked = top.copy()
    asked[rng.random(asked.shape) < 0.5] = -1
    asked[:, 0] = top[:, 0]

    picked = contributions_for(model.cause_booster, features, asked)

    skipped = asked < 0
    assert skipped.any() and np.all(picked[skipped] == 0.0)
    expected = np.take_along_axis(full, top[:, :, None], axis=1)
    assert np.array_equal(picked[~skipped], expected[~skipped])
    gate = np.zeros((3, len(model.metadata.gate_features)))  # the fallback path (not split)
    fallback = contributions_for(model.gate_booster, gate, np.array([[0], [-1], [0]]))
    assert np.all(fallback[1] == 0.0) and np.array_equal(
        fallback[0, 0], np.asarray(model.gate_booster.predict(gate, pred_contrib=True))[0]
    )
