"""Expectation checks shared by probe kinds: status sets, header/body regexes, JSON paths, bounds.

Probes compile their expectations once (per probe instance) and evaluate them after an attempt's
I/O; every check runs, and `raise_failures` turns the list into one ProbeError whose detail is
the first failure and whose message lists them all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from otelprobe.errors import AssertionFailed, HTTPStatusError, ProbeError

_MISSING: Final = object()
_PATH_STEP: Final = re.compile(r"""\.([A-Za-z_][\w-]*)|\[(-?\d+)\]|\[\s*(?:'([^']*)'|"([^"]*)")\s*\]""")


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed expectation: a stable detail (`probe.error.detail`) and a human message."""

    detail: str
    message: str
    error_class: type[ProbeError] = AssertionFailed


def raise_failures(failures: Sequence[Failure]) -> None:
    """Raise the first failure's class and detail, with every failure in the message; no-op if none."""
    if not failures:
        return
    first = failures[0]
    raise first.error_class(first.detail, "; ".join(f.message for f in failures))


class StatusSet:
    """Expected status codes: single codes and inclusive ranges such as "200-299"."""

    __slots__ = ("_ranges", "_text")

    def __init__(self, items: Iterable[int | str]) -> None:
        ranges: list[tuple[int, int]] = []
        for item in items:
            low, _, high = str(item).partition("-")
            ranges.append((int(low), int(high or low)))
        self._ranges = tuple(ranges)
        self._text = ", ".join(str(item) for item in items)

    def __contains__(self, code: object) -> bool:
        return isinstance(code, int) and any(low <= code <= high for low, high in self._ranges)

    def check(self, code: int) -> Failure | None:
        if code in self:
            return None
        return Failure("unexpected_status", f"status {code} not in [{self._text}]", HTTPStatusError)

    def __str__(self) -> str:
        return self._text


class HeaderChecks:
    """Header name -> regex; a header passes when any of its values matches."""

    __slots__ = ("_checks",)

    def __init__(self, patterns: Mapping[str, str]) -> None:
        self._checks = tuple((name.lower(), re.compile(p)) for name, p in patterns.items())

    def check(self, headers: Sequence[tuple[bytes, bytes]]) -> list[Failure]:
        if not self._checks:
            return []
        failures: list[Failure] = []
        for name, pattern in self._checks:
            values = [v.decode("latin-1") for k, v in headers if k.decode("latin-1").lower() == name]
            if not values:
                failures.append(Failure("header_missing", f"header {name} missing"))
            elif not any(pattern.search(v) for v in values):
                # Header values may carry secrets: name the header and the pattern, not the value.
                failures.append(
                    Failure("header_regex_not_matched", f"header {name} does not match {pattern.pattern!r}")
                )
        return failures


@dataclass(frozen=True, slots=True)
class JSONPathExpectation:
    """`path` must exist; and equal `equals` and/or match `regex` when given."""

    path: str
    equals: Any = None
    regex: str | None = None


class BodyChecks:
    """Regexes the body must (not) match and JSON path values, compiled once."""

    __slots__ = ("_json", "_must", "_must_not")

    def __init__(
        self,
        must_match: Sequence[str] = (),
        must_not_match: Sequence[str] = (),
        json_paths: Sequence[JSONPathExpectation] = (),
    ) -> None:
        self._must = tuple(re.compile(p) for p in must_match)
        self._must_not = tuple(re.compile(p) for p in must_not_match)
        self._json = tuple(
            (parse_json_path(c.path), c, re.compile(c.regex) if c.regex is not None else None)
            for c in json_paths
        )

    @property
    def needs_body(self) -> bool:
        """Whether the body must be kept in memory at all (otherwise it is only counted)."""
        return bool(self._must or self._must_not or self._json)

    def check(self, body: bytes) -> list[Failure]:
        if not self.needs_body:
            return []
        text = body.decode("utf-8", errors="replace")
        failures = [
            Failure("body_regex_not_matched", f"body does not match {p.pattern!r}")
            for p in self._must
            if not p.search(text)
        ]
        failures += [
            Failure("body_not_regex_matched", f"body matches forbidden {p.pattern!r}")
            for p in self._must_not
            if p.search(text)
        ]
        if self._json:
            failures += self._check_json(text)
        return failures

    def _check_json(self, text: str) -> list[Failure]:
        try:
            document = json.loads(text)
        except ValueError as exc:
            return [Failure("json_invalid", f"body is not JSON: {exc}")]
        failures: list[Failure] = []
        for steps, expectation, pattern in self._json:
            value = evaluate_json_path(document, steps)
            if value is _MISSING:
                failures.append(Failure("json_path_missing", f"{expectation.path} not found"))
                continue
            if expectation.equals is not None and not _json_equal(value, expectation.equals):
                failures.append(
                    Failure(
                        "json_path_mismatch",
                        f"{expectation.path} is {_short(value)}, expected {_short(expectation.equals)}",
                    )
                )
            if pattern is not None and not pattern.search(_as_text(value)):
                failures.append(
                    Failure(
                        "json_path_mismatch",
                        f"{expectation.path} is {_short(value)}, does not match {pattern.pattern!r}",
                    )
                )
        return failures


def check_latency(duration_s: float, max_s: float | None) -> Failure | None:
    if max_s is None or duration_s <= max_s:
        return None
    return Failure("latency_exceeded", f"took {duration_s * 1e3:.1f} ms, bound {max_s * 1e3:.1f} ms")


def check_cert_remaining(remaining_s: float | None, min_s: float | None) -> Failure | None:
    """The earliest expiry in the chain must be at least `min_s` away."""
    if min_s is None:
        return None
    if remaining_s is None:
        return Failure("certificate_missing", "no TLS certificate to check the expiry of")
    if remaining_s >= min_s:
        return None
    return Failure(
        "certificate_expires_soon",
        f"certificate chain expires in {remaining_s / 86400:.1f} days, bound {min_s / 86400:.1f} days",
    )


# --- a small JSON path evaluator: $, .name, [index], ['name'] ----------------------------------

PathStep = str | int


def parse_json_path(path: str) -> tuple[PathStep, ...]:
    """`$.items[0]['a b'].id` -> ("items", 0, "a b", "id"); ValueError on anything else."""
    if not path.startswith("$"):
        raise ValueError(f"JSON path {path!r} must start with $")
    steps: list[PathStep] = []
    position = 1
    while position < len(path):
        match = _PATH_STEP.match(path, position)
        if match is None:
            raise ValueError(f"JSON path {path!r}: cannot parse at {path[position:]!r}")
        name, index, single, double = match.groups()
        if index is not None:
            steps.append(int(index))
        else:
            steps.append(name if name is not None else single if single is not None else double)
        position = match.end()
    return tuple(steps)


def evaluate_json_path(document: object, steps: Sequence[PathStep]) -> object:
    """The value at `steps`, or the module's missing sentinel (see `json_path_value`)."""
    value = document
    for step in steps:
        if isinstance(step, int) and isinstance(value, list):
            if not -len(value) <= step < len(value):
                return _MISSING
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict):
            if step not in value:
                return _MISSING
            value = value[step]
        else:
            return _MISSING
    return value


def json_path_value(document: object, path: str) -> tuple[bool, object]:
    """(found, value) of `path` in a parsed JSON document."""
    value = evaluate_json_path(document, parse_json_path(path))
    return (value is not _MISSING, None if value is _MISSING else value)


def _json_equal(value: object, expected: object) -> bool:
    # JSON's true is not 1: compare bools only with bools.
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    return value == expected


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _short(value: object, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
