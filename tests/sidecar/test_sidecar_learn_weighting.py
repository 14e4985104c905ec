"""How much operator-confirmed windows count in a retrain (feedback_weights.py): the same total per
incident, and a cause's confirmed windows capped to a share of that cause's lab weight."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from otelprobe.attribution.labels import HEALTHY
from otelprobe.causes import ROOT_CAUSES
from otelprobe.sidecar.config import load_sidecar_text
from otelprobe.sidecar.feedback_weights import FeedbackWeighting, feedback_weights, lab_label_weights
from otelprobe.sidecar.retrain import weighting_of


def lab_frame(per_cause: int) -> pd.DataFrame:
    """`per_cause` teaching windows of every cause, one compound window, healthy and cold rows."""
    rows: list[dict[str, Any]] = []
    for cause in ROOT_CAUSES:
        rows += [{"label": cause, "label_causes": None, "warm": True, "symptomatic": True}] * per_cause
    rows.append(
        {
            "label": "packet_loss",
            "label_causes": "packet_loss,bandwidth_limit",
            "warm": True,
            "symptomatic": True,
        }
    )
    rows += [{"label": HEALTHY, "label_causes": None, "warm": True, "symptomatic": True}] * 30
    rows += [{"label": "bandwidth_limit", "label_causes": None, "warm": False, "symptomatic": True}] * 50
    return pd.DataFrame(rows).assign(label_scope="path")


def confirmed(incidents: dict[str, int], label: str = "bandwidth_limit", quiet: int = 0) -> pd.DataFrame:
    """Confirmed windows: `incidents` maps an incident to its number of teaching windows; each
    incident also has `quiet` warm windows without symptoms (they teach nothing)."""
    rows = []
    for incident, count in incidents.items():
        rows += [{"feedback_incident": incident, "label": label, "warm": True, "symptomatic": True}] * count
        rows += [{"feedback_incident": incident, "label": label, "warm": True, "symptomatic": False}] * quiet
    return pd.DataFrame(rows)


def test_lab_weights_count_compound_windows_half_and_only_teaching_ones() -> None:
    totals = lab_label_weights(lab_frame(100))
    assert totals["bandwidth_limit"] == pytest.approx(100.5)  # cold windows do not teach
    assert totals["packet_loss"] == pytest.approx(100.5)
    assert totals["dns_latency"] == pytest.approx(100.0)
    assert totals[HEALTHY] == 30


def test_every_confirmed_incident_weighs_the_same_whatever_its_window_count() -> None:
    frame = confirmed({"wide": 30, "a": 3, "b": 3}, quiet=2)
    weights = feedback_weights(frame, {"bandwidth_limit": 1e6}, FeedbackWeighting(3.0, None, True))
    teaching = frame["symptomatic"].to_numpy()
    per_incident = pd.Series(weights[teaching]).groupby(frame["feedback_incident"][teaching].to_numpy()).sum()
    assert per_incident.to_numpy() == pytest.approx([36.0, 36.0, 36.0])  # 3 x the mean of 12 windows
    assert weights[teaching].sum() == pytest.approx(3.0 * 36)  # the total of plain per-window weights
    assert np.all(weights[~teaching] == 3.0)  # windows that teach nothing are left alone
    per_window = feedback_weights(frame, {"bandwidth_limit": 1e6}, FeedbackWeighting(3.0, None, False))
    assert np.all(per_window == 3.0)


def test_a_causes_confirmed_windows_are_capped_to_a_share_of_its_lab_weight() -> None:
    lab = lab_label_weights(lab_frame(100))
    frame = pd.concat(
        [
            confirmed({"x": 40, "y": 20}),
            confirmed({"z": 2}, label="tls_slow"),
            confirmed({"n": 5}, label=HEALTHY),
        ],
        ignore_index=True,
    )
    weights = feedback_weights(frame, lab, FeedbackWeighting(3.0, 0.1, True))
    by_label = pd.Series(weights).groupby(frame["label"].to_numpy()).sum()
    assert by_label["bandwidth_limit"] == pytest.approx(0.1 * 100.5)  # 180 capped to a tenth of the lab's
    assert by_label["tls_slow"] == pytest.approx(6.0)  # under its cap (10): unchanged
    assert by_label[HEALTHY] == pytest.approx(0.1 * 30)  # against the lab's healthy symptomatic windows
    bandwidth = frame["label"].to_numpy() == "bandwidth_limit"
    assert len(set(np.round(weights[bandwidth & (frame["feedback_incident"] == "x").to_numpy()], 9))) == 1
    # the cap scales a cause's incidents alike: x and y still weigh the same in total
    assert weights[(frame["feedback_incident"] == "x").to_numpy()].sum() == pytest.approx(0.05 * 100.5)


def test_the_weighting_comes_from_the_config_and_old_job_specs_get_the_defaults() -> None:
    learning = load_sidecar_text(
        "state_dir: s\n"
        "learning: {feedback_weight: 2, feedback_cap_share: null, feedback_per_incident: false}\n"
    ).learning
    assert (learning.feedback_weight, learning.feedback_cap_share, learning.feedback_per_incident) == (
        2.0,
        None,
        False,
    )
    assert weighting_of(
        {"feedback_weight": 2.0, "feedback_cap_share": None, "feedback_per_incident": False}
    ) == (FeedbackWeighting(2.0, None, False))
    default = load_sidecar_text("state_dir: s\n").learning
    assert weighting_of({"feedback_weight": 3.0}) == FeedbackWeighting(
        default.feedback_weight, default.feedback_cap_share, default.feedback_per_incident
    )
