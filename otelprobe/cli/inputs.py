"""Recording paths as the attribution commands take them, and one-line summaries of what was read.

`otelprobe train`, `attribute` (and `evaluate`) accept a recording's traces file (OTLP JSON lines,
plain or gzip) or a recording directory holding one; a missing path is a user error reported in
one line, before anything is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from otelprobe.attribution.otlp_files import TRACE_FILES, InputError, recording_files

if TYPE_CHECKING:
    from otelprobe.attribution.otlp_files import ReaderStats

__all__ = ["TRACE_FILES", "InputError", "recording_files"]


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
