"""Recordings: OTLP JSON-lines files (plain or gzip) streamed as span views: the one file reader.

One line (one ExportTraceServiceRequest) in memory at a time; lines too long, not JSON, or not a
trace request, and spans without IDs or timestamps, are counted in `ReaderStats` with file:line and
skipped. A truncated gzip stream ends its file with a problem; the lines before it are kept.
records.py turns the batches into probe records; `iter_span_views` gives span-level checks the
spans one by one; lab/dataset/recording.py rewrites each line's JSON (`iter_trace_lines`) to label it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

from otelprobe.attribution.otlp_decode import MalformedSpan, SpanView, json_resource_spans, json_span_view

MAX_PROBLEMS_KEPT: Final = 100
"""Problem messages kept in ReaderStats (all are counted)."""
DEFAULT_MAX_LINE_BYTES: Final = 256 * 1024 * 1024
PathsArg = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


TRACE_FILES: Final = ("traces.jsonl.gz", "traces.jsonl")
"""What a recording directory holds (lab/dataset/runner.py writes one of them)."""


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


@dataclass(slots=True)
class ReaderStats:
    """What a reader saw and what it could not use; `problems` names the first few, file:line."""

    lines: int = 0
    requests: int = 0
    spans: int = 0
    records: int = 0
    bad_lines: int = 0
    bad_spans: int = 0
    other_lines: int = 0
    """Metric and log lines (the Collector's file exporter writes every signal into one file)."""
    foreign_spans: int = 0
    """Spans of traces whose root is not a probe root (e.g. slo.violation)."""
    orphan_traces: int = 0
    """Traces whose root never arrived (evicted by count or age, or left at the end)."""
    orphan_spans: int = 0
    late_spans: int = 0
    """Spans that arrived after their trace's record was made (or a second root)."""
    absurd_values: int = 0
    """Durations < 0 or > 1 h, and numeric attributes that are NaN, infinite or negative: NaN'd."""
    long_values: int = 0
    """Text values longer than records.MAX_NAME_CHARS / MAX_DETAIL_CHARS, cut to that length."""
    problem_count: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(message)

    def summary(self) -> str:
        """One line for logs and CLIs."""
        dropped = (
            f"{self.bad_lines} bad lines, {self.bad_spans} bad spans, {self.orphan_traces} orphan traces"
            f" ({self.orphan_spans} spans), {self.late_spans} late spans, {self.foreign_spans} non-probe"
            f" spans, {self.absurd_values} absurd values dropped"
        )
        return f"{self.records} probe records from {self.spans} spans in {self.requests} requests; {dropped}"


def _lines(path: Path, stats: ReaderStats, max_line_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a file; over-long lines are skipped whole, a truncated or corrupt
    gzip stream ends the file with a problem (the lines before it are kept)."""
    number = 0
    with path.open("rb") as raw:
        head = raw.read(2)
        raw.seek(0)
        stream: io.BufferedIOBase = gzip.GzipFile(fileobj=raw, mode="rb") if head == b"\x1f\x8b" else raw
        try:
            while line := stream.readline(max_line_bytes + 1):
                number += 1
                if len(line) > max_line_bytes:
                    while (rest := stream.readline(max_line_bytes)) and not rest.endswith(b"\n"):
                        pass
                    stats.bad_lines += 1
                    stats.problem(f"{path}:{number}: line longer than {max_line_bytes} bytes skipped")
                    continue
                yield number, line
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            stats.problem(f"{path}:{number + 1}: gzip stream unreadable from here ({exc}); rest skipped")
            stats.bad_lines += 1


class TraceLine(NamedTuple):
    """One trace-request line of a file: its JSON tree and its well-formed spans."""

    request: dict[str, Any]
    """The parsed ExportTraceServiceRequest (lab labelling adds attributes and writes it back)."""
    span_dicts: list[dict[str, Any]]
    """The well-formed spans' dicts inside `request`, in order (malformed ones are counted, not here)."""
    views: list[SpanView]
    """The same spans as views: views[i] is span_dicts[i]."""


def _trace_line(
    path: Path, number: int, line: bytes, stats: ReaderStats, keys: frozenset[str] | None
) -> TraceLine | None:
    """One line as a TraceLine; None for a line that is not a trace request (counted)."""
    where = f"{path}:{number}"
    try:
        request: Any = json.loads(line)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        stats.bad_lines += 1
        stats.problem(f"{where}: not JSON ({exc})")
        return None
    if not isinstance(request, dict) or "resourceSpans" not in request:
        if isinstance(request, dict) and ("resourceMetrics" in request or "resourceLogs" in request):
            stats.other_lines += 1
        else:
            stats.bad_lines += 1
            stats.problem(f"{where}: not an OTLP trace, metrics or logs request")
        return None
    span_dicts: list[dict[str, Any]] = []
    views: list[SpanView] = []
    try:
        for resource, spans in json_resource_spans(request):
            for span in spans:
                try:
                    views.append(json_span_view(span, resource, keys))
                except MalformedSpan as exc:
                    stats.bad_spans += 1
                    stats.problem(f"{where}: span skipped: {exc}")
                    continue
                span_dicts.append(span)
    except MalformedSpan as exc:
        stats.bad_lines += 1
        stats.problem(f"{where}: {exc}")
        return None
    stats.requests += 1
    return TraceLine(request, span_dicts, views)


def paths_of(paths: PathsArg) -> list[Path]:
    """One path or several, as a list."""
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    return [Path(p) for p in paths]


def iter_trace_lines(
    paths: PathsArg,
    stats: ReaderStats,
    *,
    keys: frozenset[str] | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[TraceLine]:
    """Every trace-request line of the files, in order (one with no spans too), its spans' views
    with the attributes in `keys` (all if None). Metric and log lines are counted as
    `other_lines` and skipped; bad lines and spans are counted and named file:line.

    Raises:
        OSError: a file cannot be opened.
    """
    for path in paths_of(paths):
        for number, line in _lines(path, stats, max_line_bytes):
            stats.lines += 1
            if line.strip():
                trace_line = _trace_line(path, number, line, stats, keys)
                if trace_line is not None:
                    yield trace_line


def iter_span_batches(
    paths: PathsArg,
    stats: ReaderStats,
    *,
    keys: frozenset[str] | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[list[SpanView]]:
    """The spans of each trace-request line of the files that has any, in order, with the
    attributes in `keys` (all if None); see `iter_trace_lines`.

    Raises:
        OSError: a file cannot be opened.
    """
    for trace_line in iter_trace_lines(paths, stats, keys=keys, max_line_bytes=max_line_bytes):
        if trace_line.views:
            yield trace_line.views


def iter_span_views(
    paths: PathsArg, stats: ReaderStats | None = None, *, keys: frozenset[str] | None = None
) -> Iterator[SpanView]:
    """Every well-formed span of the files, one by one, for span-level checks (the vantage is
    `view.resource["otelprobe.vantage"]`, a root has no `parent_span_id`); what was skipped is
    counted in `stats`.

    Raises:
        OSError: a file cannot be opened.
    """
    stats = stats if stats is not None else ReaderStats()
    for views in iter_span_batches(paths, stats, keys=keys):
        yield from views
