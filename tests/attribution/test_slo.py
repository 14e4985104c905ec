"""SLO evaluation: the burn-rate arithmetic pinned by hand-computed cases, SLO files and their
errors, the learned latency baseline, and the default objectives on a real lab recording."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from otelprobe.attribution.detection import score_detection
from otelprobe.attribution.latency_baseline import LatencyBaseline, learned_threshold_s
from otelprobe.attribution.records import read_records
from otelprobe.attribution.slo import (
    SeriesWindow,
    SLOEvaluator,
    burn_rate,
    evaluate_windows,
    windows_spanned,
)
from otelprobe.attribution.slo_file import (
    DEFAULT_SLOS,
    WORKBOOK_RULES,
    BaselineSettings,
    SLOFile,
    format_duration,
    load_slo_file,
    load_slo_text,
)
from otelprobe.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
WINDOW_NS = 2_000_000_000
T0_NS = 1_795_443_980_000_000_000  # a multiple of 2 s, as event-time windows are


@dataclass(frozen=True)
class Probe:
    """A ProbeRecord-like row: what the evaluator reads."""

    target: str
    vantage: str
    total_s: float
    success: bool


def probes(
    n: int, failed: int = 0, total_s: float = 0.05, target: str = "api", vantage: str = "eu-1"
) -> list[Probe]:
    return [Probe(target, vantage, total_s, i >= failed) for i in range(n)]


def slo_file(text: str) -> SLOFile:
    return load_slo_text(text, "test.yaml")


AVAILABILITY_999 = """
time_scale: 1/30
rules: [{long: 1h, short: 5m, factor: 14.4}]
slos: [{name: avail, availability: {objective: 0.999}}]
"""


def feed(evaluator: SLOEvaluator, windows: list[list[Probe]], first: int = 0) -> list[SeriesWindow]:
    """Feed windows in order; the (only) series' result of each."""
    out = []
    for index, window in enumerate(windows, start=first):
        (result,) = evaluator.evaluate(T0_NS + index * WINDOW_NS, window)
        out.append(result)
    return out


# --- the arithmetic ------------------------------------------------------------------------


def test_burn_rate_is_the_bad_fraction_over_the_error_budget() -> None:
    assert burn_rate(2, 100, 0.999) == pytest.approx(20.0)  # 2 % errors on a 0.1 % budget
    assert burn_rate(1, 100, 0.99) == pytest.approx(1.0)  # spending exactly on schedule
    assert burn_rate(0, 100, 0.999) == 0.0
    assert burn_rate(0, 0, 0.999) is None  # no probe, no data: never a division by zero


def test_rule_windows_scale_together_and_round_up_to_whole_windows() -> None:
    # The workbook's rules in production: 1 min windows, real time.
    assert [windows_spanned(d, 60, 1) for d in (3600, 300, 21600, 1800, 259200, 21600)] == [
        60, 5, 360, 30, 4320, 360
    ]  # fmt: skip
    # The compressed lab: 2 s windows, 1/30 -> 1 h is 120 s = 60 windows, 5 min is 10 s = 5.
    assert [windows_spanned(d, 2, 1 / 30) for d in (3600, 300, 21600, 1800, 259200, 21600)] == [
        60, 5, 360, 30, 4320, 360
    ]  # fmt: skip
    assert windows_spanned(3600, 7, 1 / 30) == 18  # 120 s / 7 s = 17.1 -> 18 whole windows
    assert windows_spanned(300, 2, 1 / 150) == 1  # never less than one window
    assert windows_spanned(300, 60, 1) == 5  # exact multiples are not rounded up by float noise


def test_two_percent_errors_burn_twenty_times_and_fire_the_page_rule() -> None:
    evaluator = SLOEvaluator(slo_file(AVAILABILITY_999), window_s=2.0)
    results = feed(evaluator, [probes(100, failed=2)] * 60)
    (rule,) = results[-1].slos[0].rules
    assert (rule.long_windows, rule.short_windows) == (60, 5)
    assert rule.long_burn == pytest.approx(20.0) and rule.short_burn == pytest.approx(20.0)
    assert rule.firing and results[-1].violating_slos == ("avail",)
    # 1 % errors burn 10 times: below 14.4, never fires.
    quiet = feed(SLOEvaluator(slo_file(AVAILABILITY_999), window_s=2.0), [probes(100, failed=1)] * 60)
    assert quiet[-1].slos[0].rules[0].long_burn == pytest.approx(10.0)
    assert not any(r.violating for r in quiet)


def test_both_windows_must_burn_and_the_alert_stops_when_the_short_window_drains() -> None:
    evaluator = SLOEvaluator(slo_file(AVAILABILITY_999), window_s=2.0)
    healthy = [probes(10)] * 59
    results = feed(evaluator, [*healthy, probes(10, failed=8)])
    rule = results[-1].slos[0].rules[0]
    # 8 bad of 600 over the long window: 1.33 % -> burn 13.3 (not above 14.4);
    # 8 of 50 over the short one: 16 % -> burn 160. Only the short window burns: no alert.
    assert rule.long_burn == pytest.approx(8 / 600 / 0.001)
    assert rule.short_burn == pytest.approx(8 / 50 / 0.001)
    assert not rule.firing
    # Two more failures: 10 / 600 = 1.67 % -> burn 16.7 on the long window too: it fires.
    (fired,) = feed(evaluator, [probes(10, failed=2)], first=60)
    assert fired.slos[0].rules[0].long_burn == pytest.approx(10 / 600 / 0.001)
    assert fired.violating
    # Clean windows: the long burn stays high (the failures are still in its hour), but the
    # short window holds them for 4 more windows and is clean on the 5th: the alert stops then.
    after = feed(evaluator, [probes(10)] * 6, first=61)
    assert [w.violating for w in after] == [True, True, True, True, False, False]
    assert after[4].slos[0].rules[0].long_burn == pytest.approx(10 / 600 / 0.001)
    assert after[4].slos[0].rules[0].short_burn == 0.0


def test_the_workbook_rules_each_catch_their_burn() -> None:
    workbook = slo_file("time_scale: 1/30\nslos: [{name: avail, availability: {objective: 0.999}}]")
    assert workbook.rules == list(WORKBOOK_RULES)
    assert [r.label for r in workbook.rules] == ["1h/5m", "6h/30m", "3d/6h"]
    # 0.7 % errors: burn 7 -> the 6x rule fires, the 14.4x one does not, the 1x one does.
    evaluator = SLOEvaluator(workbook, window_s=2.0)
    results = feed(evaluator, [probes(1000, failed=7)] * 400)
    fast, slow, ticket = results[-1].slos[0].rules
    assert [(r.long_windows, r.short_windows) for r in (fast, slow, ticket)] == [
        (60, 5),
        (360, 30),
        (4320, 360),
    ]
    assert fast.long_burn == pytest.approx(7.0) and not fast.firing
    assert slow.firing and ticket.firing


def test_time_scale_comes_from_the_argument_then_the_file() -> None:
    lab = slo_file(AVAILABILITY_999)
    assert SLOEvaluator(lab, window_s=2.0).time_scale == pytest.approx(1 / 30)
    assert SLOEvaluator(lab, window_s=2.0, time_scale=1.0).time_scale == 1.0
    production = slo_file("slos: [{name: a, availability: {objective: 0.99}}]")
    assert SLOEvaluator(production, window_s=60.0).time_scale == 1.0
    # The defaults count in windows: each stands for 5 minutes, whatever its length.
    assert SLOEvaluator(None, window_s=2.0).time_scale == pytest.approx(2 / 300)
    assert SLOEvaluator(None, window_s=60.0).time_scale == pytest.approx(60 / 300)
    (rule,) = SLOEvaluator(None, window_s=2.0).evaluate(T0_NS, probes(2))[0].slos[0].rules
    assert (rule.long_windows, rule.short_windows) == (12, 1)


# --- windows without data, order, selection ----------------------------------------------------


def test_a_window_without_probes_has_no_data_and_never_alerts() -> None:
    evaluator = SLOEvaluator(slo_file(AVAILABILITY_999), window_s=2.0)
    feed(evaluator, [probes(2, failed=2)])  # the series is known from now on
    later = evaluator.evaluate(T0_NS + 61 * WINDOW_NS, [])  # 60 windows skipped: the failures aged out
    assert len(later) == 1 and later[0].probes == 0
    status = later[0].slos[0]
    assert (status.events, status.bad) == (0, 0)
    assert status.rules[0].long_burn is None and status.rules[0].short_burn is None
    assert not later[0].violating


def test_skipped_windows_count_as_empty_ones() -> None:
    windows = [probes(10, failed=3), [], [], probes(10, failed=1)]
    explicit = feed(SLOEvaluator(slo_file(AVAILABILITY_999), window_s=2.0), windows)
    gapped = SLOEvaluator(slo_file(AVAILABILITY_999), window_s=2.0)
    first = gapped.evaluate(T0_NS, windows[0])
    last = gapped.evaluate(T0_NS + 3 * WINDOW_NS, windows[3])
    assert [first[0], last[0]] == [explicit[0], explicit[3]]


def test_windows_must_come_in_order() -> None:
    evaluator = SLOEvaluator(slo_file(AVAILABILITY_999), window_s=2.0)
    evaluator.evaluate(T0_NS, probes(1))
    with pytest.raises(ValueError, match="in order"):
        evaluator.evaluate(T0_NS, probes(1))


def test_a_series_gone_for_longer_than_every_rule_is_forgotten() -> None:
    evaluator = SLOEvaluator(slo_file(AVAILABILITY_999), window_s=2.0)
    evaluator.evaluate(T0_NS, probes(1))
    assert evaluator.series_count == 1
    for index in range(1, 62):
        evaluator.evaluate(T0_NS + index * WINDOW_NS, [])
    assert evaluator.series_count == 0


def test_selectors_choose_series_by_target_and_vantage_globs() -> None:
    slos = slo_file(
        """
time_scale: 1/30
slos:
  - {name: api, select: {targets: ["api-*"]}, availability: {objective: 0.99}}
  - {name: eu, select: {vantages: ["eu-*"]}, latency: {percentile: 95, threshold: 300ms}}
"""
    )
    records = [
        Probe("api-1", "eu-1", 0.1, True),
        Probe("api-1", "us-1", 0.1, True),
        Probe("web", "eu-2", 0.4, True),
        Probe("web", "us-1", 0.1, False),
    ]
    results = {w.series: [s.slo for s in w.slos] for w in SLOEvaluator(slos, 2.0).evaluate(T0_NS, records)}
    assert results == {
        ("api-1", "eu-1"): ["api", "eu"],
        ("api-1", "us-1"): ["api"],
        ("web", "eu-2"): ["eu"],
        ("web", "us-1"): [],
    }


def test_a_latency_objective_counts_slow_and_failed_probes_as_bad() -> None:
    slos = slo_file("slos: [{name: fast, latency: {percentile: 95, threshold: 300ms}}]")
    records = [
        Probe("api", "eu", 0.1, True),
        Probe("api", "eu", 0.31, True),  # slow
        Probe("api", "eu", 0.1, False),  # failed
        Probe("api", "eu", math.nan, True),  # no usable duration: neither good nor bad
    ]
    (window,) = SLOEvaluator(slos, 60.0).evaluate(T0_NS, records)
    status = window.slos[0]
    assert (status.events, status.bad, status.threshold_s) == (3, 2, 0.3)
    assert status.rules[0].long_burn == pytest.approx((2 / 3) / 0.05)


# --- the learned baseline --------------------------------------------------------------------


def test_learned_threshold_is_the_largest_of_its_three_bounds() -> None:
    settings = BaselineSettings()  # ratio 1.1, p99 + 10 ms, p50 + 10 ms
    spread = np.arange(10, 110) / 1000  # 10..109 ms: p50 59.5 ms, p99 108.01 ms
    assert learned_threshold_s(spread, settings) == pytest.approx(0.10801 + 0.010)
    loopback = np.full(100, 0.001)  # 1 ms every time: only the absolute margin keeps noise quiet
    assert learned_threshold_s(loopback, settings) == pytest.approx(0.011)
    steady = np.full(100, 0.500)  # 500 ms with no spread: 10 % above normal is slow
    assert learned_threshold_s(steady, settings) == pytest.approx(0.550)


def test_baseline_warms_up_learns_only_confirmed_healthy_windows_and_ignores_outliers() -> None:
    baseline = LatencyBaseline(BaselineSettings(warmup_samples=4, confirm_windows=2))
    for _ in range(3):
        baseline.observe([0.010, 0.011], violating=False)
    assert baseline.sample_count == 2  # the first window is learned once two more followed it
    assert baseline.threshold_s() is None  # still warming up
    baseline.observe([0.012, 0.013], violating=False)
    assert baseline.sample_count == 4 and baseline.threshold_s() is not None
    # The windows just before a violation are never learned, nor is the violating one.
    baseline.observe([0.5], violating=False)  # confirms [0.010, 0.011]: 6 samples
    assert baseline.sample_count == 6
    baseline.observe([0.5], violating=True)  # forgets [0.012, 0.013] and [0.5], still pending
    for _ in range(3):
        baseline.observe([], violating=False)
    assert baseline.sample_count == 6
    before = baseline.sample_count
    # A probe more than twice the median (and above the threshold) is not learned either.
    for _ in range(3):
        baseline.observe([0.200, 0.012], violating=False)
    assert baseline.sample_count == before + 1


def test_default_latency_waits_for_the_baseline_then_flags_slow_probes() -> None:
    evaluator = SLOEvaluator(None, window_s=2.0)
    normal = [Probe("api", "eu", 0.050 + 0.001 * (i % 5), True) for i in range(2)]
    results = feed(evaluator, [normal] * 13)
    # 20 probes to learn, each window learned once 2 more followed it: the 13th window is judged.
    assert [w.slos[1].events for w in results] == [0] * 12 + [2]
    assert results[-1].slos[1].threshold_s == pytest.approx(0.051 + 0.010)
    assert not any(w.violating for w in results)
    slow = [Probe("api", "eu", 0.200, True)] * 2
    (alert,) = feed(evaluator, [slow], first=13)
    assert alert.slos[1].bad == 2 and alert.violating_slos == ("latency",)


# --- offline and incremental agree ---------------------------------------------------------------


def test_evaluate_windows_equals_feeding_the_evaluator_window_by_window() -> None:
    rng = np.random.default_rng(7)
    rows = []
    for second in range(120):
        for target, vantage in (("api", "eu"), ("api", "us"), ("db", "eu")):
            slow = 60 <= second < 70 and target == "api"
            rows.append(
                {
                    "target": target,
                    "vantage": vantage,
                    "start_ns": T0_NS + second * 1_000_000_000 + int(rng.integers(0, 900_000_000)),
                    "total_s": (0.3 if slow else 0.05) + float(rng.uniform(0, 0.005)),
                    "success": not (target == "db" and second in (30, 31)),
                }
            )
    frame = pd.DataFrame(rows)
    offline = evaluate_windows(frame, window_s=2.0)
    assert len(offline) == 60 * 3
    evaluator = SLOEvaluator(None, window_s=2.0)
    live = []
    for index in range(60):
        start_ns = T0_NS + index * WINDOW_NS
        chunk = frame[(frame.start_ns >= start_ns) & (frame.start_ns < start_ns + WINDOW_NS)]
        live.extend(
            evaluator.evaluate(
                start_ns,
                [
                    Probe(*r)
                    for r in chunk[["target", "vantage", "total_s", "success"]].itertuples(index=False)
                ],
            )
        )
    assert offline["violating_slos"].tolist() == [",".join(w.violating_slos) for w in live]
    assert offline["latency.bad"].tolist() == [w.slos[1].bad for w in live]
    # The degradation is found on both api series and only there.
    flagged = offline[offline.violating]
    assert set(zip(flagged.target, flagged.vantage, strict=True)) == {
        ("api", "eu"),
        ("api", "us"),
        ("db", "eu"),
    }
    assert set(flagged[flagged.target == "db"]["violating_slos"]) == {"availability,latency"}
    api = flagged[flagged.target == "api"]
    assert (api.window_start_ns - T0_NS).min() // WINDOW_NS == 30  # the window the slow probes start
    assert list(offline.columns[:7]) == [
        "target", "vantage", "window_start_ns", "window_end_ns", "probes", "violating", "violating_slos"
    ]  # fmt: skip
    assert "latency.burn_long.1h/5m" in offline.columns


def test_evaluate_windows_of_nothing_is_an_empty_frame_with_the_columns() -> None:
    empty = pd.DataFrame({"target": [], "vantage": [], "start_ns": [], "total_s": [], "success": []})
    result = evaluate_windows(empty, window_s=2.0)
    assert result.empty and "availability.burn_short.1h/5m" in result.columns


# --- SLO files -----------------------------------------------------------------------------------


def test_examples_load_and_the_defaults_file_is_the_defaults() -> None:
    assert load_slo_file(ROOT / "examples" / "slo" / "defaults.yaml") == DEFAULT_SLOS
    api = load_slo_file(ROOT / "examples" / "slo" / "api.yaml")
    assert [s.name for s in api.slos] == ["api-availability", "api-latency", "edge-latency"]
    assert api.slos[1].latency is not None and api.slos[1].latency.threshold_s == 0.3
    assert api.slos[1].objective == 0.95
    assert [r.label for r in api.rules_of(api.slos[2])] == ["1h/5m"]


def test_durations_format_as_written() -> None:
    assert [format_duration(s) for s in (3600, 300, 259200, 90, 0.25)] == ["1h", "5m", "3d", "90s", "250ms"]


BAD_FILE = """\
time_scale: 1/0
rules:
  - {long: 5m, short: 1h, factor: 14.4}
  - {long: 1 hour, short: 5m, factor: 2}
slos:
  - name: api availability
    select: {targets: [api-*], vantage: [eu-*]}
    availability: {objective: 99.9}
  - name: api-latency
    latency: {percentile: 95}
  - name: both
    availability: {objective: 0.99}
    latency: {percentile: 99, threshold: 300ms}
  - name: fast
    latency: {percentile: 99, threshold: soon}
"""


def test_an_invalid_file_reports_every_problem_with_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "slo.yaml"
    path.write_text(BAD_FILE)
    with pytest.raises(ConfigError) as info:
        load_slo_file(path)
    assert [str(p).removeprefix(f"{path}:") for p in info.value.problems] == [
        "1: time_scale: invalid fraction '1/0': expected e.g. 1/30 or 0.5",
        "3: rules[0]: short must not be longer than long",
        "4: rules[1].long: invalid duration '1 hour': expected e.g. '250ms', '5s', '1m30s'",
        "6: slos[0].name: use letters, digits, '.', '_' and '-' (it names columns and spans)",
        "7: slos[0].select.vantage: unknown key 'vantage'; did you mean 'vantages'?",
        "8: slos[0].availability.objective: objective is a fraction, e.g. 0.999 for 99.9 %",
        "10: slos[1].latency.threshold: required, but missing",
        "11: slos[2]: give exactly one of availability or latency",
        "15: slos[3].latency.threshold: invalid duration 'soon': expected e.g. '250ms', '5s', '1m30s',"
        " or 'baseline'",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("slos: []\n", "test.yaml:1: slos: give at least one SLO"),
        ("- a\n", "test.yaml:1: an SLO file must be a mapping (slos:, rules:, ...)"),
        (
            "slos:\n  - {name: a, availability: {objective: 0.9}}\n"
            "  - {name: a, availability: {objective: 0.8}}\n",
            "test.yaml:1: slos: duplicate SLO names: a",
        ),
        (
            "window_represents: 5m\ntime_scale: 0.5\nslos: [{name: a, availability: {objective: 0.9}}]\n",
            "test.yaml:1: give time_scale or window_represents, not both",
        ),
        ("slos:\n  - name: x\n   availability: 1\n", "test.yaml:3:4: YAML syntax error: ..."),
        (
            "slos: [{name: a, availability: {objective: 0.9}, rules: [{long: 1h, short: 5m, factor: 0}]}]\n",
            "test.yaml:1: slos[0].rules[0].factor: must be greater than 0, got 0 (int)",
        ),
    ],
)
def test_each_rule_of_the_file_has_its_message(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_slo_text(text, "test.yaml")
    (problem,) = info.value.problems
    if expected.endswith("..."):
        assert str(problem).startswith(expected.removesuffix("..."))
    else:
        assert str(problem) == expected


def test_a_missing_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read SLO file"):
        load_slo_file(tmp_path / "none.yaml")


# --- the defaults on a real recording ----------------------------------------------------------


def test_default_objectives_find_the_held_out_recordings_incidents_with_rare_false_alarms() -> None:
    # Measured (docs/attribution.md): eval-202 recall 0.80, delay median 1.8 s, false alarms on
    # 0.95 % of healthy series-windows; the bounds leave slack for other machines' noise.
    recording = ROOT / "data" / "lab" / "eval-202"
    records, _ = read_records(recording / "traces.jsonl.gz")
    windows = evaluate_windows(records, window_s=2.0)
    labels = [json.loads(line) for line in (recording / "labels.jsonl").read_text().splitlines()]
    report = score_detection(windows, labels)
    assert report.incidents == 60
    assert report.recall >= 0.7
    assert report.delay_median_s <= 3.0
    assert report.false_alarm_rate <= 0.02
    # Gross faults are always found.
    for cause in ("target_unreachable", "certificate_invalid", "http_error", "packet_loss"):
        assert report.recall_by_cause[cause] >= 0.9, cause


def test_detection_scoring_counts_recall_delay_and_false_alarms_by_hand() -> None:
    def row(index: int, vantage: str, violating: bool) -> dict[str, object]:
        start = T0_NS + index * WINDOW_NS
        window = {"window_start_ns": start, "window_end_ns": start + WINDOW_NS}
        return {"target": "api", "vantage": vantage, **window, "violating": violating}

    # A fault on api@eu during windows 2-4 (from 0.5 s into window 2), found in window 3; one
    # false alarm on api@us in window 8; a second fault on api@us (windows 5-6) never found.
    windows = pd.DataFrame(
        [row(i, "eu", i == 3) for i in range(10)] + [row(i, "us", i == 8) for i in range(10)]
    )
    labels = [
        {"start_unix_nano": T0_NS + 2 * WINDOW_NS + 500_000_000, "end_unix_nano": T0_NS + 5 * WINDOW_NS,
         "affected": [["api", "eu"]], "cause": "backend_slow"},
        {"start_unix_nano": T0_NS + 5 * WINDOW_NS, "end_unix_nano": T0_NS + 7 * WINDOW_NS,
         "affected": [["api", "us"]], "cause": "dns_latency"},
    ]  # fmt: skip
    report = score_detection(windows, labels, quiet_s=2.0)
    assert (report.incidents, report.detected, report.recall) == (2, 1, 0.5)
    assert report.delay_median_s == pytest.approx(3.5)  # window 3 ends 8 s in; the fault began at 4.5 s
    assert (report.healthy_windows, report.false_alarm_windows) == (7 + 8, 1)
    # quiet: not within 2 s after a fault either (window 5 on eu, window 7 on us are not quiet)
    assert (report.quiet_windows, report.quiet_false_alarm_windows) == (6 + 7, 1)
    assert report.recall_by_cause == {"backend_slow": 1.0, "dns_latency": 0.0}


def test_detection_command_needs_a_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from otelprobe.attribution.detection import main

    assert main([str(tmp_path)]) == 2
    assert "no traces.jsonl" in capsys.readouterr().err


def test_the_violating_verdicts_built_first_are_those_of_the_whole_window() -> None:
    """`evaluate` builds the violating series' SeriesWindows at once and everyone else's when
    first read; both views of every window agree, with SLOs that select only some series, a
    learned latency threshold and series coming and going."""
    slos = slo_file(
        """
time_scale: 1/30
rules: [{long: 1h, short: 5m, factor: 14.4}, {long: 6h, short: 30m, factor: 6}]
slos:
  - {name: api, select: {targets: ["api-*"]}, availability: {objective: 0.99}}
  - {name: eu, select: {vantages: ["eu-*"]}, latency: {percentile: 95, threshold: 300ms}}
  - {name: learned, latency: {percentile: 90, threshold: baseline}}
"""
    )
    rng = np.random.default_rng(3)
    evaluator = SLOEvaluator(slos, 2.0)
    series = [(t, v) for t in ("api-1", "api-2", "web") for v in ("eu-1", "us-1", "eu-2")]
    seen_violating = 0
    for index in range(120):
        window = []
        for number, (target, vantage) in enumerate(series):
            if index > 60 and number % 3 == index % 3:
                continue  # some series miss some windows
            broken = 40 < index < 80 and number in (1, 5, 8)  # failing and slow for a while
            for _ in range(3):
                slow = 0.5 if broken else 0.05 * rng.uniform(0.8, 1.2)
                window.append(Probe(target, vantage, slow, not (broken and rng.random() < 0.5)))
        verdicts = evaluator.evaluate(T0_NS + index * WINDOW_NS, window)
        violating = verdicts.violating  # built before the rest
        everything = list(verdicts)
        assert len(verdicts) == len(everything) == len(series)
        assert list(violating) == [w for w in everything if w.violating]
        assert [w.series for w in everything] == sorted(series)
        for w in everything:  # the columns' verdict is the rules' own arithmetic
            assert [s.slo for s in w.slos if s.violating] == list(w.violating_slos)
            assert all(s.violating == any(r.firing for r in s.rules) for s in w.slos)
        seen_violating += len(violating)
    assert seen_violating > 0, "the broken stretch must violate something"
