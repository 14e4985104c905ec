"""Config text -> plain data plus the line of every node, with `${...}` substituted into scalars.

The first step of config loading (config/__init__.py): YAML (or JSON) is composed into nodes that
keep their positions, references are substituted into value scalars (see envsubst.py), and the
data handed to pydantic comes with a map from each YAML path to its line, so every validation
problem can say where it is. YAML is read with the YAML 1.2 core schema, as OTel's config files
are: `on`, `no` and `1:30` stay strings.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from otelprobe.errors import ConfigProblem

PathKey = tuple[str | int, ...]
# Called with (value, path, line) for each value scalar; returns the substituted text, or None
# when nothing changed.
Substituter = Callable[[str, PathKey, int], str | None]

_STR: Final = "tag:yaml.org,2002:str"
_NULL: Final = "tag:yaml.org,2002:null"
_BOOL: Final = "tag:yaml.org,2002:bool"
_INT: Final = "tag:yaml.org,2002:int"
_FLOAT: Final = "tag:yaml.org,2002:float"
_MERGE: Final = "tag:yaml.org,2002:merge"
_MAX_DEPTH: Final = 64  # deeper means a recursive alias; no real config nests this far
_TOO_DEEP: Final = f"nested deeper than {_MAX_DEPTH} levels"
_MIN_VALUE_BUDGET: Final = 100_000
_VALUES_PER_CHAR: Final = 4
"""Aliases let a few hundred bytes expand into billions of values ("billion laughs"): the values
built may be at most _VALUES_PER_CHAR per character of the file (a plain file has fewer than one
per character), or _MIN_VALUE_BUDGET; beyond that the document is refused."""


class _Core12Resolver(yaml.resolver.BaseResolver):
    """The YAML 1.2 core schema's implicit types instead of YAML 1.1's."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012  (PyYAML's class-level registry)


class _MarkingComposer(yaml.composer.Composer):
    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # PyYAML composes recursively: a file nested a few hundred levels deep would end in a
        # RecursionError (and libyaml stops flow nesting only at 1000). No config nests this far.
        if self._depth >= _MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[attr-defined]
            raise yaml.composer.ComposerError(None, None, _TOO_DEEP, mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_scalar_node(self, anchor: Any) -> ScalarNode:
        # Remember whether the tag was written (`!!str ${X}`): only implicit tags are re-resolved
        # after substitution.
        explicit = self.peek_event().tag not in (None, "!")  # type: ignore[attr-defined]
        node = super().compose_scalar_node(anchor)
        node.explicit_tag = explicit  # type: ignore[attr-defined]
        return node


class _PureLoader(
    yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, _MarkingComposer, _Core12Resolver
):
    """Pure-Python parsing: used for syntax errors, whose messages are the clearer ones."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        _MarkingComposer.__init__(self)
        _Core12Resolver.__init__(self)


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _FastLoader(_MarkingComposer, CParser, _Core12Resolver):
        """libyaml's parser (about 5x faster on 10,000 targets) under the same composer."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _MarkingComposer.__init__(self)
            _Core12Resolver.__init__(self)

    _Loader: type[Any] = _FastLoader
else:  # pragma: no cover (PyYAML wheels bundle libyaml)
    _Loader = _PureLoader


_IMPLICIT: Final[list[tuple[str, re.Pattern[str], list[str]]]] = [
    (_NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]),
    (_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")),
    (_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")),
    (
        _FLOAT,
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+.0123456789"),
    ),
    (_MERGE, re.compile(r"^(?:<<)$"), ["<"]),
]
for _tag, _pattern, _first in _IMPLICIT:
    _Core12Resolver.add_implicit_resolver(_tag, _pattern, _first)


def _implicit_tag(text: str) -> str:
    """The tag a plain scalar with this text gets under the YAML 1.2 core schema."""
    for tag, pattern, _ in _IMPLICIT:
        if tag != _MERGE and pattern.fullmatch(text):
            return tag
    return _STR


@dataclass(slots=True)
class Document:
    """Plain data (dicts, lists, scalars) and the 1-based line of each path in it."""

    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)


def format_path(path: PathKey) -> str:
    """("targets", 3, "expect", "status", 0) -> "targets[3].expect.status[0]"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def parse(text: str, filename: str, substituter: Substituter, *, json_syntax: bool = False) -> Document:
    """Parse config text; syntax errors come back as problems with line and column."""
    if json_syntax:
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            problem = ConfigProblem(filename, exc.lineno, "", f"JSON syntax error: {exc.msg}", exc.colno)
            return Document(data=None, problems=[problem])
        except (ValueError, RecursionError):
            # Valid syntax json will not read (an integer of 5,000 digits, deep nesting): the YAML
            # reader below reports it with its line.
            pass
        # JSON allows tabs as whitespace where YAML does not; outside strings (JSON strings cannot
        # hold a raw tab) they are only whitespace, so replacing them keeps every position.
        text = text.replace("\t", " ")
    try:
        root = _compose(text, _Loader)
    except yaml.YAMLError as fast_exc:
        if isinstance(fast_exc, yaml.composer.ComposerError) and fast_exc.problem == _TOO_DEEP:
            return Document(data=None, problems=[_syntax_problem(fast_exc, filename, json_syntax)])
        # Parse again in Python for the message: it names the context, and reads the same with
        # or without libyaml.
        try:
            root = _compose(text, _PureLoader)
        except yaml.MarkedYAMLError as exc:
            return Document(data=None, problems=[_syntax_problem(exc, filename, json_syntax)])
        except yaml.reader.ReaderError as exc:  # a control character, which YAML forbids anywhere
            line = text.count("\n", 0, exc.position) + 1
            message = f"YAML syntax error: control character U+{exc.character:04X} is not allowed"
            return Document(data=None, problems=[ConfigProblem(filename, line, "", message)])
        except yaml.YAMLError as exc:
            message = f"YAML error: {' '.join(str(exc).split())}"
            return Document(data=None, problems=[ConfigProblem(filename, None, "", message)])
    doc = Document(data={})
    if root is not None:
        budget = max(_MIN_VALUE_BUDGET, _VALUES_PER_CHAR * len(text))
        try:
            doc.data = _Builder(filename, substituter, doc, budget).build(root, (), 0)
        except _TooManyValues as exc:
            message = f"the aliases expand to more than {budget:,} values (an alias bomb?)"
            return Document(data=None, problems=[ConfigProblem(filename, exc.line, "", message)])
    return doc


class _TooManyValues(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def _compose(text: str, loader_class: type[Any]) -> Node | None:
    loader = loader_class(text)
    try:
        node: Node | None = loader.get_single_node()
        return node
    finally:
        loader.dispose()


def _syntax_problem(exc: yaml.MarkedYAMLError, filename: str, json_syntax: bool) -> ConfigProblem:
    mark = exc.problem_mark or exc.context_mark
    message = f"{'JSON' if json_syntax else 'YAML'} syntax error: {exc.problem or exc.context}"
    if exc.context and exc.problem and exc.context_mark is not None and exc.context_mark != mark:
        message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    if exc.problem and "'\\t'" in exc.problem:
        message += "; indent with spaces, YAML does not allow tabs"
    if mark is None:
        return ConfigProblem(filename, None, "", message)
    return ConfigProblem(filename, mark.line + 1, "", message, mark.column + 1)


@dataclass(slots=True)
class _Builder:
    filename: str
    substituter: Substituter
    doc: Document
    budget: int

    def problem(self, node: Node, path: PathKey, message: str) -> None:
        line = node.start_mark.line + 1
        self.doc.problems.append(ConfigProblem(self.filename, line, format_path(path), message))

    def build(self, node: Node, path: PathKey, depth: int) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _TooManyValues(node.start_mark.line + 1)
        if depth > _MAX_DEPTH:
            self.problem(node, path, "nested too deeply (a recursive alias?)")
            return None
        if isinstance(node, MappingNode):
            return self.mapping(node, path, depth)
        if isinstance(node, SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.doc.lines.setdefault((*path, index), item.start_mark.line + 1)
                items.append(self.build(item, (*path, index), depth + 1))
            return items
        assert isinstance(node, ScalarNode)
        return self.scalar(node, path)

    def mapping(self, node: MappingNode, path: PathKey, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                # `<<: *base`: keys written here win over merged ones, whatever their order.
                for source in value_node.value if isinstance(value_node, SequenceNode) else [value_node]:
                    value = self.build(source, path, depth + 1)
                    if isinstance(value, dict):
                        merged = {**value, **merged}  # earlier sources win (YAML merge spec)
                    else:
                        self.problem(source, path, "a merge key (<<) needs a mapping or a list of mappings")
                continue
            if not isinstance(key_node, ScalarNode):
                self.problem(key_node, path, "a mapping key must be a plain value, not a list or mapping")
                continue
            key = self.constant(key_node, path)
            key_line = key_node.start_mark.line + 1
            if key in seen:
                self.problem(
                    key_node, (*path, str(key)), f"duplicate key {key!r} (first at line {seen[key]})"
                )
                continue
            seen[key] = key_line
            child: PathKey = (*path, key if isinstance(key, str) else str(key))
            self.doc.lines[child] = key_line
            result[key] = self.build(value_node, child, depth + 1)
        return {**merged, **result}

    def scalar(self, node: ScalarNode, path: PathKey) -> Any:
        text: str = node.value
        tag = node.tag
        line = node.start_mark.line + 1
        if "$" in text:
            substituted = self.substituter(text, path, line)
            if substituted is not None:
                text = substituted
                if not node.style and not getattr(node, "explicit_tag", False):
                    # A plain scalar is typed after substitution (`port: ${PORT}` is an int), but
                    # it stays one scalar whatever the value holds: structure cannot be injected.
                    tag = _implicit_tag(text)
        return self.typed(node, path, tag, text)

    def constant(self, node: ScalarNode, path: PathKey) -> Any:
        # Keys are never substituted (OTel: "mapping keys are not candidates for substitution").
        return self.typed(node, path, node.tag, node.value)

    def typed(self, node: ScalarNode, path: PathKey, tag: str, text: str) -> Any:
        try:
            if tag == _STR:
                return text
            if tag == _NULL:
                return None
            if tag == _BOOL:
                return text.lower() == "true"
            if tag == _INT:
                return _int(text)
            if tag == _FLOAT:
                return _float(text)
        except ValueError:
            shown = repr(text) if len(text) <= 60 else f"{text[:40]!r}... ({len(text):,} characters)"
            self.problem(node, path, f"{shown} is not a valid {tag.rsplit(':', 1)[-1]}")
            return text
        self.problem(node, path, f"unsupported YAML tag {tag} (only plain values, lists and mappings)")
        return text


def _int(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits.startswith("0o"):
        return sign * int(digits[2:], 8)
    if digits.startswith("0x"):
        return sign * int(digits[2:], 16)
    return sign * int(digits, 10)


def _float(text: str) -> float:
    lowered = text.lower()
    if lowered.lstrip("+-") == ".inf":
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    return float(text)
