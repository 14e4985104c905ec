"""The promotion gate's rule (promotion.decide): a candidate may lose at most `tolerance.ac1` of
AC@1 on any slice — or one window, on a slice so small that one window is more than that."""

from __future__ import annotations

from otelprobe.sidecar.promotion import SliceScores, Tolerance, decide

TOLERANCE = Tolerance(ac1=0.01, false_attributions=0.005)


def scores(right: int, cases: int, false_rate: float = 0.0, healthy: int = 0) -> SliceScores:
    return SliceScores(right / cases, cases, false_rate, healthy, {})


def lab(right: int = 950) -> tuple[SliceScores, SliceScores]:
    return scores(950, 1000, 0.004, 2000), scores(right, 1000, 0.004, 2000)


def test_a_large_slice_allows_the_tolerance_and_no_more() -> None:
    assert decide({"lab": lab(940)}, TOLERANCE)[0]  # one point lost: allowed
    passed, reason = decide({"lab": lab(939)}, TOLERANCE)
    assert not passed
    assert reason.startswith("lab AC@1 0.939 vs live 0.950 on 1000 cases (worse by more than 0.01")


def test_one_window_of_a_small_slice_does_not_decide_it() -> None:
    # 6 held-out feedback windows: one more wrong is 17 points, within "one case".
    passed, reason = decide({"lab": lab(), "feedback": (scores(5, 6), scores(4, 6))}, TOLERANCE)
    assert passed, reason
    assert "feedback AC@1 0.667 vs live 0.833 on 6 cases (ok)" in reason
    # Two windows are two cases: refused.
    passed, reason = decide({"lab": lab(), "feedback": (scores(5, 6), scores(3, 6))}, TOLERANCE)
    assert not passed and "feedback AC@1 0.500 vs live 0.833 on 6 cases (worse by more than" in reason


def test_false_attributions_and_a_missing_lab_slice_still_refuse() -> None:
    worse = (scores(950, 1000, 0.004, 2000), scores(960, 1000, 0.010, 2000))
    passed, reason = decide({"lab": worse}, TOLERANCE)
    assert not passed and "lab false attributions 1.00% vs live 0.40% of 2000 healthy windows" in reason
    assert decide({"feedback": (scores(5, 6), scores(6, 6))}, TOLERANCE) == (
        False,
        "no lab evaluation cases: the gate cannot compare the models",
    )
