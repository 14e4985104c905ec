"""pydantic validation errors -> `ConfigProblem`s an SRE can act on: YAML path, line, plain words.

Used by config/__init__.py after validation: the error's location is rewritten as the path the
user wrote (a discriminated union's tag and a `int | str` member name are not part of it), the
line comes from the parsed document, and the message says what was expected and what was found.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from otelprobe.config.document import Document, PathKey, format_path
from otelprobe.config.models import prepare
from otelprobe.errors import ConfigProblem
from otelprobe.settings.common import RETIRED_KEY
from otelprobe.settings.secrets import redact

_MAX_SHOWN: Final = 60  # characters of a bad value shown in a message
_MAX_MESSAGE: Final = 400
_TYPE_EXPECTATIONS: Final = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}


def problems_from(
    error: ValidationError, doc: Document, filename: str, model: type[BaseModel], skip_types: frozenset[str]
) -> list[ConfigProblem]:
    """One problem per distinct (path, message); alternatives of a union are joined with "or"."""
    # Paths are walked in the data the model saw (defaults merged), lines looked up in the file's.
    effective = _effective(doc.data)
    by_path: dict[PathKey, list[str]] = {}
    found: dict[PathKey, str] = {}
    for details in error.errors():
        if details["type"] in skip_types:
            continue
        path, data = _user_path(details["loc"], effective, missing=details["type"] == "missing")
        path, message = _message(details, path, data, model)
        messages = by_path.setdefault(path, [])
        if message not in messages:
            messages.append(message)
        if details["type"] in _TYPE_EXPECTATIONS:
            found[path] = f", got {_describe(data)}"
    problems = []
    for path, messages in by_path.items():
        # Alternatives of a union read as one sentence: "expected an integer or a string, got 1.5".
        if len(messages) > 1 and all(m.startswith("expected ") for m in messages):
            messages = [messages[0], *(m.removeprefix("expected ") for m in messages[1:])]
        # A key missing from the top level belongs to the document as a whole: its first line.
        line, message = _line_for(path, doc) or 1, " or ".join(messages) + found.get(path, "")
        if path and path[0] == "targets" and path not in doc.lines and len(path) > 2:
            origin = ("defaults", *path[2:])
            if origin in doc.lines:
                line, message = doc.lines[origin], f"{message} (the value comes from defaults)"
        problems.append(ConfigProblem(filename, line, format_path(path), shorten(redact(message))))
    return _drop_repeated_default_problems(problems)


def shorten(message: str) -> str:
    """A message that quotes a huge value (10 MB of it, say) cut to its head and tail."""
    if len(message) <= _MAX_MESSAGE:
        return message
    return f"{message[:200]}...({len(message) - 280:,} characters)...{message[-80:]}"


def _effective(data: Any) -> Any:
    try:
        return prepare(data)
    except ValueError:
        return data


def _user_path(loc: tuple[int | str, ...], data: Any, *, missing: bool) -> tuple[PathKey, Any]:
    """Walk the input along pydantic's loc, keeping only the steps the user wrote."""
    path: list[str | int] = []
    for i, step in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(data, list) and isinstance(step, int) and 0 <= step < len(data):
            data = data[step]
        elif isinstance(data, dict) and step in data:
            data = data[step]
        elif isinstance(data, dict) and last and missing:
            data = None  # a missing key: name it
        else:
            continue  # a union member's label ("http", "int", "function-after[...]")
        path.append(step)
    return tuple(path), data


def _message(details: ErrorDetails, path: PathKey, value: Any, model: type[BaseModel]) -> tuple[PathKey, str]:
    kind, ctx = details["type"], details.get("ctx") or {}
    if kind == "missing":
        return path, "required, but missing"
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        return path, f"unknown key {key!r}{_suggestion(key, path[:-1], model)}"
    if kind == "union_tag_invalid":
        field = str(ctx.get("discriminator", "kind")).strip("'")
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        return (*path, field), f"unknown {field} {ctx.get('tag')!r}; expected one of: {expected}"
    if kind == "union_tag_not_found":
        field = str(ctx.get("discriminator", "kind")).strip("'")
        return (*path, field), f"required, but missing (it says which kind of {_noun(path)} this is)"
    if kind == RETIRED_KEY:  # raised by the model holding the key: point at the key itself
        return (*path, str(ctx.get("key"))), details["msg"]
    if kind in ("value_error", "assertion_error"):
        message = details["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return path, message
    if kind in ("model_type", "model_attributes_type", "dict_type", "dataclass_type"):
        return path, f"expected a mapping (key: value), got {_describe(value)}"
    if kind == "list_type":
        return path, f"expected a list, got {_describe(value)}"
    if kind in _TYPE_EXPECTATIONS:
        return path, f"expected {_TYPE_EXPECTATIONS[kind]}"
    message = details["msg"]
    if message.startswith("Input should be"):
        message = "expected" + message.removeprefix("Input should be").removeprefix(" a valid")
        message = message.replace("expected greater", "must be greater").replace(
            "expected less", "must be less"
        )
    if not isinstance(value, dict | list) and details["input"] is not None:
        message += f", got {_describe(value)}"
    return path, message


def _noun(path: PathKey) -> str:
    return "target" if path[:1] == ("targets",) else "entry"


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    shown = repr(value)
    if len(shown) > _MAX_SHOWN:
        shown = shown[: _MAX_SHOWN - 4] + "...'"
    return shown if isinstance(value, str) else f"{shown} ({type(value).__name__})"


def _line_for(path: PathKey, doc: Document) -> int | None:
    for end in range(len(path), 0, -1):
        line = doc.lines.get(path[:end])
        if line is not None:
            return line
    return None


def _drop_repeated_default_problems(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    # A bad value in `defaults` is reported once there, not again in every target it was merged into.
    reported = {(p.path, p.message) for p in problems if p.path.startswith("defaults.")}
    kept = []
    for problem in problems:
        if problem.message.endswith("(the value comes from defaults)") and problem.path.startswith(
            "targets["
        ):
            rest = problem.path.split("].", 1)[-1]
            original = problem.message.removesuffix(" (the value comes from defaults)")
            if (f"defaults.{rest}", original) in reported:
                continue
        kept.append(problem)
    return kept


def _suggestion(key: str, parent: PathKey, model: type[BaseModel]) -> str:
    """ "; did you mean 'timeout'?" when the parent's model has a close key."""
    keys = _keys_at(model, parent)
    close = difflib.get_close_matches(key, sorted(keys), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _keys_at(model: type[BaseModel], path: PathKey) -> set[str]:
    """The keys the model accepts at `path` (by walking annotations; union members combined)."""
    current: list[Any] = [model]
    for step in path:
        following: list[Any] = []
        for annotation in current:
            for candidate in _expand(annotation):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel) and isinstance(step, str):
                    for name, info in candidate.model_fields.items():
                        if step in (name, info.alias):
                            following.append(info.annotation)
                elif typing.get_origin(candidate) is list and isinstance(step, int):
                    following.extend(typing.get_args(candidate)[:1])
                elif typing.get_origin(candidate) is dict and isinstance(step, str):
                    following.extend(typing.get_args(candidate)[1:2])
        current = following
    keys: set[str] = set()
    for annotation in current:
        for candidate in _expand(annotation):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                keys.update(info.alias or name for name, info in candidate.model_fields.items())
    return keys


def _expand(annotation: Any) -> list[Any]:
    """Unwrap Annotated / Optional / unions into their members."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _expand(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return [member for arg in args for member in _expand(arg)]
    return [annotation]
