"""Recording paths as the attribution commands take them, and one-line summaries of what was read.

`otelprobe train`, `attribute` (and `evaluate`) accept a recording's traces file (OTLP JSON lines,
plain or gzip) or a recording directory holding one; a missing path is a user error reported in
one line, before anything is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from otelprobe.attribution.otlp_files import ReaderStats

TRACE_FILES: Final = ("traces.jsonl.gz", "traces.jsonl")
"""What a recording directory holds (lab/runner.py writes one of them)."""


class InputError(ValueError):
    """A path on the command line that is not a recording."""


def recording_files(paths: Sequence[str | Path]) -> list[Path]:
    """The traces file of each path: the path itself, or a recording directory's traces file.

    Raises:
        InputError: a path that does not exist, or a directory without a traces file.
    """
    files = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = [path / name for name in TRACE_FILES if (path / name).is_file()]
            if not found:
                raise InputError(f"{path}: a directory without {' or '.join(TRACE_FILES)}")
            files.append(found[0])
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise InputError(f"{path}: not a regular file")
        else:
            raise InputError(f"{path}: no such file or directory")
    return files


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def reader_summary(stats: ReaderStats) -> str:
    """'15,164 probe records; skipped 2 bad lines (first: FILE:LINE: ...)': what was read and what
    was not."""
    text = _count(stats.records, "probe record")
    skipped = []
    if stats.bad_lines:
        skipped.append(_count(stats.bad_lines, "bad line"))
    if stats.bad_spans:
        skipped.append(_count(stats.bad_spans, "bad span"))
    if stats.orphan_traces:
        skipped.append(_count(stats.orphan_traces, "incomplete trace"))
    if stats.problem_count and not skipped:
        skipped.append(_count(stats.problem_count, "problem"))
    if skipped:
        text += "; skipped " + ", ".join(skipped)
    if stats.problems:
        text += f" (first: {stats.problems[0]})"
    return text
