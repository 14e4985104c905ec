"""Evidence in words: each feature said the way an SRE would say it, with the window's own numbers
and units, never "nan", and only the features that pushed a cause up."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from otelprobe.attribution.dataset import WindowTable
from otelprobe.attribution.evidence import describe, top_evidence
from otelprobe.attribution.features import FEATURE_NAMES

# The first test to ask for the model may train it (conftest.py) on a shared machine.
pytestmark = pytest.mark.timeout(300)

NAN = math.nan


def window(**values: Any) -> dict[str, Any]:
    """A hand-made window row: context plus the given features."""
    row: dict[str, Any] = {"target": "api", "vantage": "eu-1", "kind": "http", "n": 2, "n_fail": 0}
    row.update(values)
    return row


def test_a_slower_phase_reads_as_its_change_over_the_series_baseline() -> None:
    row = window(ttfb_p50_delta_ms=180.0, ttfb_p90_delta_ms=190.0, ttfb_p50_mag=math.log1p(180))
    assert describe("ttfb_p50_mag", row) == "TTFB p50 +180 ms over this series' baseline (p90 +190 ms)"
    # p90 within 1 ms of p50 is not worth saying.
    row = window(dns_p50_delta_ms=4.2, dns_p90_delta_ms=4.6, dns_p50_mag=math.log1p(4.2))
    assert describe("dns_p50_mag", row) == "DNS lookup p50 +4.2 ms over this series' baseline"
    # Over a second: seconds.
    row = window(connect_p50_delta_ms=1012.0, connect_p90_delta_ms=2030.0)
    assert describe("connect_p50_mag", row) == (
        "TCP connect p50 +1.01 s over this series' baseline (p90 +2.03 s)"
    )
    row = window(tls_p50_delta_ms=-3.0, tls_p90_delta_ms=-2.5)
    assert describe("tls_p50_mag", row) == "TLS handshake p50 -3.0 ms over this series' baseline"


def test_phase_shapes_say_round_trips_uniformity_and_spread() -> None:
    row = window(connect_p50_delta_ms=80.0, connect_p90_delta_ms=82.0, connect_p50_rtt=2.0)
    assert describe("connect_p50_rtt", row) == (
        "TCP connect p50 +80 ms over this series' baseline (p90 +82 ms), +2.0× the series' round-trip time"
    )
    row = window(ttfb_p50_delta_ms=300.0, ttfb_p90_delta_ms=302.0, ttfb_uniformity=0.98)
    assert describe("ttfb_uniformity", row).endswith("on every probe alike (p10/p90 0.98)")
    assert describe("transfer_spread_ratio", window(transfer_spread_ratio=math.log1p(4.0))) == (
        "transfer spread 4.0× its usual jitter"
    )
    assert describe("tls_present", window(tls_present=0.5)) == "TLS handshake reached by 1 of 2 probes"
    assert describe("dns_p50_mag", window()) == "no DNS lookup this window"


def test_neighbours_read_as_counts_of_other_targets_or_vantages() -> None:
    row = window(vantage_ttfb_share=0.6, vantage_ttfb_count=3, vantage_peers=5)
    assert describe("vantage_ttfb_share", row) == (
        "3 of 5 other targets seen from eu-1 with a slower TTFB in this window"
    )
    row = window(target_fail_share=1.0, target_fail_count=2, target_peers=2)
    assert describe("target_fail_share", row) == "2 of 2 other vantages of api failing in this window"
    row = window(vantage_slow_share=0.0, vantage_slow_count=0, vantage_peers=4)
    assert (
        describe("vantage_slow_share", row) == "0 of 4 other targets seen from eu-1 degraded in this window"
    )
    row = window(target_fail_recent_share=0.5, target_fail_recent_count=1, target_peers=2)
    assert describe("target_fail_recent_share", row) == (
        "1 of 2 other vantages of api failing in this or a recent window"
    )


def test_failures_read_as_probe_counts_by_class_detail_phase_and_status() -> None:
    row = window(n=4, n_fail=3, tls_error_share=0.75, detail_cert_share=0.75, failed_in_tls_share=0.75)
    assert describe("tls_error_share", row) == "3 of 4 probes failed with tls_error"
    assert describe("detail_cert_share", row) == "3 of 4 probes failed with a cert error detail"
    assert describe("failed_in_tls_share", row) == "3 of 4 probes failed in the TLS handshake phase"
    assert describe("status_5xx_share", window(status_5xx_share=0.5)) == "1 of 2 probes answered 5xx"
    assert describe("success_ratio", window(success_ratio=0.25)) == "25% of probes succeeded"


def test_where_the_added_time_went() -> None:
    row = window(
        added_ms=7.6, dns_delta_share=0.55, dns_p50_delta_ms=4.2, dns_p90_delta_ms=6.5, dominant_dns_share=1.0
    )
    assert describe("dns_delta_share", row) == (
        "DNS lookup holds 55% of the +7.6 ms added to the probe "
        "(DNS lookup p50 +4.2 ms over this series' baseline (p90 +6.5 ms))"
    )
    assert (
        describe("dominant_dns_share", row) == "DNS lookup is where most slowed probes lost their time (100%)"
    )
    assert describe("added_mag", window(added_ms=250.0)) == "+250 ms added to the probe over its baseline"


@pytest.fixture(scope="module")
def symptomatic_row(eval_table: WindowTable) -> dict[str, Any]:
    """A real window: warm, failing, from the held-out recording."""
    frame = eval_table.frame
    rows = frame[frame["warm"] & frame["symptomatic"] & (frame["n_fail"] > 0)]
    return dict(rows.iloc[0].to_dict())


def _assert_plain_words(feature: str, text: str) -> None:
    assert text and not text.startswith(f"{feature} ="), text
    assert not re.search(r"\bnan\b|n/a|\binf\b", text, re.IGNORECASE), text
    # Plain words: no snake_case feature names.
    assert not re.search(r"\b[a-z]+_(share|mag|rtt|count|delta|ratio|recent)\b", text), text


@pytest.mark.parametrize("feature", FEATURE_NAMES)
def test_every_feature_of_a_real_window_reads_as_words(feature: str, symptomatic_row: dict[str, Any]) -> None:
    """A feature added to the schema without words would show as `name = 0.5` to the user."""
    _assert_plain_words(feature, describe(feature, symptomatic_row))


@pytest.mark.parametrize("feature", FEATURE_NAMES)
def test_a_missing_value_never_reads_as_nan(feature: str, symptomatic_row: dict[str, Any]) -> None:
    """LightGBM gives a missing (NaN) feature a contribution too, so it can be top evidence
    ("TCP connect holds nan% of the +0.0 ms added" was seen on eval-202): it must read as words."""
    _assert_plain_words(feature, describe(feature, {**symptomatic_row, feature: NAN}))


def test_top_evidence_keeps_the_strongest_positive_contributions_in_order() -> None:
    row = window(ttfb_p50_delta_ms=180.0, ttfb_p90_delta_ms=190.0, ttfb_p50_mag=5.2, success_ratio=1.0)
    contributions = {
        "ttfb_p50_mag": 2.0,
        "success_ratio": 0.5,
        "dns_p50_mag": -1.0,  # pushed the cause down: not evidence for it
        "connect_p50_mag": 0.0,
        "tls_p50_mag": NAN,
        "added_mag": 0.7,
        "ttfb_uniformity": 0.1,
        "kind_code": 0.05,
    }
    evidence = top_evidence(contributions, row)
    assert [e.feature for e in evidence] == ["ttfb_p50_mag", "added_mag", "success_ratio", "ttfb_uniformity"]
    assert evidence[0].to_json() == {
        "feature": "ttfb_p50_mag",
        "contribution": 2.0,
        "value": 5.2,
        "text": "TTFB p50 +180 ms over this series' baseline (p90 +190 ms)",
    }
    assert evidence[1].value is None  # added_mag is not in the row: no number invented
    assert top_evidence({"dns_p50_mag": -1.0}, row) == []
