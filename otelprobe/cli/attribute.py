"""`otelprobe attribute --model M --input F...`: replay recordings offline into attributions.

Reads OTLP JSON-lines recordings (plain or gzip), cuts them into windows, evaluates the SLOs
(the default objectives, or `--slo FILE`) and writes one DESIGN §6 record per attributed window as
a JSON line (stdout, or `--out FILE`). A one-line summary goes to stderr. Bad lines in a recording
are counted and named by file:line; the rest is attributed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from otelprobe.cli.inputs import InputError, reader_summary, recording_files
from otelprobe.cli.train import parse_window

if TYPE_CHECKING:
    from otelprobe.attribution.model import AttributionModel
    from otelprobe.attribution.slo_file import SLOFile

PROG = "otelprobe attribute"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="M",
        help="model stem or one of its files (models/default, models/default.json)",
    )
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="F",
        help="recordings: OTLP JSON-lines files (plain or gzip) or recording directories",
    )
    parser.add_argument(
        "--window",
        default="auto",
        metavar="W",
        help="window length, e.g. 2s or 1m (default auto: the model's number of probe intervals)",
    )
    parser.add_argument("--slo", type=Path, metavar="FILE", help="SLO file (default: built-in objectives)")
    parser.add_argument(
        "--out", default="-", metavar="FILE", help="where the JSON lines go (default -: stdout)"
    )


def run(args: argparse.Namespace) -> int:
    from otelprobe.attribution.model import ModelError, load_model
    from otelprobe.attribution.slo_file import load_slo_file
    from otelprobe.errors import ConfigError

    try:
        window_s = parse_window(args.window)
        files = recording_files(args.input)
        model = load_model(args.model)
    except (InputError, ModelError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    slos = None
    if args.slo is not None:
        try:
            slos = load_slo_file(args.slo)
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            print(f"{PROG}: {args.slo}: {len(exc.problems)} problem(s)", file=sys.stderr)
            return 2
    try:
        with _output(args.out) as out:
            summary = replay(model, files, window_s, slos, out)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other filters do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (InputError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    print(summary, file=sys.stderr)
    return 0


@contextlib.contextmanager
def _output(target: str) -> Iterator[IO[str]]:
    """stdout for "-"; else a file that replaces `target` only when everything was written, so a
    bad input never empties an earlier output."""
    if target == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", encoding="utf-8") as handle:
            yield handle
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def replay(
    model: AttributionModel,
    files: list[Path],
    window_s: float | None,
    slos: SLOFile | None,
    out: IO[str],
) -> str:
    """Attribute every window of the recordings into `out`; returns the one-line summary."""
    from otelprobe.attribution.attribute import attribute
    from otelprobe.attribution.dataset import window_table
    from otelprobe.attribution.incidents import incidents_from_windows
    from otelprobe.attribution.records import read_records

    records, stats = read_records([str(f) for f in files])
    if records.empty:
        raise InputError(f"no probe records in {', '.join(map(str, files))} ({reader_summary(stats)})")
    frame, window = window_table(records, window_s, slos, model.metadata.window_intervals)
    written = 0
    for record in attribute(model, frame):
        out.write(json.dumps(record.to_json(), allow_nan=False) + "\n")
        written += 1
    incidents = incidents_from_windows(frame.assign(violating_slos=frame["violating_slos"].fillna("")))
    violating = int(frame["violating"].sum())
    return (
        f"{PROG}: read {reader_summary(stats)} from {len(files)} file(s); "
        f"{len(frame):,} series-windows of {window:g} s, {violating:,} violating an SLO, "
        f"{written:,} attributed; {len(incidents)} incidents"
    )
