"""Scenario files: validation with file/line problems, defaults, and seeded resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelprobe.errors import ConfigError
from otelprobe.lab.dataset.incidents import affected_pairs, resolve, total_duration_s
from otelprobe.lab.faults import FAULT_TYPES, TTFBDelay
from otelprobe.lab.scenario import MAGNITUDE_KEYS, Scenario, load_scenario, load_scenario_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"

TOPOLOGY = """\
name: t
seed: 5
vantages:
  - {name: a, delay: 2ms}
  - {name: b, delay: 10ms, jitter: 1ms}
targets:
  - {name: web, kind: http, body_size: 8KiB}
  - {name: sec, kind: https}
  - {name: ns, kind: dns}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_scenario_text(TOPOLOGY + text, "s.yaml")
    return [str(p) for p in info.value.problems]


def test_example_scenarios_load_and_resolve() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        scenario = load_scenario(path)
        incidents = resolve(scenario)
        assert incidents, path
        assert total_duration_s(scenario, incidents) > max(i.end_s for i in incidents)


def test_tiny_scenario_resolves_its_random_parts_under_the_seed() -> None:
    scenario = load_scenario(EXAMPLES / "tiny.yaml")
    first, second = resolve(scenario), resolve(scenario)
    assert first == second
    ttfb, latency, cert = first
    assert isinstance(ttfb.fault, TTFBDelay) and ttfb.fault.delay_s == pytest.approx(0.25)
    assert ttfb.cause == "backend_slow" and ttfb.scope == "target"
    assert ttfb.pairs == {("web", "near"), ("web", "far")}
    assert latency.scope == "vantage" and latency.pairs == {("web", "far"), ("api", "far")}
    assert cert.scope == "path" and cert.vantage in ("near", "far") and 14.0 <= cert.start_s <= 16.0
    assert cert.pairs == {("api", cert.vantage)}
    assert total_duration_s(scenario, first) == pytest.approx(max(i.end_s for i in first) + 4.0)


def test_ranges_are_drawn_within_bounds_and_change_with_the_seed() -> None:
    text = TOPOLOGY + (
        "timeline:\n"
        "  - fault: {kind: ttfb_delay}\n"
        "    magnitude: [10ms, 1s]\n"
        "    start: [5s, 50s]\n"
        "    duration: [2s, 4s]\n"
    )
    scenario = load_scenario_text(text)
    drawn = [resolve(scenario, seed=seed)[0] for seed in range(40)]
    assert all(0.01 <= i.magnitude <= 1.0 for i in drawn if i.magnitude is not None)
    assert all(5.0 <= i.start_s <= 50.0 and 2.0 <= i.duration_s <= 4.0 for i in drawn)
    assert all(i.target in ("web", "sec") for i in drawn)  # the HTTP targets only
    assert len({i.magnitude for i in drawn}) > 30
    # Log-uniform: about half the draws below the geometric middle (0.1 s).
    assert 8 <= sum(1 for i in drawn if (i.magnitude or 0) < 0.1) <= 32


def test_defaults_scope_and_cause() -> None:
    scenario = load_scenario_text(
        TOPOLOGY
        + "timeline:\n"
        + "  - {fault: {kind: packet_loss, rate: 0.1}, vantage: b, start: 1s, duration: 2s}\n"
        + "  - {fault: {kind: http_5xx}, target: web, start: 1s, duration: 2s, cause: content_mismatch}\n"
    )
    loss, errors = resolve(scenario)
    assert (loss.scope, loss.cause, loss.magnitude) == ("vantage", "packet_loss", 0.1)
    assert loss.pairs == {("web", "b"), ("sec", "b"), ("ns", "b")}  # the link carries everything
    assert (errors.scope, errors.cause, errors.magnitude) == ("target", "content_mismatch", 1.0)


def test_affected_pairs_follow_the_fault_kind() -> None:
    scenario = load_scenario_text(TOPOLOGY)
    tls = load_scenario_text(
        TOPOLOGY + "timeline:\n  - {fault: {kind: tls_delay, delay: 1ms}, start: 0, duration: 1s}\n"
    ).timeline[0]
    assert affected_pairs(scenario, tls.fault, "vantage", "a", None) == {("sec", "a")}
    assert affected_pairs(scenario, tls.fault, "target", None, "sec") == {("sec", "a"), ("sec", "b")}
    assert affected_pairs(scenario, tls.fault, "path", "b", "sec") == {("sec", "b")}


def test_problems_name_file_line_and_path() -> None:
    found = problems(
        "timeline:\n"
        "  - fault: {kind: ttfb_delay, delay: 1s}\n"  # line 11
        "    start: 1s\n"
        "    duration: 2s\n"
        "    color: red\n"  # line 14
        "  - fault: {kind: network_latency, delay: 5ms}\n"  # line 15
        "    scope: path\n"
        "    target: web\n"
        "    vantage: a\n"
        "    start: 1s\n"
        "    duration: 2s\n"
        "  - fault: {kind: tcp_delay}\n"  # line 21
        "    start: 1s\n"
        "    duration: 2s\n"
    )
    assert found[0] == "s.yaml:14: timeline[0].color: unknown key 'color'"
    assert found[1].startswith("s.yaml:15: timeline[1]: network_latency is injected on a vantage's link")
    assert found[2].startswith("s.yaml:21: timeline[2].fault.kind: unknown kind 'tcp_delay'")


def test_reference_problems_point_at_the_reference() -> None:
    found = problems(
        "timeline:\n"
        "  - {fault: {kind: tls_delay, delay: 5ms}, target: web, start: 1s, duration: 2s}\n"  # line 10
        "  - {fault: {kind: refused}, target: nope, start: 1s, duration: 2s}\n"
        "  - {fault: {kind: hang}, scope: path, target: web, vantage: c, start: 1s, duration: 2s}\n"
    )
    assert found == [
        "s.yaml:11: timeline[0].target: a tls_delay fault cannot hit http target 'web'",
        "s.yaml:12: timeline[1].target: unknown target 'nope'; known: web, sec, ns",
        "s.yaml:13: timeline[2].vantage: unknown vantage 'c'; known: a, b",
    ]


def test_value_problems() -> None:
    found = problems(
        "probe: {interval: 1s, timeout: 2s}\n"
        "timeline:\n"
        "  - {fault: {kind: refused}, magnitude: 3, target: web, start: 1s, duration: 2s}\n"
        "  - {fault: {kind: hang}, target: web, start: soon, duration: 2s}\n"
    )
    assert any("s.yaml:10: probe: timeout (2s) is longer than interval (1s)" in p for p in found)
    assert any("s.yaml:12: timeline[0]: fault refused has no magnitude" in p for p in found)
    assert any(p.startswith("s.yaml:13: timeline[1].start:") for p in found)


def test_names_must_be_dns_labels_and_unique() -> None:
    with pytest.raises(ConfigError) as info:
        load_scenario_text("vantages: [{name: Bad_Name}]\ntargets: [{name: w, kind: http}]\n", "s.yaml")
    assert "s.yaml:1: vantages[0].name:" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_scenario_text("vantages: [{name: a}, {name: a}]\ntargets: [{name: w, kind: http}]\n", "s.yaml")
    assert "vantages[1].name: duplicate name 'a'" in str(info.value)


def test_programmatic_scenarios_check_references_too() -> None:
    data = {
        "vantages": [{"name": "a"}],
        "targets": [{"name": "w", "kind": "dns"}],
        "timeline": [{"fault": {"kind": "hang"}, "start": 1, "duration": 1}],
    }
    with pytest.raises(ValueError, match="no target of this scenario can take a hang fault"):
        Scenario.model_validate(data)


def test_every_fault_kind_names_its_magnitude_knob() -> None:
    assert set(MAGNITUDE_KEYS) == set(FAULT_TYPES)
    for kind, key in MAGNITUDE_KEYS.items():
        fields = {info.alias or name for name, info in FAULT_TYPES[kind].model_fields.items()}
        assert key is None or key in fields, kind


def test_environment_knobs_fit_their_target_kinds() -> None:
    with pytest.raises(ConfigError) as info:
        load_scenario_text(
            "vantages: [{name: a, resolver_delay: 2ms, resolver_jitter: 5ms}]\n"
            "targets:\n"
            "  - {name: web, kind: http, tls_record: 1400}\n"  # line 3
            "  - {name: ns, kind: dns, think_spike_rate: 0.1}\n"  # line 4
            "  - {name: api, kind: https, tls_record: 1400, think_spike_rate: 0.02, think_spike: 300ms}\n",
            "s.yaml",
        )
    assert [str(p) for p in info.value.problems] == [
        "s.yaml:3: targets[0]: tls_record is for targets that speak TLS; http does not",
        "s.yaml:4: targets[1]: think_spike_rate is for http and https targets; dns has no backend",
    ]
    scenario = load_scenario_text(
        "vantages: [{name: a, resolver_delay: 2ms, resolver_jitter: 5ms}]\n"
        "targets: [{name: api, kind: https, tls_record: 1400, think_spike_rate: 0.02, think_spike: 300ms}]\n"
    )
    assert scenario.vantages[0].resolver_delay_s == 0.002 and scenario.vantages[0].resolver_jitter_s == 0.005
    api = scenario.targets[0]
    assert (api.tls_record_bytes, api.think_spike_rate, api.think_spike_s) == (1400, 0.02, 0.3)


def test_a_ramp_steps_from_its_start_to_the_magnitude() -> None:
    scenario = load_scenario_text(
        TOPOLOGY
        + "timeline:\n"
        + "  - fault: {kind: ttfb_delay}\n"
        + "    magnitude: 160ms\n"
        + "    ramp: {from: 10ms, steps: 3}\n"
        + "    band: gross\n"
        + "    target: web\n"
        + "    start: 2s\n"
        + "    duration: 9s\n"
        + "  - fault: {kind: bandwidth_limit}\n"
        + "    magnitude: 64KiB\n"
        + "    ramp: {from: 4MiB, steps: 4}\n"
        + "    vantage: a\n"
        + "    start: 2s\n"
        + "    duration: 8s\n"
    )
    ttfb, rate = resolve(scenario)
    assert [at for at, _ in ttfb.steps] == [0.0, 3.0, 6.0]
    assert [f.delay_s for _, f in ttfb.steps] == pytest.approx([0.01, 0.04, 0.16])  # type: ignore[union-attr]
    assert ttfb.steps[-1][1] == ttfb.fault and ttfb.magnitude == pytest.approx(0.16)
    assert ttfb.band == "gross"
    rates = [f.rate_bytes_per_s for _, f in rate.steps]  # type: ignore[union-attr]
    assert rates[0] == 4 * 2**20 and rates[-1] == 64 * 1024 and rates == sorted(rates, reverse=True)
    assert [at for at, _ in rate.steps] == [0.0, 2.0, 4.0, 6.0]


def test_ramp_problems() -> None:
    found = problems(
        "timeline:\n"
        "  - {fault: {kind: ttfb_delay, delay: 1s}, ramp: {from: 1ms}, target: web, start: 1, duration: 2}\n"
        "  - {fault: {kind: hang}, magnitude: 0.5, ramp: {from: lots}, target: web, start: 1, duration: 2}\n"
        "  - {fault: {kind: hang}, magnitude: 0.5, ramp: {from: 0.1, steps: 1}, target: web, start: 1s,"
        " duration: 2s}\n"
        "  - {fault: {kind: hang}, band: huge, target: web, start: 1s, duration: 2s}\n"
    )
    assert found[0] == "s.yaml:11: timeline[0]: a ramp steps up to the entry's magnitude; give magnitude"
    assert found[1].startswith("s.yaml:12: timeline[1]: ramp.from 'lots' is not a valid probability")
    assert found[2].startswith("s.yaml:13: timeline[2].ramp.steps:")
    assert found[3].startswith("s.yaml:14: timeline[3].band:")
