"""Model files: LightGBM text + JSON metadata that load back into the same predictions, and every
way a model file can be wrong (another schema, edited or truncated, missing) refused by name."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from otelprobe.attribution.attribute import model_label
from otelprobe.attribution.dataset import WindowTable
from otelprobe.attribution.features import FEATURE_NAMES, feature_matrix
from otelprobe.attribution.model import (
    ModelError,
    gate_input_matrix,
    load_model,
    record_metrics,
    scope_inputs,
)
from otelprobe.attribution.train import TrainingError, train_model
from otelprobe.causes import ROOT_CAUSES, SCOPES

# The first test to ask for the model may train it (conftest.py) on a shared machine.
pytestmark = pytest.mark.timeout(300)


def _copy_model(stem: Path, into: Path) -> Path:
    for suffix in (".gate.txt", ".cause.txt", ".scope.txt", ".json"):
        shutil.copy(stem.with_name(stem.name + suffix), into / (stem.name + suffix))
    return into / stem.name


def _edit_metadata(stem: Path, **changes: Any) -> Path:
    meta_path = stem.with_name(stem.name + ".json")
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))
    return meta_path


def test_saved_model_predicts_exactly_what_it_predicted_before(
    eval_table: WindowTable, tmp_path: Path
) -> None:
    # Trained on the held-out recording for speed: this test is about files, not accuracy.
    model = train_model(eval_table.frame, window_s=eval_table.window_s, rounds=20)
    paths = model.save(tmp_path / "m")
    assert [p.name for p in paths] == ["m.gate.txt", "m.cause.txt", "m.scope.txt", "m.json"]
    loaded = load_model(tmp_path / "m")
    features = feature_matrix(eval_table.frame)
    scopes = scope_inputs(eval_table.frame)
    np.testing.assert_array_equal(loaded.cause_scores(features), model.cause_scores(features))
    gate = gate_input_matrix(eval_table.frame)
    np.testing.assert_array_equal(loaded.fault_probability(gate), model.fault_probability(gate))
    np.testing.assert_array_equal(loaded.scopes_for_every_cause(scopes), model.scopes_for_every_cause(scopes))
    np.testing.assert_array_equal(
        loaded.cause_contributions(features[:50]), model.cause_contributions(features[:50])
    )
    assert loaded.metadata == model.metadata
    # Any of the four file names, or the stem, names the model.
    for name in ("m.json", "m.gate.txt", "m.cause.txt", "m.scope.txt"):
        again = load_model(tmp_path / name)
        np.testing.assert_array_equal(again.cause_scores(features[:20]), model.cause_scores(features[:20]))


def test_two_models_of_the_same_data_have_labels_that_tell_them_apart(
    eval_table: WindowTable, tmp_path: Path
) -> None:
    frame = eval_table.frame
    first = train_model(
        frame, window_s=eval_table.window_s, rounds=10, training_info={"name": "m", "digest": "ab" * 32}
    )
    other = train_model(
        frame,
        window_s=eval_table.window_s,
        rounds=10,
        training_info={"name": "m", "digest": "ab" * 32},
        seed=8,
    )
    label = model_label(first)
    assert re.fullmatch(r"m@abababababab\.[0-9a-f]{8}", label)
    assert model_label(other).split(".")[0] == label.split(".")[0]  # the same data ...
    assert model_label(other) != label  # ... another model
    # The label is the same before saving, after saving and once loaded from the files.
    first.save(tmp_path / "m")
    assert model_label(load_model(tmp_path / "m")) == label
    unsaved = train_model(
        frame, window_s=eval_table.window_s, rounds=10, training_info={"name": "m", "digest": "ab" * 32}
    )
    assert model_label(unsaved) == label  # training is deterministic
    # Only the metadata's metrics changing (evaluate --record-in-model) keeps the label.
    record_metrics(tmp_path / "m", {"notes": "recorded"})
    assert model_label(load_model(tmp_path / "m")) == label


def test_model_files_are_text_and_json_with_their_provenance(model_stem: Path) -> None:
    meta = json.loads(model_stem.with_name(model_stem.name + ".json").read_text())
    assert meta["feature_names"] == list(FEATURE_NAMES)
    assert meta["causes"] == list(ROOT_CAUSES) and meta["scopes"] == list(SCOPES)
    assert meta["window_intervals"] == 2.0
    assert 0.25 <= meta["temperature"] <= 8.0
    assert re.fullmatch(r"[0-9a-f]{64}", meta["training"]["digest"])  # train.data_digest of its recordings
    assert meta["training"]["window_s"] == 2.0
    assert set(meta["training"]["windows_per_cause"]) == set(ROOT_CAUSES)
    assert min(meta["training"]["windows_per_cause"].values()) > 0
    assert set(meta["versions"]) >= {"otelprobe", "lightgbm"}
    for role in ("gate", "cause", "scope"):
        text = model_stem.with_name(meta["files"][role]["path"]).read_text(encoding="ascii")
        assert text.startswith("tree\n") and "end of trees" in text  # LightGBM's text format, no pickle


def test_a_model_of_another_feature_schema_is_refused_naming_the_differences(
    model_stem: Path, tmp_path: Path
) -> None:
    stem = _copy_model(model_stem, tmp_path)
    names = list(FEATURE_NAMES)
    dropped = names.pop(3)
    names.append("ttfb_p95_delta_furlongs")
    meta_path = _edit_metadata(stem, feature_names=names)
    with pytest.raises(ModelError) as caught:
        load_model(stem)
    message = str(caught.value)
    assert str(meta_path) in message
    assert f"missing {dropped}" in message
    assert "unknown ttfb_p95_delta_furlongs" in message
    assert "otelprobe train" in message  # says what to do


def test_reordered_features_or_other_classes_are_refused(model_stem: Path, tmp_path: Path) -> None:
    stem = _copy_model(model_stem, tmp_path)
    _edit_metadata(stem, feature_names=list(reversed(FEATURE_NAMES)))
    with pytest.raises(ModelError, match="same names in another order"):
        load_model(stem)
    _edit_metadata(stem, feature_names=list(FEATURE_NAMES), causes=[*ROOT_CAUSES[:-1], "gremlins"])
    with pytest.raises(ModelError, match=r"causes .*missing content_mismatch; unknown gremlins"):
        load_model(stem)


@pytest.mark.parametrize("role", ["gate", "cause", "scope"])
def test_an_edited_or_truncated_booster_file_is_refused_by_its_digest(
    model_stem: Path, tmp_path: Path, role: str
) -> None:
    stem = _copy_model(model_stem, tmp_path)
    booster = stem.with_name(f"{stem.name}.{role}.txt")
    data = booster.read_bytes()
    booster.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ModelError, match=rf"{booster.name}: contents differ from the sha256 in {stem.name}\.json"
    ):
        load_model(stem)


def test_missing_files_are_named(model_stem: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nowhere\.json: no such model metadata file"):
        load_model(tmp_path / "nowhere")
    stem = _copy_model(model_stem, tmp_path)
    stem.with_name(stem.name + ".scope.txt").unlink()
    with pytest.raises(
        ModelError, match=rf"{stem.name}\.scope\.txt: the scope model named by {stem.name}\.json is missing"
    ):
        load_model(stem)
    stem.with_name(stem.name + ".json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable model metadata"):
        load_model(stem)
    stem.with_name(stem.name + ".json").write_text('{"format_version": 99}')
    with pytest.raises(ModelError, match="not an otelprobe model metadata file"):
        load_model(stem)


def test_a_truncated_booster_without_a_digest_is_an_error_not_a_crash(
    model_stem: Path, tmp_path: Path
) -> None:
    stem = _copy_model(model_stem, tmp_path)
    booster = stem.with_name(stem.name + ".cause.txt")
    data = booster.read_bytes()
    booster.write_bytes(data[: len(data) // 2])
    meta_path = stem.with_name(stem.name + ".json")
    meta = json.loads(meta_path.read_text())
    del meta["files"]["cause"]["sha256"]
    meta_path.write_text(json.dumps(meta))
    # In a child process: LightGBM kills the process it runs in.
    code = (
        "import sys\n"
        "from otelprobe.attribution.model import ModelError, load_model\n"
        "try:\n"
        f"    load_model({str(stem)!r})\n"
        "except ModelError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert child.returncode == 3, child.stderr[-500:]
    assert f"{stem.name}.cause.txt" in child.stdout


def test_training_without_labels_or_with_a_class_missing_says_so(eval_table: WindowTable) -> None:
    unlabeled = eval_table.frame.drop(columns=["label"])
    with pytest.raises(TrainingError, match="no lab labels"):
        train_model(unlabeled, window_s=2.0)
    frame = eval_table.frame
    no_tls = frame[frame["label"] != "tls_slow"]
    with pytest.raises(TrainingError, match="no labeled window of tls_slow: every class needs examples"):
        train_model(no_tls, window_s=2.0)
