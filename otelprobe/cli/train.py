"""`otelprobe train --input REC...`: fit the attribution model on labeled lab recordings.

Reads the recordings (OTLP JSON lines, plain or gzip, or recording directories), builds the window
table, fits the cause and scope boosters (attribution/train.py) and writes them as LightGBM text
plus JSON metadata (`<out>.cause.txt`, `<out>.scope.txt`, `<out>.json`). Never pickle.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from otelprobe.cli.inputs import InputError, reader_summary, recording_files

if TYPE_CHECKING:
    from otelprobe.attribution.model import AttributionModel
    from otelprobe.attribution.otlp_files import ReaderStats

DEFAULT_OUT: Final = Path("models/default")
MAX_MEMBERS: Final = 16  # each member is a full fit: more costs minutes and buys nothing measured
PROBLEMS_KEPT_IN_METADATA: Final = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="REC",
        help="labeled recordings: traces.jsonl[.gz] files or recording directories (otelprobe lab run)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"model stem: writes STEM.cause.txt, STEM.scope.txt, STEM.json (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--window",
        default="auto",
        metavar="W",
        help="window length, e.g. 2s or 1m (default auto: two probe intervals of the recording)",
    )
    parser.add_argument("--rounds", type=int, help="boosting rounds (default: the model's own)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument(
        "--members",
        type=int,
        help="boosters fit with seeds SEED, SEED+1, ... and averaged into each model part (default 3)",
    )


def parse_window(text: str) -> float | None:
    """`auto` -> None; a duration ("2s", "1m", "500ms", a bare number of seconds) -> seconds > 0."""
    from otelprobe.settings.durations import parse_duration

    if text.strip().lower() == "auto":
        return None
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError("the window must be longer than 0 s")
    return seconds


def run(args: argparse.Namespace) -> int:
    try:
        window_s = parse_window(args.window)
        if args.rounds is not None and args.rounds < 1:
            raise ValueError("--rounds must be at least 1")
        if args.members is not None and not 1 <= args.members <= MAX_MEMBERS:
            raise ValueError(f"--members must be from 1 to {MAX_MEMBERS}")
        files = recording_files(args.input)
    except (InputError, ValueError) as exc:
        print(f"otelprobe train: {exc}", file=sys.stderr)
        return 2
    try:
        return _train(files, args.out, window_s, args.rounds, args.seed, args.members)
    except (InputError, OSError, ValueError) as exc:
        # TrainingError is a ValueError: no labels, or a class without examples.
        print(f"otelprobe train: {exc}", file=sys.stderr)
        return 2


def _train(
    files: list[Path], out: Path, window_s: float | None, rounds: int | None, seed: int, members: int | None
) -> int:
    from otelprobe.attribution.dataset import window_table
    from otelprobe.attribution.model import DEFAULT_MEMBERS, DEFAULT_ROUNDS
    from otelprobe.attribution.records import read_records
    from otelprobe.attribution.train import data_digest, file_sha256, train_model

    started = time.monotonic()
    records, stats = read_records([str(f) for f in files])
    if records.empty:
        raise InputError(f"no probe records in {', '.join(map(str, files))} ({reader_summary(stats)})")
    frame, window = window_table(records, window_s)
    read_s = time.monotonic() - started
    info = {
        "name": out.name,
        "digest": data_digest(files),
        "recordings": [str(f) for f in files],
        # Each recording's own SHA-256: `otelprobe evaluate` refuses to score the model on one.
        "recording_sha256": {str(f): file_sha256(f) for f in files},
        "records": len(records),
        "reader": _reader_info(stats),
    }
    model = train_model(
        frame,
        window_s=window,
        rounds=rounds or DEFAULT_ROUNDS,
        training_info=info,
        seed=seed,
        members=members or DEFAULT_MEMBERS,
    )
    written = model.save(out)
    took_s = time.monotonic() - started
    _print_summary(model, stats, len(frame), window, read_s, took_s, written)
    return 0


def _reader_info(stats: ReaderStats) -> dict[str, Any]:
    info = asdict(stats)
    info["problems"] = list(stats.problems[:PROBLEMS_KEPT_IN_METADATA])
    return info


def _print_summary(
    model: AttributionModel,
    stats: ReaderStats,
    windows: int,
    window_s: float,
    read_s: float,
    took_s: float,
    written: tuple[Path, ...],
) -> None:
    training = model.metadata.training
    per_cause: dict[str, int] = dict(training.get("windows_per_cause", {}))
    print(f"read {reader_summary(stats)}: {windows:,} series-windows of {window_s:g} s")
    print(
        f"trained on {training.get('windows', 0):,} labeled symptomatic windows "
        f"from {training.get('incidents', 0)} incidents:"
    )
    width = max(len(cause) for cause in per_cause) if per_cause else 0
    for cause, count in per_cause.items():
        print(f"  {cause:<{width}}  {count:>6,}")
    gate: dict[str, int] = dict(training.get("gate_windows", {}))
    if gate:
        print(
            f"gate: {gate.get('fault', 0):,} fault and {gate.get('healthy', 0):,} noise windows "
            "(symptomatic, labeled with a cause or healthy)"
        )
    print(f"temperature {model.metadata.temperature:.3f} (calibration on held-out incidents)")
    print(f"took {took_s:.1f} s ({read_s:.1f} s reading and windowing)")
    print("wrote " + ", ".join(str(path) for path in written))
