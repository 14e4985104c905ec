"""The `tenants:` and `scheduler:` sections: loading, unknown tenant labels, and validate's budget check."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelprobe.config import ConfigError, load_text, validate

BASE = """\
concurrency: 64
defaults:
  interval: 10s
  timeout: 2s
scheduler:
  per_destination: 8
tenants:
  big: {concurrency: 8, rate: 2, weight: 1, fleet: true}
  small: {weight: 4}
targets:
"""


def _target(name: str, extra: str = "") -> str:
    return f'  - {{name: {name}, kind: tcp, address: "127.0.0.1:9"{extra}}}\n'


def test_a_tenants_section_loads_with_its_defaults() -> None:
    config = load_text(BASE + _target("a", ", labels: {tenant: big}") + _target("b"))
    assert config.tenants is not None
    big = config.tenants["big"]
    assert (big.concurrency, big.rate, big.weight, big.fleet) == (8, 2.0, 1.0, True)
    assert config.tenants["small"].concurrency is None
    assert config.scheduler.per_destination == 8
    assert config.scheduler.tenant_label == "tenant"
    assert config.scheduler.default_tenant == "default"


def test_no_tenants_section_means_no_tenancy_and_no_politeness_limit() -> None:
    config = load_text("targets:\n" + _target("a", ", labels: {tenant: anything}"))
    assert config.tenants is None
    assert config.scheduler.per_destination is None


def test_an_unknown_tenant_label_is_an_error_at_its_line() -> None:
    text = BASE + _target("a", ", labels: {tenant: big}") + _target("b", ", labels: {tenant: smal}")
    with pytest.raises(ConfigError) as caught:
        load_text(text, "t.yaml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.path) == (12, "targets[1].labels.tenant")
    assert "unknown tenant 'smal'" in problem.message
    assert "big, default, small" in problem.message


def test_an_unknown_tenant_from_defaults_is_reported_at_the_defaults_line() -> None:
    text = BASE.replace("  timeout: 2s\n", "  timeout: 2s\n  labels: {tenant: nobody}\n") + _target("a")
    with pytest.raises(ConfigError) as caught:
        load_text(text, "t.yaml")
    (problem,) = caught.value.problems
    assert problem.line == 5
    assert problem.path == "targets[0].labels.tenant"
    assert "unknown tenant 'nobody' (the value comes from defaults)" in problem.message


def test_a_custom_tenant_label_key() -> None:
    text = BASE.replace("  per_destination: 8\n", "  per_destination: 8\n  tenant_label: team\n")
    config = load_text(text + _target("a", ", labels: {team: small, tenant: whatever}"))
    assert config.scheduler.tenant_label == "team"


@pytest.mark.parametrize("bad", ["concurrency: 0", "rate: 0", "weight: -1", "colour: red"])
def test_bad_tenant_fields_are_located(bad: str) -> None:
    text = BASE.replace("  small: {weight: 4}", f"  small: {{{bad}}}") + _target("a")
    with pytest.raises(ConfigError) as caught:
        load_text(text, "t.yaml")
    assert [p.path.split(".")[:2] for p in caught.value.problems] == [["tenants", "small"]]
    assert caught.value.problems[0].line == 9


def test_validate_reports_a_tenant_whose_targets_do_not_fit_its_rate(tmp_path: Path) -> None:
    # big: 10 targets at 1 s = 10 runs/s (20/s with one retry each) against a rate of 2/s.
    targets = "".join(
        _target(f"t{i}", ", labels: {tenant: big}, interval: 1s, timeout: 500ms, retries: {count: 1}")
        for i in range(10)
    )
    path = tmp_path / "c.yaml"
    path.write_text(BASE + targets + _target("s", ", labels: {tenant: small}"))
    (problem,) = validate(path)
    assert (problem.line, problem.path) == (8, "tenants.big.rate")
    assert "10 targets start 10 runs/s" in problem.message
    assert "20/s with every retry" in problem.message
    assert "rate is 2/s (fleet-wide)" in problem.message


def test_validate_accepts_a_tenant_that_fits_and_scales_per_process_budgets_by_replicas(
    tmp_path: Path,
) -> None:
    # 10 targets at 10 s = 1 run/s <= 2/s: fits.
    targets = "".join(_target(f"t{i}", ", labels: {tenant: big}") for i in range(10))
    path = tmp_path / "ok.yaml"
    path.write_text(BASE + targets)
    assert validate(path) == []
    # 30 targets at 5 s = 6 runs/s: over a fleet-wide 2/s, but 3 replicas x 2/s each fit.
    many = "".join(_target(f"t{i}", ", labels: {tenant: big}, interval: 5s") for i in range(30))
    per_process = BASE.replace("fleet: true", "fleet: false")
    path.write_text("shard: 0/3\n" + per_process + many)
    assert validate(path) == []
    path.write_text("shard: 0/3\n" + BASE + many)
    assert [p.path for p in validate(path)] == ["tenants.big.rate"]


def test_the_docs_tenants_example_loads() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "config.md").read_text()
    example = doc.split("## Tenants", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = load_text(example, "docs/config.md")
    assert config.tenants is not None and set(config.tenants) == {"payments", "search", "default"}
    assert [t.labels.get("tenant") for t in config.targets] == ["payments", None]
    assert config.scheduler.per_destination == 8
