"""`otelprobe evaluate` as a user runs it: the report files and the printed summary, and one clear
line with exit 2 for every user error (missing files, no labels, a model for another schema)."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from otelprobe.attribution.attribute import model_label
from otelprobe.attribution.dataset import read_window_table
from otelprobe.attribution.model import load_model
from otelprobe.attribution.train import train_model

EVAL_DIR = Path(__file__).resolve().parents[2] / "data" / "lab" / "eval-202"
EVAL_TRACES = EVAL_DIR / "traces.jsonl.gz"


def otelprobe_evaluate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otelprobe.cli", "evaluate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("otelprobe evaluate: ")
    for word in words:
        assert word in lines[0]


@pytest.fixture(scope="module")
def model_stem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on eval-202 itself: the CLI's plumbing is under test here, not its figures
    (tests/attribution/test_evaluate.py scores a train-101 model on held-out eval-202)."""
    table = read_window_table([EVAL_TRACES])
    stem = tmp_path_factory.mktemp("model") / "plumbing"
    train_model(table.frame, window_s=table.window_s, training_info={"name": "plumbing"}).save(stem)
    return stem


def test_evaluate_writes_the_report_and_prints_the_summary(model_stem: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = otelprobe_evaluate(
        "--model", model_stem, "--input", EVAL_DIR, "--train", EVAL_TRACES, "--window", "2s", "--out", out
    )
    assert result.returncode == 0, result.stderr
    label = model_label(load_model(model_stem))
    assert re.fullmatch(r"plumbing@[0-9a-f]{8}", label)  # no data digest given: name and model
    for name in (label, "static thresholds", "robust z (BARO)", "vantage/target voting", "expert rules"):
        assert f"| {name} |" in result.stdout
    assert "| cause AC@1 | ≥ 0.95 |" in result.stdout
    assert "Traceback" not in result.stderr
    assert {path.name for path in out.iterdir()} == {"report.md", "report.json", "confusion.png"}
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["labels"] == [str(EVAL_DIR / "labels.jsonl")]
    assert report["timing"]["incidents"] == 60
    assert report["window_s"] == 2.0


def test_missing_recording(model_stem: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.jsonl.gz"
    result = otelprobe_evaluate("--model", model_stem, "--input", missing, "--train", EVAL_TRACES)
    assert_user_error(result, str(missing), "no such file")


def test_recording_without_labels_file(model_stem: Path, tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl.gz"
    shutil.copy(EVAL_TRACES, traces)
    result = otelprobe_evaluate("--model", model_stem, "--input", traces, "--train", EVAL_TRACES)
    assert_user_error(result, "labels.jsonl", "--labels")


def test_recording_without_lab_labels_on_its_spans(model_stem: Path, tmp_path: Path) -> None:
    # A production recording: the same spans with no lab.fault.* attributes.
    traces = tmp_path / "traces.jsonl.gz"
    with gzip.open(EVAL_TRACES, "rt") as source, gzip.open(traces, "wt") as target:
        for number, line in enumerate(source):
            if number >= 300:
                break
            target.write(line.replace('"lab.fault.', '"unlabeled.'))
    shutil.copy(EVAL_DIR / "labels.jsonl", tmp_path / "labels.jsonl")
    result = otelprobe_evaluate("--model", model_stem, "--input", traces, "--train", EVAL_TRACES)
    assert_user_error(result, "no lab labels")


def test_labels_file_with_a_bad_line(model_stem: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"incident": 0, "cause": "dns_latency"}\n')
    result = otelprobe_evaluate(
        "--model", model_stem, "--input", EVAL_TRACES, "--train", EVAL_TRACES, "--labels", labels
    )
    assert_user_error(result, f"{labels}:1", "start_unix_nano")


def test_model_for_another_schema(model_stem: Path, tmp_path: Path) -> None:
    for path in model_stem.parent.iterdir():
        shutil.copy(path, tmp_path / path.name)
    metadata_path = tmp_path / f"{model_stem.name}.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["feature_names"][0] = "feature_of_another_version"
    metadata_path.write_text(json.dumps(metadata))
    result = otelprobe_evaluate(
        "--model", tmp_path / model_stem.name, "--input", EVAL_TRACES, "--train", EVAL_TRACES
    )
    assert_user_error(result, "do not match", "feature_of_another_version")


def test_missing_model(tmp_path: Path) -> None:
    result = otelprobe_evaluate("--model", tmp_path / "none", "--input", EVAL_TRACES, "--train", EVAL_TRACES)
    assert_user_error(result, "no such model")
