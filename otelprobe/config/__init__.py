"""Loading and validating config files: `load(path) -> Config`, `validate(path) -> problems`.

The entry point of configuration (DESIGN §2: config -> scheduler -> probes). A file is parsed
(YAML or JSON, keeping lines), `${...}` references are substituted into its values, and the data is
validated by the pydantic models in config/models.py. Every problem is collected, not only the
first, each with the file, line and YAML path it concerns.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from otelprobe.config import envsubst
from otelprobe.config import problems as _problems
from otelprobe.config.document import Document, PathKey, format_path, parse
from otelprobe.config.file_references import unreadable_files
from otelprobe.config.models import DUPLICATE_TARGET_NAME, Config
from otelprobe.config.problems import shorten
from otelprobe.config.tenant_checks import over_budget, unknown_tenants
from otelprobe.errors import ConfigError, ConfigProblem

__all__ = ["Config", "ConfigError", "ConfigProblem", "load", "load_text", "validate"]

logger = logging.getLogger(__name__)

# `validate` only: a prober with nothing to probe is almost always a wrong file or a lost
# indentation; one meant to start empty (targets added by a later reload) says `targets: []`.
_NOTHING_IN_IT = "the file has no settings (empty, only comments, or {}): a config needs at least `targets:`"
_NO_TARGETS = "no `targets:` in the file; write `targets: []` to start with none (a reload can add them)"


def load(path: str | Path) -> Config:
    """Load and validate a config file (.yaml, .yml or .json).

    Raises:
        ConfigError: with every problem found, each naming file, line and YAML path.
    """
    config, problems = _load_path(Path(path))
    if problems or config is None:
        raise ConfigError(problems)
    return config


def validate(path: str | Path) -> list[ConfigProblem]:
    """Every problem in a config file; an empty list means the file is valid.

    Beyond what `load` checks, `validate` refuses what `run` accepts but is almost always a
    mistake before a deployment: a file with no settings or no `targets:` key (`targets: []` is
    the way to start empty, waiting for a reload), and TLS files that cannot be read now (`run`
    loads them per attempt, so it starts without them; see config/file_references.py).
    """
    return _load_path(Path(path), deployment_checks=True)[1]


def load_text(text: str, filename: str = "<config>", *, base_dir: Path | None = None) -> Config:
    """Load config from text; `filename` names it in problems and picks JSON when it ends in .json.

    Raises:
        ConfigError: with every problem found.
    """
    config, problems = _load(text, filename, base_dir or Path.cwd())
    if problems or config is None:
        raise ConfigError(problems)
    return config


def read_config_file(path: Path, what: str = "config file") -> str:
    """The UTF-8 text of a config-like file (prober, SLO or sidecar config).

    Raises:
        ConfigError: one problem, `file: cannot read <what>: <reason>`.
    """
    try:
        data = path.read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([ConfigProblem(str(path), None, "", f"cannot read {what}: {reason}")]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([_not_utf8(path, data, exc, what)]) from None


def _not_utf8(path: Path, data: bytes, exc: UnicodeDecodeError, what: str) -> ConfigProblem:
    """Where the first byte that is not UTF-8 is, and what the file probably is instead."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ConfigProblem(str(path), 1, "", f"the {what} is UTF-16 (byte order mark); save it as UTF-8")
    line_start = data.rfind(b"\n", 0, exc.start) + 1
    line = data.count(b"\n", 0, exc.start) + 1
    byte = data[exc.start]
    message = f"the {what} is not UTF-8: byte 0x{byte:02x} (save the file as UTF-8)"
    return ConfigProblem(str(path), line, "", message, exc.start - line_start + 1)


def _load_path(path: Path, *, deployment_checks: bool = False) -> tuple[Config | None, list[ConfigProblem]]:
    try:
        text = read_config_file(path)
    except ConfigError as exc:
        return None, exc.problems
    return _load(text, str(path), path.resolve().parent, deployment_checks=deployment_checks)


def _load(
    text: str, filename: str, base_dir: Path, *, deployment_checks: bool = False
) -> tuple[Config | None, list[ConfigProblem]]:
    substitution_problems: list[ConfigProblem] = []
    substituted: set[str] = set()

    def substitute(value: str, path: PathKey, line: int) -> str | None:
        result = envsubst.substitute(value, base_dir=base_dir)
        for message in result.problems:
            substitution_problems.append(ConfigProblem(filename, line, format_path(path), shorten(message)))
        if result.changed:
            substituted.add(format_path(path))
        return result.value if result.changed else None

    doc = parse(text, filename, substitute, json_syntax=filename.lower().endswith(".json"))
    problems = [*doc.problems, *substitution_problems]
    if doc.data is None and doc.problems:
        return None, problems  # a syntax error: nothing further can be checked
    if not isinstance(doc.data, dict):
        got = "a list" if isinstance(doc.data, list) else repr(doc.data)
        message = f"the file must be a mapping (vantage:, targets:, ...), got {got}"
        problems.append(ConfigProblem(filename, 1, "", message))
        return None, problems
    if deployment_checks and not doc.data:
        return None, [ConfigProblem(filename, 1, "", _NOTHING_IN_IT)]
    if deployment_checks and "targets" not in doc.data:
        problems.append(ConfigProblem(filename, 1, "targets", _NO_TARGETS))
    problems.extend(_duplicate_names(doc, filename))
    problems.extend(unknown_tenants(doc, filename))
    if deployment_checks:
        problems.extend(unreadable_files(doc, filename))
    try:
        config = Config.model_validate(doc.data)
    except ValidationError as exc:
        found = _problems.problems_from(exc, doc, filename, Config, frozenset({DUPLICATE_TARGET_NAME}))
        # A value whose reference could not be substituted fails validation too; say it once.
        unresolved = {p.path for p in substitution_problems}
        problems.extend(_with_hint(p, substituted) for p in found if p.path not in unresolved)
        config = None
    if deployment_checks and config is not None:
        problems.extend(over_budget(config, doc, filename))
    problems.sort(key=lambda p: (p.line is None, p.line or 0))
    if problems:
        logger.debug("%s: %d config problems", filename, len(problems))
        return None, problems
    return config, []


def _with_hint(problem: ConfigProblem, substituted: set[str]) -> ConfigProblem:
    # An unquoted `${VAR}` is typed after substitution (OTel's rule): VAR=8080 makes an integer.
    if problem.path in substituted and problem.message.startswith("expected a string"):
        hint = '; quote the reference ("${...}") to keep the value a string'
        return dataclasses.replace(problem, message=problem.message + hint)
    return problem


def _duplicate_names(doc: Document, filename: str) -> list[ConfigProblem]:
    targets: Any = doc.data.get("targets")
    if not isinstance(targets, list):
        return []
    seen: dict[str, list[int]] = defaultdict(list)
    for index, target in enumerate(targets):
        if isinstance(target, dict) and isinstance(target.get("name"), str):
            seen[target["name"]].append(index)
    problems = []
    for name, indexes in seen.items():
        for index in indexes[1:] if len(indexes) > 1 else []:
            first = indexes[0]
            first_line = doc.lines.get(("targets", first, "name"))
            at = f"targets[{first}]" + (f" at line {first_line}" if first_line else "")
            path: PathKey = ("targets", index, "name")
            problems.append(
                ConfigProblem(
                    filename,
                    doc.lines.get(path),
                    format_path(path),
                    f"duplicate target name {name!r}, also used by {at}; names must be unique",
                )
            )
    return problems
