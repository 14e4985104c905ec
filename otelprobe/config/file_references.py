"""Files a config names (TLS CAs, client certificates and keys) that cannot be read now.

`otelprobe run` loads these files on every attempt, so a file that appears later (a mounted
secret, a renewed certificate) is picked up without a restart, and a missing one shows in that
target's spans as `tls_config_invalid`. `otelprobe validate` is where a typo in such a path should
be caught, before deployment: it reports each unreadable file at its line, and `run` warns once
at start.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from otelprobe.config.document import Document, PathKey, format_path
from otelprobe.config.problems import shorten
from otelprobe.errors import ConfigProblem

FILE_KEYS = frozenset({"ca_file", "client_cert", "client_key"})


def unreadable_files(
    doc: Document, filename: str, *, keys: frozenset[str] = FILE_KEYS, base_dir: Path | None = None
) -> list[ConfigProblem]:
    """One problem per file reference (anywhere in the file) that is not a readable file now.

    Relative paths are checked against `base_dir` if given (the sidecar takes them from its config
    file's directory), else against the working directory, as the prober opens them.
    """
    problems = []
    for path, value in _file_references(doc.data, (), keys):
        reason = _unreadable(base_dir / Path(value).expanduser() if base_dir else Path(value))
        if reason:
            base = (
                f"the config file's directory {base_dir}"
                if base_dir
                else f"the working directory {Path.cwd()}"
            )
            where = "" if Path(value).is_absolute() else f" (relative to {base})"
            message = shorten(f"cannot read {value!r}{where}: {reason}")  # a path can be 100 kB
            problems.append(ConfigProblem(filename, doc.lines.get(path), format_path(path), message))
    return problems


def _file_references(data: Any, path: PathKey, keys: frozenset[str]) -> Iterator[tuple[PathKey, str]]:
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and key.startswith("x-"):
                continue  # extension keys are YAML anchors' scratch space, never read
            if key in keys and isinstance(value, str) and value:
                yield (*path, key), value
            else:
                yield from _file_references(value, (*path, key), keys)
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from _file_references(item, (*path, index), keys)


def _unreadable(path: Path) -> str | None:
    try:
        if not path.exists():
            return "no such file"
        if path.is_dir():
            return "a directory, not a file"
    except OSError as exc:  # e.g. a path too long, or a component not a directory
        return exc.strerror or type(exc).__name__
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def unreadable_in(models: Iterable[BaseModel]) -> dict[str, tuple[str, int]]:
    """For `run`'s warning: each unreadable file named in these models -> (reason, how many name it).

    Each distinct path is checked once, so 20,000 targets sharing one CA cost one `stat`.
    """
    found: dict[str, tuple[str, int]] = {}
    checked: dict[str, str | None] = {}
    for model in models:
        for value in _model_file_references(model):
            if value not in checked:
                checked[value] = _unreadable(Path(value))
            reason = checked[value]
            if reason:
                found[value] = (reason, found.get(value, (reason, 0))[1] + 1)
    return found


def _model_file_references(model: BaseModel) -> Iterator[str]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name in FILE_KEYS and isinstance(value, str) and value:
            yield value
        elif isinstance(value, BaseModel):
            yield from _model_file_references(value)
