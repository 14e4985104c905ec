"""The import graph of otelprobe/, drawn from the source with `ast`: the layers the folders name.

Every `import` and `from ... import` counts, function-level ones included (a lazy import that hides
a cycle is still a cycle). Imports under `if TYPE_CHECKING:` are never executed, so they do not
make cycles, but they still may not point upward. The layer order is the one README.md's
"Architecture" section draws; a new top-level module or package must be placed in it here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

PACKAGE_DIR: Final = Path(__file__).resolve().parent.parent / "otelprobe"

LAYERS: Final[tuple[tuple[str, ...], ...]] = (
    # the foundation: vocabulary, errors, results, clocks (the root package holds only __version__)
    ("otelprobe", "names", "errors", "causes", "timing", "results", "targets"),
    ("settings",),  # durations, addresses, secrets, the per-target base models
    ("net",),  # timed sockets, happy eyeballs, DNS resolution, the TLS engine
    ("probes",),  # the probe kinds
    ("config",),  # the config file: reading, problems, the model of a whole file
    ("telemetry",),  # spans and metrics out (OTLP, Prometheus)
    ("scheduling",),  # the prober process: scheduler and runtime
    ("attribution",),  # root-cause attribution on recorded telemetry
    ("lab",),  # the fault lab: servers, link emulation, datasets, verification against the wire
    ("sidecar",),  # the attribution service beside the collector
    ("cli",),  # the command line, on top of everything
)
LAYER_OF: Final = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str  # an otelprobe module, or the first name of a third-party import
    type_only: bool
    line: int


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def _targets(module: str, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module if modules[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(max(node.level - 1, 0)):
        base = base.rpartition(".")[0]
    source = (node.module or "") if node.level == 0 else ".".join(filter(None, (base, node.module)))
    return [
        f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names
    ]


def _owning_module(name: str, modules: dict[str, Path]) -> str:
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


@cache
def _edges() -> tuple[Edge, ...]:
    modules = _modules()
    edges: list[Edge] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        type_only = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(module, node, modules):
                if target == "otelprobe" or target.startswith("otelprobe."):
                    imported = _owning_module(target, modules)
                    if imported == module:
                        continue
                else:
                    imported = target.partition(".")[0]
                edges.append(Edge(module, imported, id(node) in type_only, node.lineno))
    return tuple(edges)


def _internal_edges(*, runtime_only: bool) -> list[Edge]:
    modules = _modules()
    return [e for e in _edges() if e.imported in modules and not (runtime_only and e.type_only)]


def _top(module: str) -> str:
    """The top-level part of otelprobe a module belongs to (`otelprobe.net.tls.openssl` -> `net`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _package(module: str) -> str:
    """The package a module lives in; a package's __init__ belongs to the package itself."""
    return module if _modules()[module].name == "__init__.py" else module.rpartition(".")[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_graph_is_drawn_from_every_module() -> None:
    # A guard against a broken walker passing every check below with an empty graph.
    assert len(_modules()) > 150
    assert len(_internal_edges(runtime_only=False)) > 500
    assert ("otelprobe.net.tls.openssl", "otelprobe.net.tls.ocsp") in {
        (e.importer, e.imported) for e in _edges()
    }


def test_every_top_level_part_has_a_layer() -> None:
    unplaced = sorted({_top(module) for module in _modules()} - set(LAYER_OF))
    assert not unplaced, f"place these in LAYERS (and in README's Architecture): {unplaced}"


def test_no_module_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in _internal_edges(runtime_only=True):
        graph[edge.importer].add(edge.imported)
    assert _cycles(graph) == []


def test_no_package_cycle() -> None:
    # Between top-level parts, and between any two packages not nested in one another
    # (probes/__init__.py lists the kinds and the kinds import probes/base.py: that nesting is fine).
    tops: dict[str, set[str]] = defaultdict(set)
    packages: dict[str, set[str]] = defaultdict(set)
    for edge in _internal_edges(runtime_only=True):
        if _top(edge.importer) != _top(edge.imported):
            tops[_top(edge.importer)].add(_top(edge.imported))
        a, b = _package(edge.importer), _package(edge.imported)
        if not (a == b or a.startswith(b + ".") or b.startswith(a + ".")):
            packages[a].add(b)
    assert _cycles(tops) == []
    assert _cycles(packages) == []


def test_no_upward_import() -> None:
    upward = [
        f"{e.importer}:{e.line} -> {e.imported}"
        for e in _internal_edges(runtime_only=False)
        if LAYER_OF.get(_top(e.importer), 0) < LAYER_OF.get(_top(e.imported), 0)
    ]
    assert upward == []


def test_no_private_module_imported_from_another_package() -> None:
    # `a.b._c` belongs to package `a.b`: only modules inside `a.b` (or its subpackages) import it.
    leaks = []
    for edge in _internal_edges(runtime_only=False):
        parts = edge.imported.split(".")
        for i, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:i])
                if not edge.importer.startswith(owner + "."):
                    leaks.append(f"{edge.importer}:{edge.line} -> {edge.imported}")
                break
    assert leaks == []


def test_probes_and_the_network_layer_import_no_telemetry() -> None:
    offenders = [
        f"{e.importer} -> {e.imported}"
        for e in _internal_edges(runtime_only=False)
        if _top(e.importer) in {"probes", "net"} and _top(e.imported) == "telemetry"
    ]
    assert offenders == []


def test_no_httpcore_import() -> None:
    # HTTP/1.1 runs on h11/httptools and HTTP/2 on h2; httpcore is no dependency any more.
    users = sorted({f"{e.importer}:{e.line}" for e in _edges() if e.imported == "httpcore"})
    assert users == []


def _chain_to(start: str, part: str, graph: dict[str, set[str]]) -> list[str] | None:
    """The shortest import chain from module `start` to any module of top-level `part`, if any."""
    parent: dict[str, str] = {}
    queue = [start]
    seen = {start}
    while queue:
        module = queue.pop(0)
        for imported in sorted(graph.get(module, ())):
            if imported in seen:
                continue
            seen.add(imported)
            parent[imported] = module
            if _top(imported) == part:
                chain = [imported]
                while chain[-1] != start:
                    chain.append(parent[chain[-1]])
                return chain[::-1]
            queue.append(imported)
    return None


def test_the_sidecar_and_attribution_never_import_the_lab() -> None:
    # Issue 8: the sidecar runs beside a production collector and must not pull in the fault lab
    # (fault servers, link emulation, network namespaces). The layer order alone allows
    # sidecar -> lab (the lab sits below it), so it is checked here: directly or through any chain
    # of imports, function-level and type-only ones included.
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in _internal_edges(runtime_only=False):
        graph[edge.importer].add(edge.imported)
    starts = sorted(m for m in _modules() if _top(m) in {"sidecar", "attribution"})
    assert len(starts) > 40  # both packages were found
    assert _chain_to("otelprobe.cli.lab", "lab", graph)  # the walk does find a chain where one exists
    chains = [" -> ".join(chain) for start in starts if (chain := _chain_to(start, "lab", graph))]
    assert chains == []


def test_importing_the_sidecar_and_attribution_loads_no_lab_module() -> None:
    # The same at run time, for imports the source walk cannot see (importlib by name).
    packages = ("otelprobe.sidecar", "otelprobe.attribution")
    names = [m for m in _modules() if m.startswith(packages)]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('otelprobe.lab'))))\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.split() == []
