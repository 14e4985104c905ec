"""`otelprobe evaluate` checks that what it scores is held out from the model's training data (a
training recording is refused; shared series names and the like are warnings), and records its
headline figures in the model's metadata (`--record-in-model`) without touching the boosters.

On the shipped data: models/default was trained on train-301, wide-304 and high-305; eval-402 is
held out; eval-202 and eval-402 come from the same standard profile and share series names."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from otelprobe.attribution.attribute import model_label
from otelprobe.attribution.evaluate import EvaluationError, held_out_summary
from otelprobe.attribution.model import ModelError, load_model, record_metrics
from otelprobe.attribution.otlp_files import InputError
from otelprobe.attribution.records import read_records
from otelprobe.attribution.splits import series_overlap
from otelprobe.attribution.train import file_sha256
from otelprobe.cli.evaluate import held_out_check

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "data" / "lab"
SHIPPED = REPO / "models" / "default"
TRAINING = [LAB / name / "traces.jsonl.gz" for name in ("train-301", "wide-304", "high-305")]
EVAL_402 = LAB / "eval-402" / "traces.jsonl.gz"
REPORT_402 = REPO / "models" / "evaluation" / "eval-402" / "report.json"

pytestmark = pytest.mark.timeout(300)


def otelprobe(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otelprobe.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=cwd,
    )


def _copy_model(stem: Path, into: Path) -> Path:
    for suffix in (".gate.txt", ".cause.txt", ".scope.txt", ".json"):
        shutil.copy(stem.with_name(stem.name + suffix), into / (stem.name + suffix))
    return into / stem.name


@pytest.mark.parametrize("from_elsewhere", [False, True])
def test_evaluating_the_shipped_model_on_a_training_campaign_is_refused(
    tmp_path: Path, from_elsewhere: bool
) -> None:
    # From the repository the path stored in training.recordings names the file; from elsewhere
    # that relative path names nothing, and the bytes match a --train file whose digest is the
    # model's training digest.
    cwd = tmp_path if from_elsewhere else REPO
    train = [str(p) if from_elsewhere else str(p.relative_to(REPO)) for p in TRAINING]
    result = otelprobe(
        "evaluate",
        "--model",
        SHIPPED,
        "--input",
        train[0],
        "--train",
        *train,
        "--out",
        tmp_path / "r",
        cwd=cwd,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "train-301/traces.jsonl.gz" in lines[0]
    assert "one of the model's training recordings" in lines[0]
    assert "never saw" in lines[0]
    assert not (tmp_path / "r").exists()  # refused before anything was scored


def test_the_held_out_campaign_passes_the_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    training = load_model(SHIPPED).metadata.training
    for cwd in (REPO, tmp_path):
        monkeypatch.chdir(cwd)
        assert held_out_check(training, [EVAL_402], TRAINING) == []


def test_weaker_signs_are_warnings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shipped = load_model(SHIPPED).metadata.training
    monkeypatch.chdir(tmp_path)  # the stored relative paths name nothing from here
    train_101 = LAB / "train-101" / "traces.jsonl.gz"
    # With each training recording's bytes in the metadata, even a path that names nothing is caught.
    with pytest.raises(InputError, match=r"training\.recording_sha256"):
        held_out_check(shipped, [TRAINING[0]], [train_101])
    # Metadata of a model trained before recording_sha256: only weaker signs are left.
    training = {key: value for key, value in shipped.items() if key != "recording_sha256"}
    # A training campaign with a --train that is not the training data: named like a training
    # recording, and the digest does not vouch for --train.
    notes = held_out_check(training, [TRAINING[0]], [train_101])
    assert any("digest differs" in note for note in notes)
    assert any("named like the model's training recording data/lab/train-301" in note for note in notes)
    # The evaluated recording also given as --train: the baseline is tuned on what it is scored on.
    notes = held_out_check(training, [EVAL_402], [EVAL_402])
    assert any("also given as --train" in note for note in notes)
    # A model whose metadata names no training data cannot be checked, and says so.
    assert any("cannot be checked" in n for n in held_out_check({"name": "x"}, [EVAL_402], [train_101]))


def test_series_names_shared_with_training_are_warned_about() -> None:
    eval_402, _ = read_records([str(EVAL_402)])
    eval_202, _ = read_records([str(LAB / "eval-202" / "traces.jsonl.gz")])
    training, _ = read_records([str(p) for p in TRAINING])
    assert series_overlap({}, eval_402, training) == []
    # eval-202 and eval-402 share the standard profile's names (cache-b, ..., eu-2, ...).
    (note,) = series_overlap({}, eval_402, eval_202)
    assert "the --train recordings" in note and "cache-b" in note and "eu-2" in note
    stored = {"targets": sorted(set(eval_202["target"])), "vantages": ["eu-2"]}
    (note,) = series_overlap(stored, eval_402, training)
    assert "the model's training series" in note
    assert "target: 6 values" in note and "vantage: 1 values in both" in note


def test_recorded_figures_are_the_reports_and_the_boosters_stay_byte_identical(tmp_path: Path) -> None:
    stem = _copy_model(SHIPPED, tmp_path)
    boosters = {p.name: p.read_bytes() for p in tmp_path.glob("*.txt")}
    report = json.loads(REPORT_402.read_text())
    label = model_label(load_model(SHIPPED))
    assert label == "default@c0f176c137b6.c5b9f695"  # the shipped model's, as its reports name it
    summary = held_out_summary(report, model=label)
    scores = report["attributed"][label]
    assert (summary["cause_ac1"], summary["cause_scope_ac1"]) == (scores["ac1"], scores["scope_ac1"])
    assert summary["cases"] == 639
    assert summary["false_attributions"] == {"healthy_windows": 2666, "attributed": 8, "rate": 8 / 2666}
    assert summary["worst_class_recall"]["cause"] == "packet_loss"
    with pytest.raises(EvaluationError, match="not other@0123"):
        held_out_summary(report, model="other@0123")

    before = json.loads(stem.with_name("default.json").read_text())
    record_metrics(stem, {"held_out": {"eval-402": summary}})
    record_metrics(stem, {"held_out": {"again": {"cases": 1}}, "notes": "n"})
    after = json.loads(stem.with_name("default.json").read_text())
    assert {k: v for k, v in after.items() if k != "metrics"} == {
        k: v for k, v in before.items() if k != "metrics"
    }
    assert after["metrics"]["held_out"]["eval-402"] == summary  # kept: merged one level down
    assert after["metrics"]["held_out"]["again"] == {"cases": 1}
    assert after["metrics"]["validation"] == before["metrics"]["validation"]
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.txt")} == boosters
    assert load_model(stem).metadata.metrics == after["metrics"]  # digests still vouch for the files
    with pytest.raises(ModelError, match="no such model metadata file"):
        record_metrics(tmp_path / "nowhere", {"notes": "n"})


def test_train_then_evaluate_records_and_refuses_by_the_stored_recording_digests(tmp_path: Path) -> None:
    """End to end on small data: `otelprobe train` stores each recording's SHA-256 and its series;
    `otelprobe evaluate --record-in-model` on a held-out slice warns about the shared series names
    and writes its figures into the metadata; a copy of a training recording is refused."""
    eval_202 = LAB / "eval-202"
    trained = otelprobe("train", "--input", eval_202, "--out", tmp_path / "m", "--rounds", "20")
    assert trained.returncode == 0, trained.stderr
    training = json.loads((tmp_path / "m.json").read_text())["training"]
    traces = eval_202 / "traces.jsonl.gz"
    assert training["recording_sha256"] == {str(traces): file_sha256(traces)}
    assert training["targets"] == ["cache-b", "cdn-b", "ns-b", "pay-b", "shop-b", "sso-b"]

    # The first ~45 % of eval-402 (its labels.jsonl beside it), held out from eval-202.
    part = tmp_path / "eval-402-part"
    part.mkdir()
    with gzip.open(EVAL_402, "rt") as source, gzip.open(part / "traces.jsonl.gz", "wt") as target:
        for number, line in enumerate(source):
            if number >= 1200:
                break
            target.write(line)
    shutil.copy(EVAL_402.parent / "labels.jsonl", part / "labels.jsonl")
    boosters = {p.name: p.read_bytes() for p in tmp_path.glob("m.*.txt")}
    result = otelprobe(
        "evaluate",
        "--model", tmp_path / "m",
        "--input", part,
        "--train", eval_202,
        "--out", tmp_path / "report",
        "--record-in-model",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        "warning: the evaluated windows share series names with the model's training series" in result.stderr
    )
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert any("share series names" in note for note in report["inputs"]["held_out_check"])
    metrics = load_model(tmp_path / "m").metadata.metrics
    recorded = metrics["held_out"]["eval-402-part"]
    assert recorded["cause_ac1"] == report["attributed"][report["model"]]["ac1"]
    assert recorded["report"]["path"] == str(tmp_path / "report" / "report.json")
    assert "validation" in metrics  # what training measured is kept
    assert {p.name: p.read_bytes() for p in tmp_path.glob("m.*.txt")} == boosters

    # A copy of the training recording, with a --train that is not the training data: refused by
    # the recording's stored SHA-256 alone.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("traces.jsonl.gz", "labels.jsonl"):
        shutil.copy(eval_202 / name, copy / name)
    refused = otelprobe("evaluate", "--model", tmp_path / "m", "--input", copy, "--train", EVAL_402)
    assert refused.returncode == 2, refused.stderr
    assert "training.recording_sha256" in refused.stderr and "never saw" in refused.stderr
