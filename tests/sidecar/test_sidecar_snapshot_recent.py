"""A sidecar restarted between two windows carries on with the same neighbour evidence: the series'
recent symptoms and cause signatures (features.py) are saved in its state and read back, so the
scope evidence over the last windows (scope_evidence.py `*_recent_share`) does not restart empty."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from otelprobe.attribution.features import FeatureEngine
from otelprobe.attribution.scope_evidence import CAUSE_EVIDENCE_FEATURES, column_of
from otelprobe.causes import ROOT_CAUSES
from otelprobe.sidecar import snapshot
from tests.support.probe_records import recording_windows

EVAL_402 = Path(__file__).resolve().parents[2] / "data" / "lab" / "eval-402" / "traces.jsonl.gz"
EVIDENCE = [column_of(f, c) for f in CAUSE_EVIDENCE_FEATURES for c in ROOT_CAUSES]


def _slots() -> list[pd.DataFrame]:
    frame = recording_windows(EVAL_402, 50)
    return [part for _, part in frame.groupby("window_start_ns", sort=True)]


def test_restart_between_windows_keeps_the_recent_neighbour_evidence() -> None:
    slots = _slots()
    uninterrupted, before_restart = FeatureEngine(), FeatureEngine()
    for part in slots[:40]:
        uninterrupted.features(part, 2.0)
        before_restart.features(part, 2.0)
    saved = json.loads(json.dumps(snapshot.dump_engine(before_restart)))
    restarted = FeatureEngine()
    snapshot.load_engine(restarted, saved)
    forgetful = FeatureEngine()  # the same state with the recent history dropped
    snapshot.load_engine(forgetful, saved)
    forgetful.recent.clear()
    key = ["target", "vantage"]
    differs_without_history = 0
    for part in slots[40:]:
        expected = uninterrupted.features(part, 2.0).sort_values(key).reset_index(drop=True)
        got = restarted.features(part, 2.0).sort_values(key).reset_index(drop=True)
        np.testing.assert_array_equal(expected[EVIDENCE].to_numpy(), got[EVIDENCE].to_numpy())
        without = forgetful.features(part, 2.0).sort_values(key).reset_index(drop=True)
        differs_without_history += int(
            (
                np.nan_to_num(without[EVIDENCE].to_numpy()) != np.nan_to_num(expected[EVIDENCE].to_numpy())
            ).any()
        )
    # The saved history matters: without it the first windows after a restart would differ.
    assert differs_without_history >= 1
