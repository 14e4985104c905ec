"""`${...}` substitution in config values: OTel's rules, secret files, and no structure injection."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelprobe.config import ConfigError, load_text
from otelprobe.config.envsubst import substitute
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.settings.secrets import REDACTED, clear_secrets, redact

ENV = {"STRING_VALUE": "value", "BOOL_VALUE": "true", "INT_VALUE": "1", "EMPTY": ""}


@pytest.fixture(autouse=True)
def _forget_secrets() -> None:
    clear_secrets()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The cases of the OTel configuration data-model spec.
        ("${STRING_VALUE}", "value"),
        ("${env:STRING_VALUE}", "value"),
        ("${BOOL_VALUE}", "true"),
        ("${INT_VALUE}", "1"),
        ("${UNDEFINED_KEY:-fallback}", "fallback"),
        ("${UNDEFINED_KEY:-}", ""),
        ("${EMPTY:-fallback}", ""),  # set but empty stays empty, as in OTel (unlike the shell)
        ("${STRING_VALUE:-fallback}", "value"),
        ("foo ${STRING_VALUE} ${INT_VALUE}", "foo value 1"),
        ("$${STRING_VALUE}", "${STRING_VALUE}"),
        ("$$${STRING_VALUE}", "$value"),
        ("$$$${STRING_VALUE}", "$${STRING_VALUE}"),
        ("$${STRING_VALUE:-fallback}", "${STRING_VALUE:-fallback}"),
        ("price: $5", "price: $5"),
        ("${unclosed", "${unclosed"),
        ("${UNDEFINED_KEY:-${STRING_VALUE}}", "${STRING_VALUE}"),  # the default ends at the first }
    ],
)
def test_otel_substitution_rules(text: str, expected: str) -> None:
    result = substitute(text, environ=ENV)
    assert result.problems == []
    assert result.value == expected


def test_values_are_not_substituted_again() -> None:
    result = substitute("${A}", environ={"A": "${B}", "B": "secret-b"})
    assert result.value == "${B}"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("${UNDEFINED_KEY}", "environment variable UNDEFINED_KEY is not set"),
        ("${env:UNDEFINED_KEY}", "write ${UNDEFINED_KEY:-default}"),
        ("${1INVALID}", "invalid reference ${1INVALID}"),
        ("${STRING VALUE}", "invalid reference"),
        ("${}", "invalid reference"),
        ("${file:}", "expected ${file:PATH}"),
    ],
)
def test_problems_name_the_reference(text: str, fragment: str) -> None:
    result = substitute(text, environ=ENV)
    assert len(result.problems) == 1
    assert fragment in result.problems[0]
    assert result.value == text  # left in place


def test_substituted_values_are_registered_as_secrets() -> None:
    substitute("Bearer ${TOKEN}", environ={"TOKEN": "tok-12345"})
    assert redact("Authorization: Bearer tok-12345") == f"Authorization: Bearer {REDACTED}"
    # Defaults are written in the file, so they are no secret.
    substitute("${UNSET:-visible-default}", environ={})
    assert redact("visible-default") == "visible-default"


def test_secret_file_strips_one_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cr3t-token\n")
    (tmp_path / "keep").write_text("line1\nline2\n\n")
    result = substitute("${file:token}", base_dir=tmp_path)
    assert result.value == "s3cr3t-token"
    assert redact("x s3cr3t-token y") == f"x {REDACTED} y"
    assert substitute(f"${{file:{tmp_path / 'keep'}}}").value == "line1\nline2\n"


def test_missing_secret_file_is_a_problem(tmp_path: Path) -> None:
    result = substitute("${file:nope.txt}", base_dir=tmp_path)
    assert result.problems == [f"cannot read secret file {tmp_path / 'nope.txt'}: No such file or directory"]


def test_plain_references_are_typed_quoted_ones_stay_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTELPROBE_TEST_CONC", "12")
    monkeypatch.setenv("OTELPROBE_TEST_ON", "true")
    config = load_text(
        "concurrency: ${OTELPROBE_TEST_CONC}\n"
        "targets:\n"
        "  - name: api\n"
        "    kind: http\n"
        "    url: http://127.0.0.1:8080/\n"
        "    traceroute_on_failure: ${OTELPROBE_TEST_ON}\n"
        "    labels: {conc: '${OTELPROBE_TEST_CONC}'}\n",
        "inline.yaml",
    )
    assert config.concurrency == 12
    assert config.targets[0].traceroute_on_failure is True
    assert config.targets[0].labels == {"conc": "12"}


def test_unquoted_number_for_a_string_gets_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTELPROBE_TEST_REGION", "42")
    with pytest.raises(ConfigError) as info:
        load_text("vantage: ${OTELPROBE_TEST_REGION}\n", "inline.yaml")
    assert str(info.value) == (
        'inline.yaml:1: vantage: expected a string, got 42 (int); quote the reference ("${...}") '
        "to keep the value a string"
    )


@pytest.mark.parametrize(
    "evil",
    [
        "http://127.0.0.1/\n    kind: dns",
        "http://127.0.0.1/\n  - name: injected\n    kind: http\n    url: http://127.0.0.1/",
        "http://127.0.0.1/ # comment",
        "http://127.0.0.1/', timeout: '1s",
        "{url: http://127.0.0.1/}",
        "&anchor *alias !!python/object:os.system",
    ],
)
def test_substituted_values_cannot_inject_structure(monkeypatch: pytest.MonkeyPatch, evil: str) -> None:
    monkeypatch.setenv("OTELPROBE_TEST_EVIL", evil)
    text = "targets:\n  - name: api\n    kind: http\n    url: ${OTELPROBE_TEST_EVIL}\n"
    try:
        config = load_text(text, "inline.yaml")
    except ConfigError as exc:
        # Rejected as one bad URL value, never parsed as YAML; and the value is never echoed.
        assert [p.path for p in exc.problems] == ["targets[0].url"]
        assert evil not in str(exc)
        return
    assert len(config.targets) == 1
    assert isinstance(config.targets[0], HTTPProbeConfig)
    assert config.targets[0].url == evil


def test_mapping_keys_and_comments_are_not_substituted() -> None:
    config = load_text(
        "# ${NOT_A_PROBLEM}\n"
        "targets:\n"
        "  - name: api\n"
        "    kind: http\n"
        "    url: http://127.0.0.1:8080/\n"
        "    headers: {'${KEY}': value}\n",
        "inline.yaml",
    )
    target = config.targets[0]
    assert isinstance(target, HTTPProbeConfig)
    assert target.headers == {"${KEY}": "value"}


def test_dollar_escape_in_a_value() -> None:
    config = load_text(
        "targets:\n"
        "  - name: api\n"
        "    kind: http\n"
        "    method: POST\n"
        "    url: http://127.0.0.1:8080/\n"
        "    body: 'cost: $$5 and $${HOME}'\n",
        "inline.yaml",
    )
    target = config.targets[0]
    assert isinstance(target, HTTPProbeConfig)
    assert target.body == "cost: $5 and ${HOME}"


def test_explicit_str_tag_keeps_a_plain_reference_a_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTELPROBE_TEST_REGION", "42")
    assert load_text("vantage: !!str ${OTELPROBE_TEST_REGION}\n", "inline.yaml").vantage == "42"
    assert load_text("vantage: '${OTELPROBE_TEST_REGION}'\n", "inline.yaml").vantage == "42"
