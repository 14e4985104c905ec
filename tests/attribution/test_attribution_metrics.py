"""otelprobe.attribution.metrics: hand-computed golden cases for every score, and sklearn as a referee.

(Named test_attribution_metrics.py because tests/ has no __init__.py files and
tests/telemetry/test_metrics.py already owns the basename.)
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, top_k_accuracy_score

from otelprobe.attribution.metrics import (
    AttributionScores,
    ScoringInputError,
    attribution_delays,
    expected_calibration_error,
    false_attribution_rate,
    score_cases,
    to_json,
)
from otelprobe.causes import ROOT_CAUSES

N_CAUSES = len(ROOT_CAUSES)


def ranked(*explicit: tuple[str, float]) -> list[float]:
    """A score row: the named causes get their scores, the rest share what is left equally."""
    row = [math.nan] * N_CAUSES
    for cause, score in explicit:
        row[ROOT_CAUSES.index(cause)] = score
    rest = [index for index, value in enumerate(row) if math.isnan(value)]
    left = 1.0 - sum(score for _, score in explicit)
    for index in rest:
        row[index] = left / len(rest)
    return row


def scopes_with(**overrides: str) -> list[str]:
    """One case's predicted scope per cause: "target" except where overridden."""
    return [overrides.get(cause, "target") for cause in ROOT_CAUSES]


# Six cases whose true cause ranks 1, 2, 3, 5, 1 and 11 (the last row is flat: ties rank last).
GOLDEN_SCORES = [
    ranked(("backend_slow", 0.5), ("network_latency", 0.3)),
    ranked(("backend_slow", 0.6), ("network_latency", 0.2)),
    ranked(("backend_slow", 0.4), ("network_latency", 0.3), ("dns_latency", 0.2)),
    ranked(
        ("backend_slow", 0.3),
        ("network_latency", 0.25),
        ("dns_latency", 0.2),
        ("packet_loss", 0.15),
        ("tls_slow", 0.05),
    ),
    ranked(("packet_loss", 0.95)),
    [1.0 / N_CAUSES] * N_CAUSES,
]
GOLDEN_TRUE = ["backend_slow", "network_latency", "dns_latency", "tls_slow", "packet_loss", "bandwidth_limit"]
GOLDEN_TRUE_SCOPES = ["target", "path", "vantage", "target", "path", "vantage"]
GOLDEN_PREDICTED_SCOPES = [
    scopes_with(backend_slow="target"),  # right, rank 1
    scopes_with(network_latency="path"),  # right, rank 2
    scopes_with(dns_latency="target"),  # wrong (truth: vantage)
    scopes_with(tls_slow="target"),  # right, rank 5
    scopes_with(packet_loss="vantage"),  # wrong (truth: path)
    scopes_with(bandwidth_limit="vantage"),  # right, rank 11
]


@pytest.fixture(scope="module")
def golden() -> AttributionScores:
    return score_cases(
        GOLDEN_SCORES,
        GOLDEN_TRUE,
        true_scopes=GOLDEN_TRUE_SCOPES,
        predicted_scopes=GOLDEN_PREDICTED_SCOPES,
    )


def test_ac_at_k_and_avg5_follow_the_ranks_with_ties_against_the_attributor(
    golden: AttributionScores,
) -> None:
    # ranks 1, 2, 3, 5, 1, 11 -> AC@1..5 = 2/6, 3/6, 4/6, 4/6, 5/6.
    assert golden.n_cases == 6
    assert golden.ac1 == pytest.approx(2 / 6)
    assert golden.ac3 == pytest.approx(4 / 6)
    assert golden.avg5 == pytest.approx((2 + 3 + 4 + 4 + 5) / 30)


def test_scope_ac_needs_the_cause_in_the_top_k_and_its_scope_right(golden: AttributionScores) -> None:
    # Scope-right cases have ranks 1, 2, 5, 11 -> AC@1..5 = 1/6, 2/6, 2/6, 2/6, 3/6.
    assert golden.scope_ac1 == pytest.approx(1 / 6)
    assert golden.scope_ac3 == pytest.approx(2 / 6)
    assert golden.scope_avg5 == pytest.approx((1 + 2 + 2 + 2 + 3) / 30)


def test_per_class_scores_and_macro_f1_from_the_top1_prediction(golden: AttributionScores) -> None:
    # Top-1 predictions: backend_slow x4, packet_loss, and dns_latency for the flat row (first tied).
    backend = golden.class_scores("backend_slow")
    assert (backend.support, backend.predicted) == (1, 4)
    assert (backend.recall, backend.precision, backend.f1) == pytest.approx((1.0, 0.25, 0.4))
    packet = golden.class_scores("packet_loss")
    assert (packet.recall, packet.precision, packet.f1) == pytest.approx((1.0, 1.0, 1.0))
    network = golden.class_scores("network_latency")
    assert network.recall == 0.0 and math.isnan(network.precision) and network.f1 == 0.0
    dns = golden.class_scores("dns_latency")
    assert (dns.recall, dns.precision, dns.f1) == (0.0, 0.0, 0.0)
    absent = golden.class_scores("http_error")
    assert absent.support == absent.predicted == 0 and math.isnan(absent.f1)
    # Mean over the six classes that are true or predicted: (0.4 + 1 + 0 * 4) / 6.
    assert golden.macro_f1 == pytest.approx(1.4 / 6)
    worst = golden.worst_class()
    assert worst is not None and (worst.cause, worst.recall) == ("dns_latency", 0.0)


def test_confusion_counts_true_rows_against_top1_columns(golden: AttributionScores) -> None:
    expected = np.zeros((N_CAUSES, N_CAUSES), dtype=np.int64)
    for true, predicted in [
        ("backend_slow", "backend_slow"),
        ("network_latency", "backend_slow"),
        ("dns_latency", "backend_slow"),
        ("tls_slow", "backend_slow"),
        ("packet_loss", "packet_loss"),
        ("bandwidth_limit", "dns_latency"),
    ]:
        expected[ROOT_CAUSES.index(true), ROOT_CAUSES.index(predicted)] += 1
    np.testing.assert_array_equal(golden.confusion_array(), expected)
    assert golden.classes == ROOT_CAUSES


def test_ece_of_the_golden_cases(golden: AttributionScores) -> None:
    # One case per bin: |correct - top-1 score| averaged over the six cases.
    gaps = [1 - 0.5, 0.6, 0.4, 0.3, 1 - 0.95, 1 / N_CAUSES]
    assert golden.ece == pytest.approx(sum(gaps) / 6)


def test_ece_bins_are_right_closed_and_a_calibrated_bin_costs_nothing() -> None:
    # 0.3 shares (0.2, 0.3] with 0.25: |0.5 - 0.275| * 2/3 + |0 - 0.31| * 1/3.
    assert expected_calibration_error([0.3, 0.25, 0.31], [True, False, False]) == pytest.approx(
        0.225 * 2 / 3 + 0.31 / 3
    )
    assert expected_calibration_error([0.75] * 4, [True, True, True, False]) == pytest.approx(0.0)
    assert math.isnan(expected_calibration_error([], []))


def test_compound_counts_cases_with_all_true_causes_in_the_top3() -> None:
    scores = [
        ranked(("backend_slow", 0.5), ("network_latency", 0.3)),  # both top 2: hit
        ranked(("backend_slow", 0.4), ("network_latency", 0.3), ("dns_latency", 0.2), ("tls_slow", 0.05)),
        ranked(("packet_loss", 0.9)),  # single cause: not a compound case
        ranked(("backend_slow", 0.4), ("network_latency", 0.3), ("dns_latency", 0.2)),  # all three: hit
        ranked(("backend_slow", 0.5)),  # network_latency ties with eight others: ranks last
    ]
    true = ["backend_slow", "dns_latency", "packet_loss", "network_latency", "backend_slow"]
    sets = [
        {"backend_slow", "network_latency"},
        {"dns_latency", "tls_slow"},  # tls_slow ranks 4: miss
        {"packet_loss"},
        {"network_latency", "backend_slow", "dns_latency"},
        {"backend_slow", "network_latency"},
    ]
    scores_out = score_cases(scores, true, true_cause_sets=sets)
    assert scores_out.n_compound == 4
    assert scores_out.compound_both_at3 == pytest.approx(2 / 4)
    assert math.isnan(scores_out.scope_ac1)  # no scopes given


def test_compound_is_nan_without_compound_cases() -> None:
    scores = [ranked(("backend_slow", 0.9))]
    assert math.isnan(score_cases(scores, ["backend_slow"]).compound_both_at3)
    single = score_cases(scores, ["backend_slow"], true_cause_sets=[{"backend_slow"}])
    assert math.isnan(single.compound_both_at3) and single.n_compound == 0


def test_ac_at_k_and_macro_f1_agree_with_sklearn_on_random_scores() -> None:
    rng = np.random.default_rng(8)
    scores = rng.dirichlet(np.ones(N_CAUSES), size=400)
    true_index = rng.integers(0, N_CAUSES, size=400)
    true = [ROOT_CAUSES[index] for index in true_index]
    result = score_cases(scores, true)
    labels = np.arange(N_CAUSES)
    assert result.ac1 == pytest.approx(top_k_accuracy_score(true_index, scores, k=1, labels=labels))
    assert result.ac3 == pytest.approx(top_k_accuracy_score(true_index, scores, k=3, labels=labels))
    top5 = [top_k_accuracy_score(true_index, scores, k=k, labels=labels) for k in range(1, 6)]
    assert result.avg5 == pytest.approx(np.mean(top5))
    assert result.macro_f1 == pytest.approx(f1_score(true_index, scores.argmax(axis=1), average="macro"))


def test_to_json_is_plain_json_with_nan_as_null(golden: AttributionScores) -> None:
    data = to_json(golden)
    round_trip = json.loads(json.dumps(data, allow_nan=False))
    assert round_trip["ac1"] == pytest.approx(2 / 6)
    assert round_trip["compound_both_at3"] is None
    assert round_trip["per_class"]["network_latency"]["precision"] is None
    assert round_trip["per_class"]["backend_slow"] == {
        "recall": 1.0,
        "precision": 0.25,
        "f1": pytest.approx(0.4),
        "support": 1,
        "predicted": 4,
    }
    assert round_trip["classes"] == list(ROOT_CAUSES)
    assert np.array_equal(np.array(round_trip["confusion"]), golden.confusion_array())


@pytest.mark.parametrize(
    ("scores", "true", "message"),
    [
        ([[0.5, 0.5]], ["backend_slow"], "n_cases x 11"),
        ([[*ranked(("backend_slow", 0.5))[:-1], 0.5]], ["backend_slow"], "sum to 1"),
        ([[-0.1, 1.1, *[0.0] * (N_CAUSES - 2)]], ["dns_latency"], "non-negative"),
        ([ranked(("backend_slow", 0.9))], ["slow_backend"], "unknown causes ['slow_backend']"),
        ([ranked(("backend_slow", 0.9))] * 2, ["backend_slow"], "1 entries for 2 cases"),
        (np.zeros((0, N_CAUSES)), [], "no cases"),
    ],
)
def test_bad_input_is_a_clear_error(scores: object, true: list[str], message: str) -> None:
    with pytest.raises(ScoringInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        score_cases(scores, true)  # type: ignore[arg-type]


def test_bad_scopes_and_cause_sets_are_clear_errors() -> None:
    scores = [ranked(("backend_slow", 0.9))]
    with pytest.raises(ScoringInputError, match="unknown scopes"):
        score_cases(scores, ["backend_slow"], true_scopes=["region"], predicted_scopes=[scopes_with()])
    with pytest.raises(ScoringInputError, match="predicted_scopes be 1 x 11"):
        score_cases(scores, ["backend_slow"], true_scopes=["target"], predicted_scopes=[["target"]])
    with pytest.raises(ScoringInputError, match="missing from its true_cause_sets"):
        score_cases(scores, ["backend_slow"], true_cause_sets=[{"dns_latency", "tls_slow"}])


def test_false_attribution_rate_is_the_emitted_share_of_healthy_windows() -> None:
    assert false_attribution_rate(np.array([True, False, False, False])) == 0.25
    assert math.isnan(false_attribution_rate(np.array([], dtype=bool)))
    with pytest.raises(ScoringInputError, match="bools"):
        false_attribution_rate([0.2, 0.7])


def test_attribution_delays_median_p90_and_within_one_window() -> None:
    delays = attribution_delays(
        onset_s=[0.0, 10.0, 20.0, 30.0],
        first_attribution_s=[5.0, 40.0, math.nan, 32.0],
        detection_s=[3.0, 15.0, 25.0, math.nan],
        window_s=10.0,
    )
    # Delays 5, 30, 2: median 5, p90 = 5 + 0.8 * 25. Detected: 0 (5 <= 13), 1 (40 > 25), 2 (never).
    assert (delays.n_incidents, delays.n_attributed, delays.n_detected) == (4, 3, 3)
    assert delays.median_delay_s == 5.0
    assert delays.p90_delay_s == pytest.approx(25.0)
    assert delays.within_one_window == pytest.approx(1 / 3)
    assert json.loads(json.dumps(to_json(delays), allow_nan=False))["within_one_window"] == pytest.approx(
        1 / 3
    )


def test_attribution_delays_without_attributions_or_detections_are_nan() -> None:
    delays = attribution_delays([0.0, 1.0], [math.nan, math.nan])
    assert delays.n_attributed == 0
    assert math.isnan(delays.median_delay_s) and math.isnan(delays.within_one_window)
    assert to_json(delays)["p90_delay_s"] is None
    with pytest.raises(ScoringInputError, match="onset"):
        attribution_delays([math.nan], [1.0])
