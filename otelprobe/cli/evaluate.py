"""`otelprobe evaluate --model M --input EVAL... --train TRAIN...`: score the model and the baselines
on held-out labeled recordings (issue 8).

Reads the held-out recordings (with the lab's labels on their spans and a labels.jsonl beside
each, or `--labels`), the training recordings (the static-threshold baseline is tuned on them),
scores the model, static thresholds, robust z, neighbour voting and the expert rule tree on the
same windows, prints the markdown summary and writes report.md, report.json and confusion.png
into `--out`. User errors (missing files, a recording without labels, a model for another schema,
a bad SLO file) are one line on stderr and exit 2.

Held out, checked (`held_out_check`, `splits.series_overlap`): an evaluated recording that is one of the
model's training recordings (named in its metadata, byte-identical to one whose SHA-256 it
stores, or byte-identical to a `--train` recording once `--train`'s digest is the model's
training digest) is refused, exit 2. Weaker signs (an evaluated recording also given as
`--train`, one named like a training recording, series names shared with the training data,
`--train` not being the model's training data, a model that names no training data) are warnings
on stderr and in report.json (`inputs.held_out_check`). `--record-in-model` writes the headline
figures into the model's metadata `metrics.held_out` (evaluate.held_out_summary).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otelprobe.cli.inputs import InputError, recording_files
from otelprobe.cli.train import parse_window

if TYPE_CHECKING:
    from otelprobe.attribution.evaluate import EvaluationReport
    from otelprobe.attribution.model import AttributionModel
    from otelprobe.attribution.slo_file import SLOFile

PROG = "otelprobe evaluate"
LABELS_FILE = "labels.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M", help="model stem or one of its files")
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="EVAL",
        help="held-out labeled recordings: traces files (plain or gzip) or recording directories",
    )
    parser.add_argument(
        "--train",
        nargs="+",
        required=True,
        metavar="TRAIN",
        help="the model's training recordings (the static-threshold baseline is tuned on them)",
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        metavar="FILE",
        help="labels.jsonl of the held-out recordings (default: labels.jsonl beside each input)",
    )
    parser.add_argument(
        "--window",
        default="auto",
        metavar="W",
        help="window length, e.g. 2s (default auto: the model's number of probe intervals)",
    )
    parser.add_argument("--slo", type=Path, metavar="FILE", help="SLO file (default: built-in objectives)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("evaluation"),
        metavar="DIR",
        help="report directory (default: evaluation)",
    )
    parser.add_argument(
        "--record-in-model",
        action="store_true",
        help="also write the model's headline figures into its metadata (metrics.held_out)",
    )
    parser.add_argument(
        "--record-as",
        metavar="NAME",
        help="the key under metrics.held_out (default: the evaluated recordings' directory names)",
    )


def run(args: argparse.Namespace) -> int:
    from otelprobe.attribution.model import ModelError, load_model

    try:
        window_s = parse_window(args.window)
        eval_files = recording_files(args.input)
        train_files = recording_files(args.train)
        label_files = [Path(p) for p in args.labels] if args.labels else _labels_beside(eval_files)
        labels = read_labels(label_files)
        model = load_model(args.model)
        slos = _slos(args.slo)
        notes = held_out_check(model.metadata.training, eval_files, train_files)
    except (InputError, ModelError, OSError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        report = _evaluate(model, eval_files, train_files, label_files, labels, window_s, slos, notes)
    except (InputError, OSError, ValueError) as exc:
        # EvaluationError is a ValueError: no labeled window to score, no labels to tune on.
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    from otelprobe.attribution.evaluation_report import save_report, summary_markdown

    try:
        written = save_report(report, args.out)
    except OSError as exc:
        print(f"{PROG}: {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(summary_markdown(report))
    print(f"{PROG}: wrote {', '.join(str(path) for path in written)}", file=sys.stderr)
    for note in report.inputs.get("held_out_check", []):
        print(f"{PROG}: warning: {note}", file=sys.stderr)
    if args.record_in_model:
        try:
            name = args.record_as or _campaign(eval_files)
            recorded = _record(args.model, report.model_name, written[1], name)
        except (ModelError, OSError, ValueError) as exc:
            print(f"{PROG}: --record-in-model: {exc}", file=sys.stderr)
            return 2
        print(f"{PROG}: recorded the figures in {recorded}", file=sys.stderr)
    return 0


def held_out_check(
    training: Mapping[str, Any], evaluated: Sequence[Path], train: Sequence[Path]
) -> list[str]:
    """Whether the evaluated recordings are held out from the model's training data, as far as
    its metadata can tell: `training.recordings` (paths), `training.recording_sha256` (each
    recording's bytes; models trained since it exists) and `training.digest` (over all of them:
    when `train` has it, `train` is the training data and its files' bytes are compared too).

    Returns:
        Warnings: weaker signs of overlap, or what could not be checked; empty when held out.

    Raises:
        InputError: an evaluated recording is one the model was trained on.
    """
    from otelprobe.attribution.train import data_digest, file_sha256

    sha256 = cache(file_sha256)
    stored = [Path(str(p)) for p in training.get("recordings") or []]
    stored_sha256 = {str(h): str(p) for p, h in (training.get("recording_sha256") or {}).items()}
    digest = training.get("digest")
    verified = bool(digest) and data_digest(train) == digest
    notes = []
    if not digest and not stored:
        notes.append(
            "the model's metadata names no training recordings and no digest:"
            " whether the evaluated recordings are held out cannot be checked"
        )
    elif digest and not verified:
        notes.append(
            "the --train recordings are not the model's training data (their digest differs from"
            " its training.digest): the static thresholds are tuned on other data, and the evaluated"
            " recordings are compared with the model's training recordings by path (and by bytes"
            " where its metadata has training.recording_sha256)"
        )
    for file in evaluated:
        named = next((s for s in stored if _same_file(s, file)), None)
        if named is not None:
            raise InputError(
                f"{file} is one of the model's training recordings ({named} in its metadata):"
                " a held-out evaluation needs recordings the model never saw"
            )
        if sha256(file) in stored_sha256:
            raise InputError(
                f"{file} has the bytes of {stored_sha256[sha256(file)]}, one of the model's training"
                " recordings (training.recording_sha256): a held-out evaluation needs recordings the"
                " model never saw"
            )
        twin = next((t for t in train if _same_file(t, file) or sha256(t) == sha256(file)), None)
        if twin is not None and verified:
            raise InputError(
                f"{file} has the bytes of {twin}, one of the model's training recordings (the --train"
                " recordings' digest is the model's training.digest): a held-out evaluation needs"
                " recordings the model never saw"
            )
        if twin is not None:
            notes.append(
                f"{file} is also given as --train ({twin}): the static-threshold baseline is tuned"
                " on the data it is scored on"
            )
        alike = next((s for s in stored if s.parts[-2:] == file.parts[-2:]), None)
        if alike is not None:
            notes.append(
                f"{file} is named like the model's training recording {alike}: if it is that"
                " recording, this evaluation is not held out"
            )
    return notes


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # `a` is not there (a path the trainer saw from another directory)
        return False


def _campaign(files: Sequence[Path]) -> str:
    """`eval-402` for data/lab/eval-402/traces.jsonl.gz (several files: their names joined by +)."""
    return "+".join(dict.fromkeys(f.parent.name or f.name for f in files))


def _record(model: str, label: str, report_path: Path, name: str) -> Path:
    """Write the report's headline figures into the model's metadata, metrics.held_out[name]."""
    from otelprobe.attribution.evaluate import held_out_summary
    from otelprobe.attribution.model import record_metrics
    from otelprobe.attribution.train import file_sha256

    report = json.loads(report_path.read_text(encoding="utf-8"))
    summary = held_out_summary(report, model=label)
    summary["report"] = {
        "path": str(report_path),
        "sha256": file_sha256(report_path),
        "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
    }
    return record_metrics(model, {"held_out": {name: summary}})


def _labels_beside(files: Sequence[Path]) -> list[Path]:
    found = []
    for file in files:
        beside = file.parent / LABELS_FILE
        if not beside.is_file():
            raise InputError(
                f"{file}: no {LABELS_FILE} beside it;"
                " evaluate needs labeled lab recordings (or --labels FILE)"
            )
        found.append(beside)
    return found


def read_labels(files: Sequence[Path]) -> list[dict[str, Any]]:
    """Every incident of each labels.jsonl, tagged with its file so incident ids stay apart.

    Raises:
        InputError: a missing or unreadable file, a line that is not a labeled incident.
    """
    labels: list[dict[str, Any]] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"{file}: no such labels file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{file}: unreadable labels file: {exc}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                label = json.loads(line)
            except ValueError:
                raise InputError(f"{file}:{number}: not a JSON line") from None
            missing = [
                key
                for key in ("incident", "cause", "start_unix_nano", "end_unix_nano")
                if not isinstance(label, dict) or key not in label
            ]
            if missing:
                raise InputError(f"{file}:{number}: a labeled incident needs {', '.join(missing)}")
            labels.append({**label, "recording": str(file)})
    return labels


def _slos(path: Path | None) -> SLOFile | None:
    if path is None:
        return None
    from otelprobe.attribution.slo_file import load_slo_file
    from otelprobe.errors import ConfigError

    try:
        return load_slo_file(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise InputError(f"{path}: {len(exc.problems)} problem(s)") from None


def _evaluate(
    model: AttributionModel,
    eval_files: list[Path],
    train_files: list[Path],
    label_files: list[Path],
    labels: list[dict[str, Any]],
    window_s: float | None,
    slos: SLOFile | None,
    notes: list[str],
) -> EvaluationReport:
    from otelprobe.attribution.dataset import read_window_table
    from otelprobe.attribution.evaluate import evaluate
    from otelprobe.attribution.splits import series_overlap

    intervals = model.metadata.window_intervals
    held_out = read_window_table(eval_files, window_s, slos, intervals)
    if held_out.records == 0:
        raise InputError(f"no probe records in {', '.join(map(str, eval_files))}")
    if "label" not in held_out.frame:
        raise InputError(
            f"{', '.join(map(str, eval_files))}: no lab labels (lab.fault.cause) on the spans:"
            " not a lab recording"
        )
    # The same window length on both sides: thresholds tuned on 2 s windows mean nothing on 60 s.
    train = read_window_table(train_files, held_out.window_s, slos, intervals)
    if "label" not in train.frame:
        raise InputError(f"{', '.join(map(str, train_files))}: no lab labels to tune the baselines on")
    inputs = {
        "evaluated": [str(f) for f in eval_files],
        "train": [str(f) for f in train_files],
        "labels": [str(f) for f in label_files],
        "held_out_check": notes + series_overlap(model.metadata.training, held_out.frame, train.frame),
    }
    return evaluate(
        model, held_out.frame, train.frame, window_s=held_out.window_s, labels=labels, inputs=inputs
    )
