"""`otelprobe train` and `otelprobe attribute` as a user runs them: files written, summaries printed,
and every user error one clear line with exit 2, never a traceback."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from otelprobe.attribution.model import DEFAULT_MEMBERS, load_model
from otelprobe.attribution.train import data_digest
from otelprobe.causes import ROOT_CAUSES
from otelprobe.cli import main

ROOT = Path(__file__).resolve().parents[2]
EVAL_DIR = ROOT / "data" / "lab" / "eval-202"
EVAL_RECORDING = EVAL_DIR / "traces.jsonl.gz"
DEFAULT_SLOS = ROOT / "examples" / "slo" / "defaults.yaml"

# The first test to ask for a model may train one (tests/cli/conftest.py), on a shared machine.
pytestmark = pytest.mark.timeout(300)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _recording_prefix(out: Path, lines: int, *, labels: bool) -> Path:
    """The first `lines` requests of eval-202 (with or without the lab's truth) as a recording."""

    def strip(attributes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [a for a in attributes if not a["key"].startswith("lab.")]

    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(EVAL_RECORDING, "rt") as src, gzip.open(out, "wt") as dst:
        for _, line in zip(range(lines), src, strict=False):
            request = json.loads(line)
            if not labels:
                for resource_spans in request["resourceSpans"]:
                    for scope_spans in resource_spans["scopeSpans"]:
                        for span in scope_spans["spans"]:
                            span["attributes"] = strip(span.get("attributes", []))
            dst.write(json.dumps(request) + "\n")
    return out


@pytest.mark.slow  # the CLI over a whole recording (30-50 s measured)
def test_train_writes_a_text_model_with_its_metadata_and_says_what_it_learned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stem = tmp_path / "models" / "lab"
    code, out, _ = run_cli(capsys, "train", "--input", str(EVAL_DIR), "--out", str(stem), "--rounds", "30")
    assert code == 0
    assert re.search(r"read 5,187 probe records: 2,643 series-windows of 2 s", out), out
    for cause in ROOT_CAUSES:
        assert re.search(rf"^  {cause} +[1-9][\d,]*$", out, re.MULTILINE), cause
    assert re.search(r"^temperature \d+\.\d{3} ", out, re.MULTILINE)
    assert re.search(r"^gate: [1-9][\d,]* fault and [1-9][\d,]* noise windows", out, re.MULTILINE), out
    assert re.search(r"^took \d+\.\d s", out, re.MULTILINE)
    (wrote,) = re.findall(r"^wrote (.+)$", out, re.MULTILINE)
    files = [Path(name) for name in wrote.split(", ")]
    assert {f"{stem}.cause.txt", f"{stem}.scope.txt", f"{stem}.json"} <= set(map(str, files))
    assert sorted(files) == sorted(stem.parent.iterdir())  # what it says it wrote, nothing else
    meta = json.loads(Path(f"{stem}.json").read_text())
    assert {stem.parent / entry["path"] for entry in meta["files"].values()} == {
        f for f in files if f.suffix == ".txt"
    }
    training = meta["training"]
    assert training["name"] == "lab"
    assert training["digest"] == data_digest([EVAL_RECORDING])
    assert training["recordings"] == [str(EVAL_RECORDING)]
    assert training["records"] == 5187 and training["reader"]["bad_lines"] == 0
    assert training["rounds"] == 30 and training["window_s"] == 2.0
    assert load_model(stem).metadata.training["digest"] == training["digest"]
    for booster in (f for f in files if f.suffix == ".txt"):
        assert booster.read_text(encoding="ascii").startswith("tree\n")  # LightGBM text, no pickle


def test_train_help_names_the_default_seeds_per_booster(capsys: pytest.CaptureFixture[str]) -> None:
    # The CLI cannot import the model module to parse its arguments (numpy, the attribution
    # extra), so its help repeats the default: held equal here.
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"averaged into each model part (default {DEFAULT_MEMBERS})" in help_text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "no/such/traces.jsonl.gz"], r"no/such/traces\.jsonl\.gz: no such file or directory"),
        (["--input", "{empty_dir}"], r"a directory without traces\.jsonl\.gz or traces\.jsonl"),
        (["--input", str(EVAL_DIR), "--window", "soon"], r"invalid duration 'soon'"),
        (["--input", str(EVAL_DIR), "--window", "0s"], r"the window must be longer than 0 s"),
        (["--input", str(EVAL_DIR), "--rounds", "0"], r"--rounds must be at least 1"),
        (["--input", str(EVAL_DIR), "--members", "0"], r"--members must be from 1 to 16"),
        (["--input", str(EVAL_DIR), "--members", "17"], r"--members must be from 1 to 16"),
    ],
)
def test_train_usage_errors_are_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{empty_dir}", str(tmp_path / "empty")) for a in argv]
    code, out, err = run_cli(capsys, "train", *argv, "--out", str(tmp_path / "m"))
    assert code == 2 and not out
    assert re.fullmatch(rf"otelprobe train: .*{message}.*", one_error_line(err))
    assert not list(tmp_path.glob("m.*"))


def test_train_on_data_that_cannot_teach_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unlabeled = _recording_prefix(tmp_path / "unlabeled" / "traces.jsonl.gz", 300, labels=False)
    code, _, err = run_cli(capsys, "train", "--input", str(unlabeled.parent), "--out", str(tmp_path / "m"))
    assert code == 2
    assert "no lab labels" in one_error_line(err)
    # The first 300 requests hold some incidents, not every cause.
    partial = _recording_prefix(tmp_path / "partial.jsonl.gz", 300, labels=True)
    code, _, err = run_cli(capsys, "train", "--input", str(partial), "--out", str(tmp_path / "m"))
    assert code == 2
    assert re.fullmatch(
        r"otelprobe train: no labeled window of [a-z_, ]+: every class needs examples", one_error_line(err)
    )
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not otlp\n")
    code, _, err = run_cli(capsys, "train", "--input", str(garbage), "--out", str(tmp_path / "m"))
    assert code == 2
    assert f"no probe records in {garbage} (0 probe records; skipped 1 bad line (first: {garbage}:1:" in err
    assert not list(tmp_path.glob("m.*"))


@pytest.mark.slow  # the CLI over a whole recording (30-50 s measured)
def test_attribute_writes_json_lines_and_a_one_line_summary(
    trained_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "attribute", "--model", str(trained_model), "--input", str(EVAL_RECORDING)
    )
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    summary = one_error_line(err)
    found = re.fullmatch(
        r"otelprobe attribute: read 5,187 probe records from 1 file\(s\); 2,643 series-windows of 2 s, "
        r"([\d,]+) violating an SLO, ([\d,]+) attributed; (\d+) incidents",
        summary,
    )
    assert found, summary
    violating, attributed, incidents = (int(g.replace(",", "")) for g in found.groups())
    assert attributed == len(records) > 100 and violating >= attributed and incidents > 0
    assert all(len(r["causes"]) == len(ROOT_CAUSES) for r in records)


@pytest.mark.slow  # the CLI over a whole recording (30-50 s measured)
def test_attribute_out_file_and_slo_file_of_the_defaults_give_the_same_lines(
    trained_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --out FILE writes what stdout gets; a recording directory and a model's .json name the same.
    out_file = tmp_path / "deep" / "attributions.jsonl"
    code, printed, _ = run_cli(
        capsys,
        "attribute",
        "--model",
        f"{trained_model}.json",
        "--input",
        str(EVAL_DIR),
        "--out",
        str(out_file),
    )
    assert code == 0 and not printed
    # The default objectives written out as a file give the same attributions.
    _, with_slos, _ = run_cli(
        capsys,
        "attribute",
        "--model",
        str(trained_model),
        "--input",
        str(EVAL_RECORDING),
        "--slo",
        str(DEFAULT_SLOS),
    )
    assert with_slos == out_file.read_text() != ""


def test_attribute_window_option_sets_the_window_length(
    trained_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "attribute", "--model", str(trained_model), "--input", str(EVAL_RECORDING), "--window", "4s"
    )
    assert code == 0 and "series-windows of 4 s" in err
    records = [json.loads(line) for line in out.splitlines()]
    assert records
    for record in records:
        assert record["window_start_unix_nano"] % 4_000_000_000 == 0
        assert record["window_end"] > record["window_start"]


def test_attribute_usage_errors_are_one_line_with_exit_2(
    trained_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "attribute", "--model", str(tmp_path / "none"), "--input", str(EVAL_DIR))
    assert code == 2 and not out
    assert (
        one_error_line(err) == f"otelprobe attribute: {tmp_path / 'none.json'}: no such model metadata file"
    )

    code, _, err = run_cli(capsys, "attribute", "--model", str(trained_model), "--input", "missing.jsonl")
    assert code == 2
    assert one_error_line(err) == "otelprobe attribute: missing.jsonl: no such file or directory"

    code, _, err = run_cli(
        capsys, "attribute", "--model", str(trained_model), "--input", str(EVAL_DIR), "--window=-1s"
    )
    assert code == 2 and "duration" in one_error_line(err)


def test_attribute_refuses_a_model_of_another_schema(
    trained_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for suffix in (".cause.txt", ".scope.txt", ".json"):
        (tmp_path / f"old{suffix}").write_bytes(Path(f"{trained_model}{suffix}").read_bytes())
    meta_path = tmp_path / "old.json"
    meta = json.loads(meta_path.read_text())
    meta["feature_names"] = [*meta["feature_names"][1:], "legacy_feature"]
    meta_path.write_text(json.dumps(meta))
    code, out, err = run_cli(capsys, "attribute", "--model", str(tmp_path / "old"), "--input", str(EVAL_DIR))
    assert code == 2 and not out
    line = one_error_line(err)
    assert line.startswith(f"otelprobe attribute: {meta_path}: the model's feature_names do not match")
    assert "unknown legacy_feature" in line and "otelprobe train" in line


def test_attribute_reports_every_problem_of_an_slo_file_by_line_and_field(
    trained_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slo_file = tmp_path / "slo.yaml"
    slo_file.write_text(
        "slos:\n"
        "  - name: api\n"
        "    availability: {objective: 99.9}\n"
        "  - name: web\n"
        "    latency: {percentile: 95, treshold: 300ms}\n"
    )
    code, out, err = run_cli(
        capsys, "attribute", "--model", str(trained_model), "--input", str(EVAL_DIR), "--slo", str(slo_file)
    )
    assert code == 2 and not out
    lines = err.strip().splitlines()
    assert re.match(rf"{re.escape(str(slo_file))}:3: slos\[0\]\.availability\.objective: ", lines[0]), lines
    assert any(re.match(rf"{re.escape(str(slo_file))}:5: slos\[1\]\.latency", line) for line in lines), lines
    assert lines[-1] == f"otelprobe attribute: {slo_file}: {len(lines) - 1} problem(s)"


def test_a_recording_without_probe_traces_is_an_error_naming_its_first_bad_line(
    trained_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.jsonl.gz"
    garbage.write_bytes(gzip.compress(b'{"resourceMetrics": []}\n{"half a line'))
    code, out, err = run_cli(capsys, "attribute", "--model", str(trained_model), "--input", str(garbage))
    assert code == 2 and not out
    assert one_error_line(err).startswith(
        f"otelprobe attribute: no probe records in {garbage} (0 probe records;"
    )
    assert f"{garbage}:2: not JSON" in err
    # An earlier output file is left as it was.
    earlier = tmp_path / "attributions.jsonl"
    earlier.write_text('{"kept": true}\n')
    argv = ["attribute", "--model", str(trained_model), "--input", str(garbage), "--out", str(earlier)]
    assert run_cli(capsys, *argv)[0] == 2
    assert earlier.read_text() == '{"kept": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attributions.jsonl", "garbage.jsonl.gz"]


@pytest.mark.slow  # the CLI over a whole recording (30-50 s measured)
def test_attribute_into_a_pipe_closed_early_stops_quietly(trained_model: Path, tmp_path: Path) -> None:
    """`otelprobe attribute ... | head -1`: no traceback, no error message."""
    recording = _recording_prefix(tmp_path / "traces.jsonl.gz", 800, labels=False)
    argv = [sys.executable, "-m", "otelprobe.cli", "attribute", "--model", str(trained_model)]
    with subprocess.Popen(
        [*argv, "--input", str(recording)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        try:
            first = child.stdout.readline()
            child.stdout.close()  # the reader goes away after one line
            err = child.stderr.read().decode()
            code = child.wait(timeout=120)
        finally:
            if child.poll() is None:
                child.kill()
    assert json.loads(first)["causes"]
    assert code == 1 and "Traceback" not in err and "Broken pipe" not in err, err
