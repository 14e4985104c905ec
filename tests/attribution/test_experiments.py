"""experiments.py and table_cache.py on the shipped held-out recording: recordings found by what
they are, cached tables equal to fresh ones, scores that agree with the per-window predictions,
an ablation that really removes features, magnitude bands that match the generator's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from otelprobe.attribution.dataset import WindowTable, read_window_table
from otelprobe.attribution.features import FEATURE_NAMES
from otelprobe.attribution.model import DEFAULT_PARAMS, AttributionModel
from otelprobe.attribution.table_cache import cache_key, read_table_cached
from otelprobe.attribution.train import train_model
from otelprobe.causes import ROOT_CAUSES, SCOPES
from otelprobe.lab.dataset import experiments
from otelprobe.lab.dataset.generator import generate_campaign

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "data" / "lab"
FEW_ROUNDS = 30


@pytest.fixture(scope="module")
def held_out() -> experiments.Recording:
    return experiments.shipped_recordings(LAB).held_out[0]


@pytest.fixture(scope="module")
def table(held_out: experiments.Recording, tmp_path_factory: pytest.TempPathFactory) -> WindowTable:
    return read_table_cached([held_out.traces], tmp_path_factory.mktemp("tables"))


@pytest.fixture(scope="module")
def model(table: WindowTable) -> AttributionModel:
    # Trained and scored on the same (held-out) recording: these tests check plumbing and
    # agreement between functions, not the model's quality (notebooks/ and evaluate do that).
    return train_model(table.frame, window_s=table.window_s, rounds=FEW_ROUNDS)


def _copy_recording(recording: experiments.Recording, directory: Path, started: str | None = None) -> Path:
    directory.mkdir()
    shutil.copy(recording.traces.parent / "scenario.yaml", directory)
    meta = json.loads((recording.traces.parent / "lab.json").read_text())
    meta["started"] = started or meta["started"]
    (directory / "lab.json").write_text(json.dumps(meta))
    (directory / recording.traces.name).symlink_to(recording.traces)
    return directory


def test_recordings_are_found_by_their_vantages_not_their_names(tmp_path: Path) -> None:
    shipped = experiments.shipped_recordings(LAB)
    assert shipped.train and all(r.split == "train" for r in shipped.train)
    assert shipped.held_out and all((r.profile, r.split) == ("standard", "eval") for r in shipped.held_out)
    assert all(r.split == "eval" and r.profile != "standard" for r in shipped.shifted)
    _copy_recording(shipped.train[0], tmp_path / "zz-campaign")
    _copy_recording(shipped.held_out[0], tmp_path / "aaa")
    stranger = tmp_path / "handmade"
    stranger.mkdir()
    (stranger / "scenario.yaml").write_text("name: x\nvantages:\n- {name: near}\n")
    (stranger / "traces.jsonl").write_text("")
    renamed = experiments.shipped_recordings(tmp_path)
    assert [r.name for r in renamed.train] == ["zz-campaign"]
    assert [r.name for r in renamed.held_out] == ["aaa"]
    assert [r.name for r in renamed.unknown] == ["handmade"]


def test_a_campaign_of_a_newer_lab_supersedes_older_ones(tmp_path: Path) -> None:
    shipped = experiments.shipped_recordings(LAB)
    new = _copy_recording(shipped.train[0], tmp_path / "a-new", started="2030-01-01T00:00:00+00:00")
    again = _copy_recording(shipped.train[0], tmp_path / "b-new-too", started="2029-01-01T00:00:00+00:00")
    old = _copy_recording(shipped.train[0], tmp_path / "c-old", started="2020-01-01T00:00:00+00:00")
    scenario = yaml.safe_load((old / "scenario.yaml").read_text())
    scenario["vantages"] = [{**v, "delay": v["delay"] * 2} for v in scenario["vantages"][:2]]
    (old / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    _copy_recording(shipped.held_out[0], tmp_path / "eval")
    found = experiments.shipped_recordings(tmp_path)
    assert [r.name for r in found.train] == [new.name, again.name]
    assert [r.name for r in found.superseded] == [old.name]


def test_the_lab_dir_is_found_from_the_notebooks_directory() -> None:
    assert experiments.find_lab_dir(ROOT / "notebooks") == LAB
    assert experiments.find_lab_dir(ROOT) == LAB


def test_missing_recordings_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(experiments.ExperimentError, match="need a standard train and a standard eval"):
        experiments.shipped_recordings(tmp_path)
    with pytest.raises(experiments.ExperimentError, match="no data/lab directory"):
        experiments.find_lab_dir(tmp_path)


@pytest.mark.slow  # builds the held-out window table afresh
def test_a_cached_table_equals_a_fresh_one(held_out: experiments.Recording, tmp_path: Path) -> None:
    fresh = read_window_table([held_out.traces])
    built = read_table_cached([held_out.traces], tmp_path)
    entries = sorted(p.suffix for p in tmp_path.iterdir())
    assert entries == [".json", ".npz"]
    cached = read_table_cached([held_out.traces], tmp_path)
    for table in (built, cached):
        pd.testing.assert_frame_equal(table.frame, fresh.frame)
        assert (table.window_s, table.records, table.reader) == (fresh.window_s, fresh.records, fresh.reader)


@pytest.mark.slow  # builds the held-out window table afresh
def test_a_damaged_entry_is_rebuilt(held_out: experiments.Recording, tmp_path: Path) -> None:
    read_table_cached([held_out.traces], tmp_path)
    npz = next(tmp_path.glob("*.npz"))
    npz.write_bytes(npz.read_bytes()[:1000])
    again = read_table_cached([held_out.traces], tmp_path)
    assert len(again.frame) > 1000 and npz.stat().st_size > 1000


def test_the_cache_key_follows_the_recording_bytes(held_out: experiments.Recording, tmp_path: Path) -> None:
    copy = tmp_path / held_out.traces.name
    shutil.copy(held_out.traces, copy)
    assert cache_key([copy]) == cache_key([held_out.traces])
    with open(copy, "ab") as handle:
        handle.write(b"\n")
    assert cache_key([copy]) != cache_key([held_out.traces])


def test_families_partition_the_schema() -> None:
    families = experiments.feature_families()
    members = [name for names in families.values() for name in names]
    assert sorted(members) == sorted(FEATURE_NAMES)
    family_of = {name: family for family, names in families.items() for name in names}
    assert family_of["vantage_fail_recent_share"] == "cross-series"
    assert family_of["dns_error_share"] == "error shares"
    assert family_of["detail_cert_share"] == "error shares"
    assert family_of["dominant_ttfb_share"] == "latency shapes"
    assert family_of["connect_retry_share"] == "latency shapes"
    assert family_of["ttfb_p50_mag"] == "latency magnitudes"
    assert family_of["cert_days_left"] == "payload, certificate, kind"


def test_without_features_blanks_only_those_columns(table: WindowTable) -> None:
    dropped = experiments.feature_families()["error shares"]
    before = table.frame.copy()
    blanked = experiments.without_features(table.frame, dropped)
    assert blanked[list(dropped)].isna().all().all()
    kept = [c for c in table.frame.columns if c not in dropped]
    pd.testing.assert_frame_equal(blanked[kept], table.frame[kept])
    pd.testing.assert_frame_equal(table.frame, before)
    with pytest.raises(experiments.ExperimentError, match="no_such_feature"):
        experiments.without_features(table.frame, ["no_such_feature"])


def test_a_model_trained_without_a_family_never_uses_it(table: WindowTable) -> None:
    dropped = experiments.feature_families()["error shares"]
    frame = experiments.without_features(table.frame, dropped)
    ablated = train_model(frame, window_s=table.window_s, rounds=FEW_ROUNDS)
    gain = experiments.gain_importance(ablated)
    assert (gain[list(dropped)] == 0).all()
    assert gain.drop(list(dropped)).sum() > 0


def test_scores_agree_with_the_per_window_predictions(model: AttributionModel, table: WindowTable) -> None:
    scores = experiments.score_model_on(model, table.frame)
    pred = experiments.predictions(model, table.frame)
    assert scores.n_cases == len(pred) == int(experiments.scoring_windows(table.frame).sum()) > 100
    assert set(pred["label"]) <= set(ROOT_CAUSES) and set(pred["true_cause_scope"]) <= set(SCOPES)
    assert scores.ac1 == pytest.approx((pred["true_rank"] == 1).mean())
    assert scores.ac3 == pytest.approx((pred["true_rank"] <= 3).mean())
    assert scores.scope_ac1 == pytest.approx(((pred["true_rank"] == 1) & pred["scope_right"]).mean())
    right = pred["true_rank"] == 1
    assert (pred.loc[right, "predicted"] == pred.loc[right, "label"]).all()
    assert (pred["predicted_score"] >= pred["true_score"]).all()


def test_misattributions_are_the_confident_wrong_answers_with_evidence(
    model: AttributionModel, table: WindowTable
) -> None:
    pred = experiments.predictions(model, table.frame)
    mistakes = experiments.misattributions(model, table.frame, limit=5)
    assert len(mistakes) == min(5, int((pred["true_rank"] > 1).sum()))
    assert (mistakes["true_rank"] > 1).all()
    assert mistakes["predicted_score"].is_monotonic_decreasing
    said = mistakes["predicted_evidence"].str.len() > 0
    assert (said == mistakes["attributed"]).all()  # evidence exactly where attribute() answers
    assert mistakes["predicted_score"].max() == pytest.approx(
        pred.loc[pred["true_rank"] > 1, "predicted_score"].max()
    )


def test_importances_cover_every_feature(model: AttributionModel, table: WindowTable) -> None:
    gain = experiments.gain_importance(model)
    shap = experiments.shap_importance(model, table.frame)
    assert set(gain.index) == set(FEATURE_NAMES) and gain.is_monotonic_decreasing
    assert list(shap.columns) == list(ROOT_CAUSES) and list(shap.index) == list(FEATURE_NAMES)
    assert (shap.to_numpy() >= 0).all()
    # A certificate window is told by its failure's detail, not by latency.
    assert experiments.feature_family(str(shap["certificate_invalid"].idxmax())) == "error shares"


def test_ablation_and_tuning_rows(table: WindowTable) -> None:
    tables = experiments.Tables(table, table)
    dropped = {"cross-series": experiments.feature_families()["cross-series"]}
    ablation = experiments.ablation(tables, dropped, rounds=FEW_ROUNDS)
    assert list(ablation["dropped"]) == ["(none)", "cross-series"]
    assert list(ablation["features dropped"]) == [0, len(dropped["cross-series"])]
    # Neighbours' evidence is what the scope model decides from.
    assert ablation["scope AC@1"].iloc[1] < ablation["scope AC@1"].iloc[0]
    grid = experiments.tuning_grid(tables, [{"rounds": 10}, {"rounds": 10, "num_leaves": 4}])
    assert list(grid["rounds"]) == [10, 10]
    assert list(grid["num_leaves"]) == [DEFAULT_PARAMS["num_leaves"], 4]
    assert (grid["fit_s"] > 0).all() and grid["AC@1"].between(0, 1).all()


def test_magnitude_bands_match_the_generators_bands() -> None:
    campaign = generate_campaign(5, split="eval", incidents=60)
    entries = [e for e in campaign["timeline"] if e.get("magnitude") is not None and "band" in e]
    assert len(entries) > 20
    for entry in entries:
        assert experiments.magnitude_band(entry["fault"]["kind"], entry["magnitude"]) == entry["band"], entry
    assert experiments.magnitude_band("bandwidth_limit", 24_000) == "gross"  # a rate: lower is worse
    assert experiments.magnitude_band("refused", None) == experiments.NO_INTENSITY


def test_every_case_joins_its_incident(
    model: AttributionModel, table: WindowTable, held_out: experiments.Recording
) -> None:
    pred = experiments.predictions(model, table.frame)
    incidents = experiments.read_incidents([held_out])
    joined = experiments.with_incidents(pred, incidents)
    assert joined.index.equals(pred.index)
    assert joined["start_ns"].notna().all()
    assert (joined["incident"] == joined["label_incident"]).all()
    assert (
        (joined["start_ns"] < joined["window_end_ns"]) & (joined["end_ns"] > joined["window_start_ns"])
    ).all()
    by_band = experiments.errors_by_band(pred, incidents)
    assert by_band["cases"].sum() == len(pred)
    assert set(by_band["band"]) <= {"subtle", "low", "medium", "high", "gross", experiments.NO_INTENSITY}
    assert np.isclose(
        (by_band["ac1"] * by_band["cases"]).sum() / by_band["cases"].sum(), (pred["true_rank"] == 1).mean()
    )


def test_scope_cross_validation_sees_what_the_neighbour_evidence_is_worth(table: WindowTable) -> None:
    neighbours = [
        c for c in table.frame.columns if c.startswith(("vantage_", "target_")) and c != "vantage_peers_log"
    ]
    with_evidence = experiments.scope_cross_validation(table, folds=3, rounds=FEW_ROUNDS)
    blind = experiments.scope_cross_validation(table, neighbours, folds=3, rounds=FEW_ROUNDS)
    # Without any neighbour's symptoms the scope model can only guess from the series itself.
    assert 0.0 < blind < with_evidence <= 1.0
    assert with_evidence > 0.8
