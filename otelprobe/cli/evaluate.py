"""`otelprobe evaluate --model M --input EVAL... --train TRAIN...`: score the model and the baselines
on held-out labeled recordings (issue 8).

Reads the held-out recordings (with the lab's labels on their spans and a labels.jsonl beside
each, or `--labels`), the training recordings (the static-threshold baseline is tuned on them),
scores the model, static thresholds, robust z, neighbour voting and the expert rule tree on the
same windows, prints the markdown summary and writes report.md, report.json and confusion.png
into `--out`. User errors (missing files, a recording without labels, a model for another schema,
a bad SLO file) are one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
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
    except (InputError, ModelError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        report = _evaluate(model, eval_files, train_files, label_files, labels, window_s, slos)
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
    return 0


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
) -> EvaluationReport:
    from otelprobe.attribution.dataset import read_window_table
    from otelprobe.attribution.evaluate import evaluate

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
    }
    return evaluate(
        model, held_out.frame, train.frame, window_s=held_out.window_s, labels=labels, inputs=inputs
    )
