"""One reader of probe spans (issue 8): only the reader modules walk OTLP trace requests.

attribution/otlp_decode.py turns requests (protobuf or OTLP/JSON dicts) into span views and
attribution/otlp_files.py reads recordings' lines (gzip, bad lines with file:line, one line in
memory); everything else in otelprobe/ goes through them. The scan reads the package's source with
`ast`: a string "resourceSpans"/"scopeSpans" (docstrings aside) or an attribute
`.resource_spans`/`.scope_spans` outside the modules below is a second reader.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

PACKAGE_DIR: Final = Path(__file__).resolve().parents[2] / "otelprobe"

READERS: Final = frozenset({"attribution/otlp_decode.py", "attribution/otlp_files.py"})
ALLOWED: Final[dict[str, str]] = {
    # A writer: it produces OTLP and counts what it is about to send.
    "telemetry/senders.py": "counts the spans of the request it is sending (telemetry sits below "
    "attribution in the layers, so it cannot call otlp_decode)",
    # Not a reader: it checks span ID sizes in place, dropping bad spans, before the request is
    # queued (the sidecar's partial success); decoding into views is otlp_decode's.
    "sidecar/otlp_bodies.py": "drops spans with ill-sized IDs from a request in place before queueing it",
}
STRINGS: Final = frozenset({"resourceSpans", "scopeSpans"})
ATTRIBUTES: Final = frozenset({"resource_spans", "scope_spans"})


def _docstrings(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def walks_otlp_spans(source: str) -> list[int]:
    """The lines of `source` that name a part of an OTLP trace request's span structure."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    lines: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in STRINGS and id(node) not in docstrings:
            lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr in ATTRIBUTES:
            lines.append(node.lineno)
    return sorted(lines)


def _walkers() -> dict[str, list[int]]:
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        lines = walks_otlp_spans(path.read_text(encoding="utf-8"))
        if lines:
            found[path.relative_to(PACKAGE_DIR).as_posix()] = lines
    return found


def test_only_the_reader_modules_walk_otlp_spans() -> None:
    walkers = _walkers()
    others = {path: lines for path, lines in walkers.items() if path not in READERS | ALLOWED.keys()}
    assert not others, f"OTLP spans walked outside the one reader (use otlp_decode/otlp_files): {others}"
    assert READERS <= walkers.keys()  # the scan sees the readers themselves


def test_every_allowed_module_still_needs_it() -> None:
    walkers = _walkers()
    assert {path for path in ALLOWED if path not in walkers} == set(), "drop it from ALLOWED"


def test_the_scan_sees_json_and_protobuf_walks_but_not_prose() -> None:
    source = '''
"""Reads resourceSpans."""
def f(request, tree):
    """scopeSpans too."""
    for rs in tree["resourceSpans"]:
        rs.get("scopeSpans", ())
    return [s for r in request.resource_spans for s in r.scope_spans]
'''
    assert walks_otlp_spans(source) == [5, 6, 7, 7]
