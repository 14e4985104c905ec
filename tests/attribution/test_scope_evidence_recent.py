"""Same-cause neighbour evidence over a series' last windows (scope_evidence.py `*_recent_share`): a
neighbour that showed the cause's symptom in one of its last two windows still counts, one that
showed it three windows ago no longer does, and the live engine (a window at a time) gives the
offline table's values."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from otelprobe.attribution.dataset import WindowTable
from otelprobe.attribution.features import FeatureEngine
from otelprobe.attribution.model import (
    SAME_WINDOW_SCOPE_FEATURES,
    AttributionModel,
    load_model,
    scope_inputs,
    scope_inputs_per_cause,
)
from otelprobe.attribution.records import records_frame
from otelprobe.attribution.scope_evidence import (
    RECENT_EVIDENCE_FEATURES,
    SAME_WINDOW_EVIDENCE_FEATURES,
    column_of,
)
from otelprobe.attribution.windows import assign_windows
from otelprobe.causes import ROOT_CAUSES
from tests.support.probe_records import SECOND_NS, T0_NS, offline_and_live, recording_windows, series

EVAL_402 = Path(__file__).resolve().parents[2] / "data" / "lab" / "eval-402" / "traces.jsonl.gz"
SAME = column_of("vantage_same_cause_share", "backend_slow")
RECENT = column_of("vantage_same_cause_recent_share", "backend_slow")


def _one_slow_window_on_b() -> pd.DataFrame:
    """Targets a, b, c from one vantage, a probe a second; b's backend is 60 ms slower for the two
    probes of one window (seconds 40-41, window 20), the rest healthy throughout."""
    records = []
    for target in ("a", "b", "c"):
        records += series(0.01, 50, 0, {}, target, "eu")
    slowed = [
        replace(r, ttfb_s=r.ttfb_s + 0.06)
        if r.target == "b" and 40 <= (r.start_ns - T0_NS) / SECOND_NS < 42
        else r
        for r in records
    ]
    return assign_windows(records_frame(slowed), 2.0)


def test_a_neighbours_symptom_counts_for_its_next_two_windows_then_not() -> None:
    rows = FeatureEngine().features(_one_slow_window_on_b(), 2.0)
    a = rows[rows["target"] == "a"].sort_values("window_start_ns").reset_index(drop=True)
    # Window 20 holds b's slow probes: both shares see b (1 of a's 2 neighbours).
    assert a.loc[20, SAME] == 0.5 and a.loc[20, RECENT] == 0.5
    # The next two windows: b is healthy now, but it showed a slow backend within the last three.
    for window in (21, 22):
        assert a.loc[window, SAME] == 0.0
        assert a.loc[window, RECENT] == 0.5
    # Three windows on, it has aged out.
    assert a.loc[23, RECENT] == 0.0
    # A series' own past is not neighbour evidence: b's own share stays 0.
    b = rows[rows["target"] == "b"].sort_values("window_start_ns").reset_index(drop=True)
    assert b.loc[21, RECENT] == 0.0


def test_live_window_by_window_equals_the_offline_table_on_a_recording() -> None:
    offline, live = offline_and_live(recording_windows(EVAL_402, 60))
    columns = [column_of(f, c) for f in RECENT_EVIDENCE_FEATURES for c in ROOT_CAUSES]
    np.testing.assert_array_equal(offline[columns].to_numpy(), live[columns].to_numpy())
    # Over the last windows a neighbour shows at least what it shows now, and on a recording with
    # intermittent faults (loss, 5xx at a rate) sometimes more.
    same = offline[[column_of(f, c) for f in SAME_WINDOW_EVIDENCE_FEATURES for c in ROOT_CAUSES]].to_numpy()
    recent = offline[columns].to_numpy()
    assert np.array_equal(np.isnan(same), np.isnan(recent))
    seen = ~np.isnan(same)
    assert (recent[seen] >= same[seen]).all()
    assert (recent[seen] > same[seen]).sum() > 50


def test_a_model_from_before_the_recent_shares_still_loads_and_reads_its_own_inputs(
    eval_table: WindowTable, trained_model: AttributionModel, tmp_path: Path
) -> None:
    import lightgbm as lgb

    frame = eval_table.frame[eval_table.frame["label"].isin(ROOT_CAUSES)].reset_index(drop=True)
    causes = frame["label"].map(ROOT_CAUSES.index).to_numpy(dtype=np.float64)
    scopes = frame["label_scope"].map({"vantage": 0, "target": 1, "path": 2}).fillna(2).to_numpy()
    older = scope_inputs(frame, causes, SAME_WINDOW_SCOPE_FEATURES)
    params = {"objective": "multiclass", "num_class": 3, "num_threads": 1, "verbosity": -1, "seed": 7}
    booster = lgb.train(params, lgb.Dataset(older, scopes), 5)
    metadata = dataclasses.replace(trained_model.metadata, scope_features=SAME_WINDOW_SCOPE_FEATURES)
    AttributionModel(trained_model.gate_booster, trained_model.cause_booster, booster, metadata).save(
        tmp_path / "older"
    )
    loaded = load_model(tmp_path / "older")
    assert loaded.metadata.scope_features == SAME_WINDOW_SCOPE_FEATURES
    got = loaded.scopes_for_every_cause(frame.head(20))
    per_cause = scope_inputs_per_cause(frame.head(20), len(ROOT_CAUSES), SAME_WINDOW_SCOPE_FEATURES)
    expected = booster.predict(per_cause.reshape(-1, len(SAME_WINDOW_SCOPE_FEATURES))).reshape(got.shape)
    np.testing.assert_array_equal(got, expected)
