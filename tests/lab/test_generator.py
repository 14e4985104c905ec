"""The campaign generator: balanced causes and scopes, magnitudes, overlaps, healthy time, splits."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from otelprobe.cli import main
from otelprobe.lab.dataset.generator import RECIPES, CampaignShape, generate_campaign
from otelprobe.lab.dataset.incidents import Incident, resolve, total_duration_s
from otelprobe.lab.faults import ROOT_CAUSES
from otelprobe.lab.scenario import MAGNITUDE_KEYS, Scenario, load_scenario


def campaign(
    seed: int, split: str = "train", incidents: int = 120, profile: str = "standard"
) -> tuple[Scenario, list[Incident]]:
    data = generate_campaign(seed, split=split, incidents=incidents, profile=profile)  # type: ignore[arg-type]
    scenario = Scenario.model_validate(data)
    return scenario, resolve(scenario)


def magnitudes(incidents: list[Incident]) -> set[tuple[str, float]]:
    """Every (kind, magnitude) a campaign draws (not fixed defaults), ramp steps included."""
    values: set[tuple[str, float]] = {
        (i.fault.kind, i.magnitude) for i in incidents if i.magnitude is not None and i.band
    }
    for incident in incidents:
        for _, fault in incident.steps:
            key = MAGNITUDE_KEYS[fault.kind]
            values.add((fault.kind, float(fault.model_dump(by_alias=True)[str(key)])))
    return values


def test_every_cause_is_balanced_over_the_scopes_it_can_take() -> None:
    _, incidents = campaign(1, incidents=132)
    causes = Counter(i.cause for i in incidents)
    assert set(causes) == set(ROOT_CAUSES)
    assert max(causes.values()) - min(causes.values()) <= 3
    scopes = defaultdict(set)
    for incident in incidents:
        scopes[incident.cause].add(incident.scope)
    for cause in ROOT_CAUSES:
        expected = {s for r in RECIPES[cause] for s in r.scopes}
        assert scopes[cause] == expected, cause
    assert scopes["network_latency"] == {"vantage"}  # injected on a vantage's link only
    assert scopes["backend_slow"] == {"vantage", "target", "path"}


def test_magnitudes_span_barely_visible_to_gross() -> None:
    _, incidents = campaign(2, incidents=200)
    ttfb = sorted(i.magnitude for i in incidents if i.fault.kind == "ttfb_delay" and i.magnitude)
    assert ttfb[0] < 0.02 and ttfb[-1] > 0.15  # 3-7 ms baselines: from a few ms to 100x
    latency = sorted(i.magnitude for i in incidents if i.fault.kind == "network_latency" and i.magnitude)
    assert latency[0] < 0.005 and latency[-1] > 0.05


def test_some_faults_overlap_and_every_pair_has_healthy_time() -> None:
    scenario, incidents = campaign(3)
    overlapping = [
        (a.id, b.id)
        for a in incidents
        for b in incidents
        if a.id < b.id and a.pairs & b.pairs and a.start_s < b.end_s and b.start_s < a.end_s
    ]
    assert overlapping, "a campaign combines some faults"
    total = total_duration_s(scenario, incidents)
    first_start = min(i.start_s for i in incidents)
    assert first_start >= CampaignShape().lead_in  # a healthy baseline before anything
    busy: dict[tuple[str, str], float] = defaultdict(float)
    for incident in incidents:
        for pair in incident.pairs:
            busy[pair] += incident.duration_s
    assert all(seconds < 0.8 * total for seconds in busy.values())


def test_splits_differ_in_targets_vantages_and_magnitudes() -> None:
    train, train_incidents = campaign(4, "train")
    held_out, eval_incidents = campaign(5, "eval")
    assert not {t.name for t in train.targets} & {t.name for t in held_out.targets}
    assert not set(train.vantage_names) & set(held_out.vantage_names)
    assert {t.body_size for t in train.targets if t.uses_http} != {
        t.body_size for t in held_out.targets if t.uses_http
    }
    assert not magnitudes(train_incidents) & magnitudes(eval_incidents)


def test_same_seed_same_campaign() -> None:
    assert generate_campaign(7) == generate_campaign(7)
    assert generate_campaign(7) != generate_campaign(8)


def test_cli_generate_writes_a_loadable_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "campaign.yaml"
    assert (
        main(["lab", "generate", "--out", str(out), "--seed", "9", "--split", "eval", "--incidents", "30"])
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    scenario = load_scenario(out)
    assert scenario.name == "campaign-eval-9" and len(scenario.timeline) >= 30


def test_shifted_profile_shares_no_name_magnitude_or_environment_with_standard() -> None:
    campaigns = {
        "train": campaign(4, "train", 200),
        "eval": campaign(5, "eval", 120),
        "shifted": campaign(6, "eval", 120, profile="shifted"),
    }
    names = {k: {t.name for t in s.targets} | set(s.vantage_names) for k, (s, _) in campaigns.items()}
    values = {k: magnitudes(incidents) for k, (_, incidents) in campaigns.items()}
    for a, b in (("train", "eval"), ("train", "shifted"), ("eval", "shifted")):
        assert not names[a] & names[b], (a, b)
        assert not values[a] & values[b], (a, b)
    standard = [v for k in ("train", "eval") for v in campaigns[k][0].vantages]
    shifted = campaigns["shifted"][0]
    assert not {v.delay_s for v in shifted.vantages} & {v.delay_s for v in standard}
    assert max(v.delay_s for v in shifted.vantages) > max(v.delay_s for v in standard)
    assert min(v.delay_s for v in shifted.vantages) < min(v.delay_s for v in standard)
    assert min(v.resolver_delay_s for v in shifted.vantages) > max(v.resolver_delay_s for v in standard)
    assert min(v.resolver_jitter_s for v in shifted.vantages) > max(v.resolver_jitter_s for v in standard)
    # Server behaviour differs too: which HTTP bodies come coalesced, and the body sizes.
    standard_http = {
        (t.kind, t.coalesce, t.body_size) for k in ("train", "eval") for t in campaigns[k][0].targets
    }
    assert not {(t.kind, t.coalesce, t.body_size) for t in shifted.targets if t.uses_http} & standard_http


def test_campaign_features_compound_concurrent_ramps_and_subtle() -> None:
    _, incidents = campaign(12, incidents=240)

    def overlap(a: Incident, b: Incident) -> bool:
        return a.id != b.id and a.start_s < b.end_s and b.start_s < a.end_s

    compound = {a.id for a in incidents for b in incidents if overlap(a, b) and a.pairs & b.pairs}
    concurrent = {a.id for a in incidents for b in incidents if overlap(a, b) and not a.pairs & b.pairs}
    assert 0.15 <= len(compound) / len(incidents) <= 0.5
    assert len(concurrent) / len(incidents) >= 0.5  # other series are faulted at the same time
    for a in incidents:  # compound incidents put two different causes on one series at once
        for b in incidents:
            if overlap(a, b) and a.pairs & b.pairs:
                assert a.cause != b.cause or a.fault.kind != b.fault.kind
    ramps = [i for i in incidents if i.steps]
    assert len(ramps) >= 0.05 * len(incidents)
    for ramp in ramps:
        assert ramp.band in ("medium", "high", "gross") and len(ramp.steps) in (3, 4)
        values = [float(f.model_dump(by_alias=True)[str(MAGNITUDE_KEYS[f.kind])]) for _, f in ramp.steps]
        rising = values == sorted(values)  # delays, loss and error rates rise; a rate limit falls
        assert rising != (ramp.fault.kind in ("bandwidth_limit", "trickle_body")), ramp
        assert ramp.steps[-1][1] == ramp.fault and ramp.duration_s >= 9.0
    with_magnitude = [i for i in incidents if i.magnitude is not None]
    subtle = [i for i in with_magnitude if i.band == "subtle"]
    assert 0.08 <= len(subtle) / len(with_magnitude) <= 0.25
    by_kind: dict[str, list[Incident]] = defaultdict(list)
    for incident in with_magnitude:
        by_kind[incident.fault.kind].append(incident)
    ttfb = by_kind["ttfb_delay"]
    assert max(i.magnitude or 0 for i in ttfb if i.band == "subtle") < min(
        i.magnitude or 0 for i in ttfb if i.band == "low"
    )


@pytest.mark.parametrize(("profile", "split"), [("standard", "eval"), ("shifted", "eval")])
def test_small_campaigns_are_balanced_over_bands(profile: str, split: str) -> None:
    _, incidents = campaign(21, split, 80, profile)
    bands = Counter(i.band for i in incidents if i.band not in (None, "subtle"))
    assert set(bands) == {"low", "medium", "high", "gross"}
    assert max(bands.values()) <= 1.6 * min(bands.values()), bands


def test_cli_generate_shifted_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "shifted.yaml"
    assert main(["lab", "generate", "--out", str(out), "--seed", "3", "--profile", "shifted"]) == 0
    scenario = load_scenario(out)
    assert scenario.name == "campaign-shifted-eval-3"
    assert "intl-x" in scenario.vantage_names
    code = main(
        ["lab", "generate", "--out", str(out), "--seed", "3", "--profile", "shifted", "--split", "train"]
    )
    assert code == 2
    assert "profile 'shifted' has no train split (it has: eval)" in capsys.readouterr().err


def test_band_centre_draws_every_band_above_the_evaluation_campaigns() -> None:
    """A training campaign drawn high (--band-centre 0.9) reaches magnitudes the standard eval
    campaign does not, so a model meets gross faults' regimes (timeouts behind long round trips)
    before it is judged on them."""
    _, eval_incidents = campaign(11, "eval", incidents=132)
    data = generate_campaign(12, split="train", incidents=132, profile="wide", band_centre=0.9)
    high_incidents = resolve(Scenario.model_validate(data))

    def peak(incidents: list[Incident]) -> float:
        return max(i.magnitude for i in incidents if i.fault.kind == "network_latency" and i.magnitude)

    assert peak(high_incidents) > peak(eval_incidents)
    assert not magnitudes(high_incidents) & magnitudes(eval_incidents)
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        generate_campaign(12, band_centre=1.5)


def test_cli_generate_band_centre(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "high.yaml"
    args = ["lab", "generate", "--out", str(out), "--seed", "13", "--profile", "wide", "--incidents", "20"]
    assert main([*args, "--band-centre", "0.9"]) == 0
    assert "--band-centre 0.9" in out.read_text().splitlines()[0]
    capsys.readouterr()
    assert main([*args, "--band-centre", "2"]) == 2
    assert "outside 0..1" in capsys.readouterr().err
