"""pyproject.toml's dependencies are what otelprobe/ imports: no more in the base install, no less.

An AST scan of every module (top-level and function-level imports; `if TYPE_CHECKING:` ones never
run, so they do not count) maps each third-party import to the distribution that provides it in
this environment. The base install must cover the prober (everything outside attribution/, lab/
and sidecar/); each of those packages may also use its extra.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
PACKAGE: Final = REPO / "otelprobe"

# Base dependencies the code need not import: the project's brief names them as core.
CORE_BY_BRIEF: Final = {"opentelemetry-exporter-otlp"}
# The extras a package beside the prober may use (lab/dataset/experiments.py, the notebooks'
# analysis, runs the attribution model; the sidecar's extra includes the attribution stack).
EXTRAS_OF: Final = {
    "attribution": {"attribution"},
    "lab": {"lab", "attribution"},
    "sidecar": {"sidecar", "attribution"},
}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return _normalize(match.group(1))


@cache
def _declared() -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = frozenset(_requirement_name(r) for r in project["dependencies"])
    extras: dict[str, set[str]] = defaultdict(set)
    for extra, requirements in project["optional-dependencies"].items():
        for requirement in requirements:
            name = _requirement_name(requirement)
            if name == "otelprobe":  # otelprobe[attribution]: that extra's distributions too
                inner = re.search(r"\[(.*)\]", requirement)
                assert inner, requirement
                for other in inner.group(1).split(","):
                    extras[extra].update(
                        _requirement_name(r) for r in project["optional-dependencies"][other]
                    )
            else:
                extras[extra].add(name)
    return base, {extra: frozenset(names) for extra, names in extras.items()}


@cache
def _distribution_of_path(top: str) -> dict[str, str]:
    """'opentelemetry/sdk/trace/__init__.py' -> 'opentelemetry-sdk', for the distributions that
    share the top-level package `top` (installed metadata; reading every RECORD would be slow)."""
    owners: dict[str, str] = {}
    for name in set(_top_level_owners().get(top, ())):
        for file in importlib.metadata.files(name) or ():
            if file.suffix == ".py":
                owners[file.as_posix()] = _normalize(name)
    return owners


@cache
def _top_level_owners() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@cache
def _distribution(module: str) -> str:
    """The distribution providing `module`, from metadata only (nothing is imported). Namespace
    packages such as opentelemetry.* and google.* are split across several: the longest prefix
    that is a file of one decides."""
    owners = set(_top_level_owners().get(module.split(".")[0], ()))
    if len(owners) == 1:
        return _normalize(owners.pop())
    parts = module.split(".")
    while parts:
        for path in ("/".join(parts) + ".py", "/".join(parts) + "/__init__.py"):
            if path in _distribution_of_path(parts[0]):
                return _distribution_of_path(parts[0])[path]
        parts.pop()
    raise AssertionError(f"no installed distribution provides {module!r}")


@cache
def _brought_by_core() -> frozenset[str]:
    """What the brief's core packages install with them (opentelemetry-exporter-otlp is a
    meta-package: its OTLP/gRPC and OTLP/HTTP exporters are what sidecar/emitter.py imports)."""
    brought: set[str] = set()
    for name in CORE_BY_BRIEF:
        for requirement in importlib.metadata.requires(name) or ():
            if "extra ==" not in requirement:
                brought.add(_requirement_name(requirement))
    return frozenset(brought)


def _imported_modules(tree: ast.Module) -> set[str]:
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                type_only.update(id(n) for n in ast.walk(inner))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in modules if m.split(".")[0] not in sys.stdlib_module_names | {"otelprobe"}}


@cache
def _scan() -> dict[str, dict[str, set[str]]]:
    """distribution -> package area ('prober', 'attribution', 'lab', 'sidecar') -> modules."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        area = relative.parts[0] if relative.parts[0] in EXTRAS_OF else "prober"
        for module in _imported_modules(ast.parse(path.read_text())):
            found[_distribution(module)][area].add(str(relative))
    return found


def test_the_prober_needs_only_the_base_install() -> None:
    base, _ = _declared()
    missing = {
        dist: sorted(areas["prober"])
        for dist, areas in _scan().items()
        if areas["prober"] and dist not in base
    }
    assert not missing, f"imported by the prober but not in [project].dependencies: {missing}"


def test_attribution_lab_and_sidecar_need_only_their_extras() -> None:
    base, extras = _declared()
    missing: dict[str, list[str]] = {}
    for dist, areas in _scan().items():
        for area, allowed in EXTRAS_OF.items():
            available = base.union(_brought_by_core(), *(extras[extra] for extra in allowed))
            if areas.get(area) and dist not in available:
                missing[f"{dist} ({area})"] = sorted(areas[area])
    assert not missing, f"imported but in neither the base install nor the package's extras: {missing}"


def test_every_base_dependency_is_imported() -> None:
    """No dead weight in `pip install otelprobe` (e.g. a library the code stopped using)."""
    base, _ = _declared()
    unused = sorted(base - set(_scan()) - {_normalize(name) for name in CORE_BY_BRIEF})
    assert not unused, f"in [project].dependencies but imported nowhere in otelprobe/: {unused}"


def test_test_and_lab_tools_are_not_base_dependencies() -> None:
    base, extras = _declared()
    assert "pytest" not in base and "pytest" in extras["dev"]
    assert not base & {"aiohttp", "lightgbm", "pandas", "numpy", "scikit-learn", "matplotlib"}
