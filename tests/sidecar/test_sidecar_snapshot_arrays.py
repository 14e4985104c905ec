"""A pipeline state saved by the code before the baselines and burn-rate counts became arrays
(tests/sidecar/data/pipeline_state_per_series.json.gz: 3 eval-402 series after 20 windows, written
by snapshot.py at 00fd9f4) loads into the array code, is saved again in the same JSON, and the next
window's features and SLO verdicts are bit for bit what the old code computed from it (the columns
the old code had: the per-cause scope evidence and the series' own recent past, added since, are not
in its digest)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from otelprobe.attribution.features import FeatureEngine
from otelprobe.attribution.records import read_records
from otelprobe.attribution.scope_evidence import CAUSE_EVIDENCE_FEATURES
from otelprobe.attribution.slo import SeriesWindow, SLOEvaluator
from otelprobe.attribution.windows import assign_windows
from otelprobe.sidecar import snapshot

ROOT = Path(__file__).resolve().parents[2]
SAVED = Path(__file__).resolve().parent / "data" / "pipeline_state_per_series.json.gz"


def table_sha256(table: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for name in sorted(table.columns):
        values = table[name].to_numpy()
        digest.update(name.encode())
        if values.dtype.kind == "f":
            digest.update(np.where(np.isnan(values), np.nan, values).astype(np.float64).tobytes())
        elif values.dtype.kind in "biu":
            digest.update(values.astype(np.int64).tobytes())
        else:
            digest.update(repr([repr(v) for v in values.tolist()]).encode())
    return digest.hexdigest()


def columns_of_the_old_code(table: pd.DataFrame) -> pd.DataFrame:
    added_since = [
        c for c in table.columns if c.split(".")[0] in CAUSE_EVIDENCE_FEATURES or c.startswith("own_recent_")
    ]
    return table.drop(columns=added_since)


def verdicts_sha256(windows: list[SeriesWindow]) -> str:
    rows = [(w.target, w.vantage, w.probes, w.slos, w.violating_slos) for w in windows]
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def test_a_state_saved_per_series_restores_into_the_arrays_and_carries_on_identically() -> None:
    with gzip.open(SAVED, "rt") as source:
        saved: dict[str, Any] = json.load(source)
    engine, evaluator = FeatureEngine(), SLOEvaluator(None, 2.0)
    snapshot.load_engine(engine, saved["state"]["engine"])
    assert snapshot.load_evaluator(evaluator, saved["state"]["evaluator"]) == 3
    # Saved again, the JSON is what the old code wrote (a downgrade reads it too).
    again = json.loads(
        json.dumps({"engine": snapshot.dump_engine(engine), "evaluator": snapshot.dump_evaluator(evaluator)})
    )
    assert again == saved["state"]

    frame, _ = read_records([str(ROOT / "data/lab/eval-402/traces.jsonl.gz")])
    series = {tuple(s) for s in saved["series"]}
    chosen = frame[[key in series for key in zip(frame["target"], frame["vantage"], strict=True)]]
    records = assign_windows(chosen.sort_values("start_ns", kind="stable").reset_index(drop=True), 2.0)
    window = records[records["window_start_ns"] == saved["next_window_ns"]]
    features = columns_of_the_old_code(engine.features(window, 2.0))
    assert table_sha256(features) == saved["next_features_sha256"]
    assert (
        verdicts_sha256(evaluator.evaluate(saved["next_window_ns"], window)) == saved["next_verdicts_sha256"]
    )
