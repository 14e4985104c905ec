"""What `train_model` records in the model's metadata `metrics`: the counts that taught it and what
its calibration split (held-out incidents) measured; and the shipped model's `metrics` agreeing
with its training data and its evaluation reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from otelprobe.attribution.attribute import model_label
from otelprobe.attribution.dataset import WindowTable
from otelprobe.attribution.evaluate import held_out_summary
from otelprobe.attribution.model import load_model, softmax
from otelprobe.attribution.train import file_sha256, fit_temperature, train_model
from otelprobe.causes import ROOT_CAUSES

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "default"
CAMPAIGNS = ("eval-402", "shifted-503", "eval-202")

pytestmark = pytest.mark.timeout(300)


def test_training_records_its_counts_and_its_calibration_split_in_metrics(
    eval_table: WindowTable, tmp_path: Path
) -> None:
    # Trained on eval-202 for speed: the figures' consistency is under test, not their size.
    model = train_model(eval_table.frame, window_s=eval_table.window_s, rounds=20)
    metrics, training = model.metadata.metrics, model.metadata.training

    counts = metrics["training"]
    assert counts["rows_per_cause"] == training["windows_per_cause"]
    assert sum(counts["rows_per_cause"].values()) == counts["teaching_rows"] == training["windows"]
    # A compound window teaches each of its causes: fewer windows than rows, but not fewer than half.
    assert counts["teaching_rows"] / 2 <= counts["teaching_windows"] < counts["teaching_rows"]
    assert counts["gate_windows"] == training["gate_windows"]
    assert counts["incident_ids"] == training["incidents"]

    validation = metrics["validation"]
    assert validation["temperature"] == model.metadata.temperature
    assert 0 < validation["incident_ids"] < counts["incident_ids"]
    assert 0 < validation["windows"] <= validation["rows"] < counts["teaching_rows"]
    before, after = validation["uncalibrated"], validation["calibrated"]
    # One temperature divides every score: the ranking, so AC@k, cannot change ...
    assert (before["cause_ac1"], before["cause_ac3"]) == (after["cause_ac1"], after["cause_ac3"])
    assert 0.5 < after["cause_ac1"] <= after["cause_ac3"] <= 1.0
    # ... and it is the temperature of least log-loss on these windows (T = 1 is on its grid).
    assert after["log_loss"] <= before["log_loss"] + 1e-9
    assert 0.0 <= after["ece"] <= 1.0

    # The series it saw, for `otelprobe evaluate`'s held-out check.
    assert training["targets"] == sorted(set(eval_table.frame["target"]))
    assert training["vantages"] == sorted(set(eval_table.frame["vantage"]))

    model.save(tmp_path / "m")
    assert load_model(tmp_path / "m").metadata.metrics == metrics  # plain JSON, no NaN


def test_the_shipped_metrics_are_its_own_training_counts_and_its_reports() -> None:
    model = load_model(SHIPPED)
    metrics, training = model.metadata.metrics, model.metadata.training
    assert metrics["training"]["rows_per_cause"] == training["windows_per_cause"]
    assert metrics["training"]["gate_windows"] == training["gate_windows"]
    assert metrics["validation"]["temperature"] == model.metadata.temperature
    assert set(training["windows_per_cause"]) == set(ROOT_CAUSES)

    label = model_label(model)
    assert set(metrics["held_out"]) == set(CAMPAIGNS)
    for campaign in CAMPAIGNS:
        path = REPO / "models" / "evaluation" / campaign / "report.json"
        recorded = dict(metrics["held_out"][campaign])
        source = recorded.pop("report")
        # The figures are the report's, unrounded; a regenerated report must be recorded again.
        assert source["path"] == f"models/evaluation/{campaign}/report.json"
        assert source["sha256"] == file_sha256(path)
        assert recorded == held_out_summary(json.loads(path.read_text()), model=label)
    # A goal is met exactly when its unrounded value clears its target (the card once called
    # 0.94976 >= 0.95 met): the metadata's `met` must say what the value says.
    for campaign in CAMPAIGNS:
        for goal in metrics["held_out"][campaign]["goals"]:
            sign, bound = goal["target"].split()
            clears = goal["value"] >= float(bound) if sign == "≥" else goal["value"] <= float(bound)
            assert goal["met"] is clears, (campaign, goal)


def test_a_compound_window_is_scored_by_its_set_of_causes_not_row_by_row() -> None:
    rng = np.random.default_rng(3)
    raw = rng.normal(0.0, 3.0, size=(4000, 11))
    probs = softmax(raw)
    # Labels drawn from the scores themselves: T = 1 is the calibrated temperature.
    single = np.array([rng.choice(11, p=p) for p in probs])
    # A quarter are compound: the drawn cause plus any other (most of which the scores rule out).
    compound = np.arange(3000, 4000)
    other = (single[compound] + 1 + rng.integers(0, 10, len(compound))) % 11
    rows = np.concatenate([raw, raw[compound]])
    classes = np.concatenate([single, other])
    windows = np.concatenate([np.arange(4000), compound])
    assert 0.9 < fit_temperature(rows, classes, windows) < 1.1
    assert fit_temperature(rows, classes) > 1.3  # row by row: flattened for the pairs
