"""Expectation checks: status sets, regexes, JSON paths, bounds, and how failures are reported."""

from __future__ import annotations

import pytest

from otelprobe.errors import AssertionFailed, HTTPStatusError
from otelprobe.probes.assertions import (
    BodyChecks,
    Failure,
    HeaderChecks,
    JSONPathExpectation,
    StatusSet,
    check_cert_remaining,
    check_latency,
    json_path_value,
    parse_json_path,
    raise_failures,
)


def test_status_set_codes_and_ranges() -> None:
    statuses = StatusSet(["200-299", 301, "404"])
    assert 200 in statuses and 299 in statuses and 301 in statuses and 404 in statuses
    assert 300 not in statuses and 500 not in statuses
    failure = statuses.check(503)
    assert failure is not None and failure.error_class is HTTPStatusError
    assert failure.message == "status 503 not in [200-299, 301, 404]"
    assert statuses.check(204) is None


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", ()),
        ("$.a.b", ("a", "b")),
        ("$.items[0].id", ("items", 0, "id")),
        ("$['a b'][\"c\"][-1]", ("a b", "c", -1)),
    ],
)
def test_parse_json_path(path: str, steps: tuple[object, ...]) -> None:
    assert parse_json_path(path) == steps


@pytest.mark.parametrize("path", ["a.b", "$.", "$[x]", "$..a", "$.a[0"])
def test_parse_json_path_rejects(path: str) -> None:
    with pytest.raises(ValueError, match="JSON path"):
        parse_json_path(path)


def test_json_path_value() -> None:
    document = {"a": {"b": [10, 20, {"c": None}]}}
    assert json_path_value(document, "$.a.b[1]") == (True, 20)
    assert json_path_value(document, "$.a.b[-1].c") == (True, None)
    assert json_path_value(document, "$.a.b[3]") == (False, None)
    assert json_path_value(document, "$.a.x") == (False, None)
    assert json_path_value(document, "$.a.b.c") == (False, None)


def test_body_checks_report_every_failure() -> None:
    checks = BodyChecks(
        must_match=["ready", "version"],
        must_not_match=["error"],
        json_paths=[
            JSONPathExpectation("$.state", equals="ready"),
            JSONPathExpectation("$.count", equals=1),
            JSONPathExpectation("$.missing"),
            JSONPathExpectation("$.version", regex=r"^2\."),
        ],
    )
    body = b'{"state": "ready", "count": true, "version": "1.4", "note": "error"}'
    failures = checks.check(body)
    assert [f.detail for f in failures] == [
        "body_not_regex_matched",
        "json_path_mismatch",  # true is not 1
        "json_path_missing",
        "json_path_mismatch",
    ]
    assert checks.needs_body
    assert not BodyChecks().needs_body
    assert BodyChecks().check(b"anything") == []


def test_body_checks_invalid_json() -> None:
    failures = BodyChecks(json_paths=[JSONPathExpectation("$.a", equals=1)]).check(b"<html>")
    assert [f.detail for f in failures] == ["json_invalid"]


def test_header_checks_never_echo_values() -> None:
    checks = HeaderChecks({"X-Token": "^ok-", "Server": "nginx", "Content-Type": "json"})
    failures = checks.check([(b"x-token", b"secret-value"), (b"Content-Type", b"application/json")])
    assert [f.detail for f in failures] == ["header_regex_not_matched", "header_missing"]
    assert all("secret-value" not in f.message for f in failures)


def test_bounds() -> None:
    assert check_latency(0.1, None) is None
    assert check_latency(0.1, 0.2) is None
    latency = check_latency(0.3, 0.2)
    assert latency is not None and latency.detail == "latency_exceeded"
    assert check_cert_remaining(None, None) is None
    assert check_cert_remaining(40 * 86400.0, 30 * 86400.0) is None
    soon = check_cert_remaining(3 * 86400.0, 30 * 86400.0)
    assert soon is not None and soon.detail == "certificate_expires_soon"
    missing = check_cert_remaining(None, 86400.0)
    assert missing is not None and missing.detail == "certificate_missing"


def test_raise_failures_first_is_detail_all_in_message() -> None:
    raise_failures([])
    with pytest.raises(AssertionFailed) as caught:
        raise_failures([Failure("body_regex_not_matched", "body A"), Failure("latency_exceeded", "slow B")])
    assert caught.value.detail == "body_regex_not_matched"
    assert str(caught.value) == "body A; slow B"
