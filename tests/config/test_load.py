"""Loading config files: valid files load, and each invalid file gives exactly its expected problems.

tests/config/invalid/ holds one file per rule with a `.expected` file next to it (blackbox_exporter
`TestLoadBadConfigs` style): the exact lines `otelprobe validate` prints, with the file's name
relative to that directory. A line ending in "..." matches any line that starts with the rest
(used where the list of kinds grows as kinds are added).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otelprobe.config import Config, ConfigError, load, load_text, validate
from otelprobe.config.models import Defaults, merge_defaults
from otelprobe.probes import config_types
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.settings.secrets import REDACTED, clear_secrets, redact
from otelprobe.targets import Shard, select

HERE = Path(__file__).parent
VALID = sorted((HERE / "valid").glob("*.*"))
INVALID = sorted(p for p in (HERE / "invalid").iterdir() if p.suffix in (".yaml", ".json"))


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_files_load(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE / "valid")  # TLS files are named relative to the working directory
    assert validate(path) == []
    assert isinstance(load(path), Config)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_files_report_exactly_their_problems(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(path.parent)
    expected = path.with_suffix(".expected").read_text().splitlines()
    actual = [str(problem) for problem in validate(path.name)]
    assert len(actual) == len(expected), "\n".join(actual)
    for want, got in zip(expected, actual, strict=True):
        if want.endswith("..."):
            assert got.startswith(want.removesuffix("...")), got
        else:
            assert got == want
    with pytest.raises(ConfigError) as info:
        load(path.name)
    assert [str(p) for p in info.value.problems] == actual


def test_every_problem_is_reported_at_once() -> None:
    problems = validate(HERE / "invalid" / "bad_types.yaml")
    assert [p.path for p in problems] == [
        "concurrency",
        "targets[0].ip",
        "targets[0].retries",
        "targets[0].labels",
        "targets[0].expect.status[1]",
    ]
    assert [p.line for p in problems] == [1, 6, 7, 8, 10]


def test_full_example() -> None:
    config = load(HERE / "valid" / "full.yaml")
    assert config.vantage == "eu-west-1"
    assert config.service_name == config.telemetry.service_name == "otelprobe-eu"
    assert config.concurrency == 64
    assert str(config.shard) == "0/1"
    api, login = config.targets
    assert isinstance(api, HTTPProbeConfig) and isinstance(login, HTTPProbeConfig)
    # Defaults fill what a target leaves out; mappings merge key by key, the target winning.
    assert (api.interval_s, api.timeout_s, api.jitter_s) == (30.0, 5.0, 2.0)
    assert api.labels == {"team": "sre", "env": "prod", "tier": "gold"}
    assert api.tls.ca_file == "certs/ca.pem"
    assert api.retries.count == 2 and api.retries.backoff_s == 0.25
    assert api.ip == "prefer_ip6" and api.failure_threshold == 2
    assert (login.interval_s, login.timeout_s) == (60.0, 10.0)
    assert login.tls.server_name == "login.example" and login.tls.ca_file == "certs/ca.pem"
    assert login.body == '{"probe": true, "price": "$5"}'
    assert login.method == "POST"
    assert api.expect.max_duration_s == 0.8


def test_defaults_and_anchors() -> None:
    config = load(HERE / "valid" / "anchors.yaml")
    assert [(t.name, t.interval_s, t.timeout_s) for t in config.targets] == [
        ("a", 10.0, 2.0),
        ("b", 10.0, 3.0),
    ]


def test_json_files_load_with_lines_for_problems(tmp_path: Path) -> None:
    config = load(HERE / "valid" / "targets.json")
    assert config.vantage == "us-east-1"
    assert config.targets[0].interval_s == 20.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"targets": [{"name": "api", "kind": "http", "url": "x"}]}, indent=2))
    (problem,) = validate(bad)
    assert (problem.line, problem.path) == (6, "targets[0].url")


def test_vantage_defaults_to_host_name() -> None:
    import socket

    assert load_text("targets: []\n").vantage == socket.gethostname()


def test_empty_file_is_an_empty_config() -> None:
    config = load_text("", "empty.yaml")
    assert config.targets == [] and config.concurrency == 256 and config.shard is None


def test_yaml_1_2_core_schema() -> None:
    # YAML 1.1 would read these as booleans and a base-60 integer.
    config = load_text(
        "targets:\n"
        "  - name: api\n"
        "    kind: http\n"
        "    url: http://127.0.0.1:8080/\n"
        "    labels: {enabled: on, country: no, time: 1:30}\n",
    )
    assert config.targets[0].labels == {"enabled": "on", "country": "no", "time": "1:30"}


def test_shard_selects_this_replicas_targets() -> None:
    targets = "".join(
        f"  - {{name: t{i}, kind: http, url: 'http://127.0.0.1:{8000 + i}/'}}\n" for i in range(30)
    )
    configs = [load_text(f"shard: {i}/3\ntargets:\n{targets}") for i in range(3)]
    assert [c.shard for c in configs] == [Shard(i, 3) for i in range(3)]
    shards = [select(c.targets, i, 3) for i, c in enumerate(configs)]  # as the runtime selects
    names = [t.name for shard in shards for t in shard]
    assert sorted(names) == sorted(f"t{i}" for i in range(30))
    assert all(shards)


def test_service_name_conflict() -> None:
    with pytest.raises(ConfigError, match="disagree"):
        load_text("service_name: a\ntelemetry: {service_name: b}\n")
    assert load_text("telemetry: {service_name: b}\n").service_name == "b"


def test_missing_file() -> None:
    (problem,) = validate("/nonexistent/otelprobe.yaml")
    assert str(problem) == "/nonexistent/otelprobe.yaml: cannot read config file: No such file or directory"


def test_secret_from_file_relative_to_config(tmp_path: Path) -> None:
    clear_secrets()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text("tok-from-file-123\n")
    path = tmp_path / "probe.yaml"
    path.write_text(
        "targets:\n"
        "  - name: api\n"
        "    kind: http\n"
        "    url: http://127.0.0.1:8080/\n"
        "    headers: {Authorization: 'Bearer ${file:secrets/token}'}\n"
    )
    target = load(path).targets[0]
    assert isinstance(target, HTTPProbeConfig)
    assert target.headers["Authorization"] == "Bearer tok-from-file-123"
    assert redact(target.headers["Authorization"]) == f"Bearer {REDACTED}"


def test_secrets_never_appear_in_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTELPROBE_TEST_SECRET_URL", "ftp://user:hunter2-secret@127.0.0.1/")
    with pytest.raises(ConfigError) as info:
        load_text("targets:\n  - {name: api, kind: http, url: '${OTELPROBE_TEST_SECRET_URL}'}\n")
    assert "hunter2" not in str(info.value)
    assert "targets[0].url" in str(info.value)


def test_defaults_only_reach_kinds_that_have_the_field() -> None:
    defaults = {"tls": {"verify": False}, "interval": "5s"}
    merged = merge_defaults(defaults, {"kind": "no-such-kind", "name": "x"})
    assert merged == {"kind": "no-such-kind", "name": "x", "interval": "5s"}
    # defaults.tls configures TLS: it reaches a target without `tls` only where `tls` cannot turn
    # TLS on (the URL, the transport or the kind does), never a plaintext tcp or grpc target.
    reached = {
        kind for kind in config_types() if "tls" in merge_defaults(defaults, {"kind": kind, "name": "x"})
    }
    assert reached == {"http", "dns", "tls", "websocket"}


@pytest.mark.parametrize(
    ("target", "tls"),
    [
        ("{name: t, kind: tcp, address: 'h:1'}", None),
        ("{name: t, kind: tcp, address: 'h:1', tls: {}}", {"verify": False, "sni": "x"}),
        ("{name: t, kind: tcp, address: 'h:1', tls: {sni: y, verify: true}}", {"verify": True, "sni": "y"}),
        ("{name: t, kind: tcp, address: 'h:25', starttls: smtp}", {"verify": False, "sni": "x"}),
        (
            "{name: t, kind: tcp, address: 'h:25', dialogue: [{starttls: true}]}",
            {"verify": False, "sni": "x"},
        ),
        ("{name: t, kind: grpc, address: 'h:1'}", None),
        ("{name: t, kind: grpc, address: 'h:1', tls: {sni: y}}", {"verify": False, "sni": "y"}),
    ],
)
def test_defaults_tls_configures_tcp_and_grpc_tls_but_never_turns_it_on(
    target: str, tls: dict[str, object] | None
) -> None:
    config = load_text(f"defaults: {{tls: {{verify: false, sni: x}}}}\ntargets: [{target}]\n")
    got = config.targets[0].tls  # type: ignore[union-attr]
    assert (None if got is None else {"verify": got.verify, "sni": got.server_name}) == tls


def test_a_plaintext_grpc_target_stays_plaintext_under_defaults_tls() -> None:
    config = load_text(
        "defaults: {tls: {verify: false}}\ntargets: [{name: g, kind: grpc, address: 'h:50051'}]\n"
    )
    assert config.targets[0].display_address() == "grpc://h:50051/"


def test_kinds_come_from_the_probe_union() -> None:
    assert config_types()["http"] is HTTPProbeConfig
    # Every Defaults field is a base field every kind has, except tls.
    for field in Defaults.model_fields:
        if field != "tls":
            assert all(field in model.model_fields for model in config_types().values())


def test_defaults_reach_other_kinds_without_tls() -> None:
    config = load(HERE / "valid" / "mixed_kinds.yaml")
    web, gateway = config.targets
    assert isinstance(web, HTTPProbeConfig) and web.tls.verify is False
    assert gateway.kind == "icmp" and gateway.interval_s == 10.0
    assert "tls" not in type(gateway).model_fields


def test_docs_complete_example_is_valid() -> None:
    doc = (HERE.parents[1] / "docs" / "config.md").read_text()
    example = doc.split("## A complete example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = load_text(example, "docs/config.md")
    assert [t.kind for t in config.targets] == ["http", "dns", "tcp", "icmp"]
    assert str(config.shard) == "0/1"
