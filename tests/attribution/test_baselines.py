"""The evaluation baselines: each one's answer on hand-made window rows whose cause an SRE would
name at a glance, the threshold tuning, scope voting, and the rule tree on the shipped recordings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from otelprobe.attribution.attribute import attributable
from otelprobe.attribution.baselines import (
    Answer,
    NeighbourVoting,
    RobustZ,
    StaticThresholds,
    best_f1_threshold,
    voted_scope,
)
from otelprobe.attribution.dataset import WindowTable
from otelprobe.attribution.expert_rules import ExpertRules, expert_pick
from otelprobe.attribution.metrics import score_cases
from otelprobe.causes import ROOT_CAUSES, SCOPES
from tests.support.train_101_table import train_101_table

HEALTHY_WINDOW: dict[str, Any] = {"kind": "http", "n": 2, "n_fail": 0, "success_ratio": 1.0, "warm": True}


def window(**fields: Any) -> dict[str, Any]:
    """A window row: healthy unless `fields` say otherwise (absent columns read as unchanged)."""
    return {**HEALTHY_WINDOW, **fields}


def slowed(
    phase: str, delta_ms: float, *, z: float = 40.0, fastest_ms: float | None = None
) -> dict[str, Any]:
    """A phase up by `delta_ms` in the median, `fastest_ms` (default the same) in the fastest probe."""
    p10 = delta_ms if fastest_ms is None else fastest_ms
    return {
        f"{phase}_p50_delta_ms": delta_ms,
        f"{phase}_p10_delta_ms": p10,
        f"{phase}_max_delta_ms": max(delta_ms, p10),
        f"{phase}_p50_z": z,
    }


def failing(error_class: str, share: float = 1.0, **details: float) -> dict[str, Any]:
    return {
        f"{error_class}_share": share,
        "success_ratio": 1.0 - share,
        "n_fail": round(2 * share),
        **{f"detail_{group}_share": value for group, value in details.items()},
    }


def top(answer: Answer, row: int = 0) -> str:
    return ROOT_CAUSES[int(np.argmax(answer.causes[row]))]


def check_answer(answer: Answer, n: int) -> None:
    assert answer.causes.shape == (n, len(ROOT_CAUSES))
    assert np.allclose(answer.causes.sum(axis=1), 1.0)
    assert (answer.causes >= 0).all()
    assert answer.scopes.shape == (n, len(ROOT_CAUSES))
    assert set(answer.scopes.ravel()) <= set(SCOPES)


EXPERT_CASES = [
    ("only TTFB up", window(**slowed("ttfb", 120.0)), "backend_slow"),
    ("only TLS up", window(**slowed("tls", 60.0)), "tls_slow"),
    ("only DNS up", window(**slowed("dns", 25.0)), "dns_latency"),
    (
        "transfer up",
        window(**slowed("transfer", 300.0), **slowed("connect", 3.0, fastest_ms=0.0)),
        "bandwidth_limit",
    ),
    (
        "connect, TLS and TTFB up by one RTT",
        window(
            **slowed("connect", 40.0), **slowed("tls", 41.0), **slowed("ttfb", 39.0), **slowed("dns", 40.0)
        ),
        "network_latency",
    ),
    (
        "one probe's connect ~1 s (a lost SYN)",
        window(**slowed("connect", 500.0, fastest_ms=100.0), connect_retry_share=0.5),
        "packet_loss",
    ),
    (
        "one probe's handshake stalled 300 ms",
        window(**{**slowed("tls", 150.0, fastest_ms=30.0), "tls_max_delta_ms": 300.0}),
        "packet_loss",
    ),
    ("certificate error", window(**failing("tls_error", cert=1.0)), "certificate_invalid"),
    ("NXDOMAIN", window(**failing("dns_error", 0.5, dns_rcode=0.5)), "dns_failure"),
    ("resolver timeouts, connects fine", window(**failing("dns_error", 0.5, dns_timeout=0.5)), "dns_failure"),
    (
        "resolver timeouts while this vantage's connects suffer",
        window(**failing("dns_error", 0.5, dns_timeout=0.5), vantage_connect_share=0.4),
        "packet_loss",
    ),
    ("5xx", window(**failing("http_status", 0.5)), "http_error"),
    ("body assertion", window(**failing("assertion_failed")), "content_mismatch"),
    ("DNS answer assertion", window(kind="dns", **failing("assertion_failed", answer=1.0)), "dns_failure"),
    (
        "refused after a round trip",
        window(**failing("connect_refused"), connect_p50_rel=0.02),
        "target_unreachable",
    ),
    (
        "refused far sooner than the server could answer",
        window(**failing("connect_refused"), connect_p50_rel=-0.8),
        "dns_failure",
    ),
    ("every connect times out", window(**failing("connect_timeout")), "target_unreachable"),
    (
        "some connects time out, the rest stall ~1 s",
        window(**failing("connect_timeout", 0.5), connect_retry_share=0.5),
        "packet_loss",
    ),
    (
        "deadline in TTFB, nothing else",
        window(**failing("timeout", 0.5), failed_in_ttfb_share=0.5),
        "backend_slow",
    ),
]


@pytest.mark.parametrize(("case", "row", "cause"), EXPERT_CASES, ids=[case for case, _, _ in EXPERT_CASES])
def test_expert_rules_name_the_obvious_cause(case: str, row: dict[str, Any], cause: str) -> None:
    assert expert_pick(row) == cause
    answer = ExpertRules().answer(pd.DataFrame([row]))
    check_answer(answer, 1)
    assert top(answer) == cause


def test_expert_rules_rank_every_cause_strictly_with_the_second_fault_next() -> None:
    # A 5xx fault and a slow backend at once: the failure first, the slow TTFB second.
    answer = ExpertRules().answer(
        pd.DataFrame([window(**failing("http_status", 0.5), **slowed("ttfb", 200.0))])
    )
    order = np.argsort(-answer.causes[0])
    assert [ROOT_CAUSES[i] for i in order[:2]] == ["http_error", "backend_slow"]
    assert len(set(answer.causes[0].round(12))) == len(ROOT_CAUSES)  # no ties
    assert answer.causes[0].max() == pytest.approx(0.5, abs=0.01)  # halving from rank to rank


def test_robust_z_names_the_most_anomalous_phase_or_failure() -> None:
    frame = pd.DataFrame(
        [
            window(**slowed("ttfb", 120.0, z=50.0), **slowed("dns", 3.0, z=5.0)),
            window(**slowed("dns", 20.0, z=30.0)),
            window(**failing("http_status", 0.5)),
            window(**failing("tls_error", cert=1.0)),
        ]
    )
    answer = RobustZ().answer(frame)
    check_answer(answer, 4)
    assert [top(answer, i) for i in range(4)] == [
        "backend_slow",
        "dns_latency",
        "http_error",
        "certificate_invalid",
    ]
    assert set(answer.scopes.ravel()) == {"path"}  # robust z knows no neighbours


def test_robust_z_leaves_causes_without_evidence_tied() -> None:
    answer = RobustZ().answer(pd.DataFrame([window()]))
    assert np.allclose(answer.causes[0], 1 / len(ROOT_CAUSES))


def test_static_thresholds_are_tuned_on_training_windows() -> None:
    rng = np.random.default_rng(3)
    unmeasured = {f"{phase}_p50_ms": float("nan") for phase in ("dns", "connect", "tls", "transfer")}
    rows = [window(label="healthy", ttfb_p50_ms=ms, **unmeasured) for ms in rng.uniform(40, 90, 200)]
    rows += [window(label="backend_slow", ttfb_p50_ms=ms, **unmeasured) for ms in rng.uniform(150, 400, 50)]
    static = StaticThresholds.fit(pd.DataFrame(rows))
    assert 90 <= static.thresholds_ms["ttfb"] <= 150
    assert static.thresholds_ms["dns"] == float("inf")  # no dns_latency window to tune on

    answer = static.answer(pd.DataFrame([window(ttfb_p50_ms=300.0), window(ttfb_p50_ms=60.0)]))
    check_answer(answer, 2)
    assert top(answer, 0) == "backend_slow"
    assert np.allclose(answer.causes[1], 1 / len(ROOT_CAUSES))  # under every limit: no opinion
    assert set(answer.scopes.ravel()) == {"path"}


def test_static_thresholds_refuse_a_table_they_cannot_be_tuned_on() -> None:
    with pytest.raises(ValueError, match="labeled"):
        StaticThresholds.fit(pd.DataFrame([window()]))
    with pytest.raises(ValueError, match="dns_p50_ms"):
        StaticThresholds.fit(pd.DataFrame([window(label="healthy")]))


def test_best_f1_threshold_cuts_between_the_classes() -> None:
    values = np.array([1.0, 2.0, 3.0, 10.0, 11.0, 12.0])
    positive = np.array([False, False, False, True, True, True])
    assert best_f1_threshold(values, positive) == pytest.approx(6.5)
    assert best_f1_threshold(values, np.zeros(6, dtype=bool)) == float("inf")


@pytest.mark.parametrize(
    ("vantage_share", "target_share", "scope"),
    [(0.8, 0.0, "vantage"), (0.2, 1.0, "target"), (0.2, 0.0, "path"), (float("nan"), float("nan"), "path")],
)
def test_voted_scope(vantage_share: float, target_share: float, scope: str) -> None:
    assert voted_scope(vantage_share, target_share) == scope


def test_voting_scopes_each_cause_by_its_own_symptom() -> None:
    # Neighbours on this vantage connect slower (a link problem); every vantage of this target fails.
    row = window(
        **slowed("connect", 30.0),
        vantage_connect_share=0.8,
        vantage_slow_share=0.8,
        target_connect_share=0.0,
        target_fail_share=1.0,
        vantage_fail_share=0.0,
    )
    answer = NeighbourVoting().answer(pd.DataFrame([row]))
    check_answer(answer, 1)
    assert top(answer) == "network_latency"
    assert answer.scopes[0, ROOT_CAUSES.index("network_latency")] == "vantage"
    assert answer.scopes[0, ROOT_CAUSES.index("http_error")] == "target"
    assert answer.scopes[0, ROOT_CAUSES.index("tls_slow")] == "path"


def _labeled_cases(table: WindowTable) -> pd.DataFrame:
    frame = table.frame
    return frame[attributable(frame) & frame["label"].isin(list(ROOT_CAUSES))]


@pytest.fixture(scope="module")
def train_table() -> WindowTable:
    return train_101_table()


@pytest.mark.slow  # train_table: the whole train-101 recording as windows (~1 min)
def test_rule_tree_beats_chance_and_the_simple_baselines_on_the_shipped_recordings(
    train_table: WindowTable, eval_table: WindowTable
) -> None:
    cases = _labeled_cases(eval_table)
    assert len(cases) > 300
    scores = {}
    for attributor in (StaticThresholds.fit(train_table.frame), RobustZ(), ExpertRules()):
        answer = attributor.answer(cases)
        check_answer(answer, len(cases))
        scores[attributor.name] = score_cases(
            answer.causes,
            list(cases["label"]),
            true_scopes=list(cases["label_scope"].fillna("path")),
            predicted_scopes=answer.scopes,
        )
    expert = scores["expert rules"]
    # Chance is 1/11 at AC@1; the rule tree is the bar the model must beat.
    assert expert.ac1 > 0.8
    assert expert.ac3 > 0.9
    assert expert.ac1 > scores["robust z (BARO)"].ac1 + 0.1
    assert expert.ac1 > scores["static thresholds"].ac1 + 0.1
    assert expert.scope_ac1 > 0.6  # voting knows the neighbours; robust z says "path" only
    assert scores["robust z (BARO)"].scope_ac1 < 0.2
