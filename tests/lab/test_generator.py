"""The campaign generator: balanced causes and scopes, magnitudes, overlaps, healthy time, splits."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from otelprobe.cli import main
from otelprobe.lab.faults import ROOT_CAUSES
from otelprobe.lab.generator import RECIPES, CampaignShape, generate_campaign
from otelprobe.lab.scenario import Incident, Scenario, load_scenario, resolve, total_duration_s


def campaign(seed: int, split: str = "train", incidents: int = 120) -> tuple[Scenario, list[Incident]]:
    scenario = Scenario.model_validate(generate_campaign(seed, split=split, incidents=incidents))  # type: ignore[arg-type]
    return scenario, resolve(scenario)


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
    train_values = {(i.fault.kind, i.magnitude) for i in train_incidents if i.magnitude is not None}
    eval_values = {(i.fault.kind, i.magnitude) for i in eval_incidents if i.magnitude is not None}
    assert not train_values & eval_values


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
