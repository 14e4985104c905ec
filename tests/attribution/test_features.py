"""Window features on probe records shaped like the faults they stand for: each mechanism of
DESIGN §5 must show in the feature meant to carry it, whatever the series' round-trip time, and no
feature may depend on a target's or vantage's name."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from otelprobe.attribution.features import FEATURE_NAMES, FeatureEngine, feature_matrix
from otelprobe.attribution.labels import AMBIGUOUS, HEALTHY, window_labels
from otelprobe.attribution.records import ProbeRecord, records_frame
from otelprobe.attribution.windows import assign_windows, auto_window_s
from tests.support.probe_records import NAN, SECOND_NS, T0_NS, https_probe, offline_and_live, series


def features_of(records: list[ProbeRecord], window_s: float = 2.0) -> pd.DataFrame:
    frame = assign_windows(records_frame(records), window_s)
    return FeatureEngine().features(frame, window_s)


def last_window(features: pd.DataFrame) -> pd.Series:
    return features.sort_values("window_start_ns").iloc[-1]


@pytest.mark.parametrize("rtt_s", [0.003, 0.03, 0.2])
def test_a_longer_path_moves_every_round_trip_phase_alike(rtt_s: float) -> None:
    added = rtt_s  # the path's round trip doubles
    row = last_window(
        features_of(series(rtt_s, 40, 4, {p: added for p in ("dns", "connect", "tls", "ttfb")}))
    )
    assert row["shift_coherence"] == pytest.approx(1.0, abs=0.05)
    assert row["connect_p50_rtt"] == pytest.approx(1.0, abs=0.1)  # one more round trip
    for phase in ("dns", "connect", "tls", "ttfb"):
        assert row[f"{phase}_delta_share"] == pytest.approx(0.25, abs=0.03)
        assert row[f"{phase}_uniformity"] == pytest.approx(1.0, abs=0.05)
    assert row["stall_share"] == 0
    assert row["symptomatic"]


@pytest.mark.parametrize("rtt_s", [0.001, 0.05])
def test_a_slow_backend_adds_to_ttfb_only(rtt_s: float) -> None:
    row = last_window(features_of(series(rtt_s, 40, 4, {"ttfb": 0.2})))
    assert row["ttfb_delta_share"] == pytest.approx(1.0, abs=0.02)
    assert row["connect_delta_share"] == pytest.approx(0.0, abs=0.02)
    assert row["ttfb_p50_delta_ms"] == pytest.approx(200, abs=1)
    assert row["dominant_ttfb_share"] == 1.0
    assert math.isnan(row["shift_coherence"]) or row["shift_coherence"] < 0.1


def test_a_slow_handshake_shows_in_tls_against_connect() -> None:
    row = last_window(features_of(series(0.01, 40, 4, {"tls": 0.05})))
    assert row["tls_delta_share"] == pytest.approx(1.0, abs=0.02)
    assert row["tls_connect_ratio_change"] > math.log(4)


def test_one_stalled_probe_is_a_stall_not_a_shift() -> None:
    records = series(0.01, 40, 0, {})
    stalled = https_probe("api", "eu", 40.1, 0.01, tls_s=0.01 + 0.21)  # a retransmission timeout
    normal = https_probe("api", "eu", 41.1, 0.01)
    row = last_window(features_of([*records, stalled, normal]))
    assert row["stall_share"] == pytest.approx(0.5)
    assert row["tls_uniformity"] < 0.2


def _connect_timeout(start_s: float) -> ProbeRecord:
    return https_probe(
        "api", "eu", start_s, 0.01, error="connect_timeout", detail="timeout", failed_phase="tcp.connect"
    )


def test_a_series_remembers_probes_that_got_through_late_and_windows_that_all_failed() -> None:
    healthy = series(0.01, 40, 0, {})
    # Loss: a window with a stalled probe that still succeeded, then one whose probes all time out.
    stalled = https_probe("api", "eu", 40.1, 0.01, tls_s=0.01 + 0.21)
    lossy = [
        *healthy,
        stalled,
        https_probe("api", "eu", 41.1, 0.01),
        _connect_timeout(42.1),
        _connect_timeout(43.1),
    ]
    rows = features_of(lossy).sort_values("window_start_ns")
    assert rows.iloc[-2]["stall_share"] == 0.5
    assert rows.iloc[-2]["own_recent_through_after_stall"] == 0  # this window's own stall is no history
    assert rows.iloc[-1]["own_recent_through_after_stall"] == 1  # the failing window remembers it
    assert rows.iloc[-1]["own_recent_all_failed"] == 0
    # A dead target: every probe of two windows fails; only the second remembers the first.
    dead = features_of([*healthy, *(_connect_timeout(40.1 + i) for i in range(4))])
    dead = dead.sort_values("window_start_ns")
    assert list(dead["own_recent_all_failed"].tail(2)) == [0, 1]
    assert (dead["own_recent_through_after_stall"].tail(2) == 0).all()


def test_failures_are_counted_by_class_detail_and_phase() -> None:
    records = series(0.01, 40, 0, {})
    bad = [
        https_probe(
            "api",
            "eu",
            40.1 + i,
            0.01,
            error="tls_error",
            detail="certificate_expired",
            failed_phase="tls.handshake",
        )
        for i in range(2)
    ]
    row = last_window(features_of([*records, *bad]))
    assert row["tls_error_share"] == 1.0
    assert row["detail_cert_share"] == 1.0
    assert row["failed_in_tls_share"] == 1.0
    assert row["success_ratio"] == 0.0


def test_the_baseline_does_not_learn_an_incident() -> None:
    """A long fault keeps its features: the baseline learns only from healthy-looking windows."""
    rows = features_of(series(0.01, 40, 20, {"ttfb": 0.1})).sort_values("window_start_ns")
    faulty = rows.tail(8)
    assert (faulty["ttfb_p50_delta_ms"] > 95).all()


def test_a_lasting_level_shift_is_learned_afresh() -> None:
    rows = features_of(series(0.01, 40, 100, {"ttfb": 0.1})).sort_values("window_start_ns")
    assert rows.tail(3)["ttfb_p50_delta_ms"].abs().max() < 5


def test_series_warm_up_before_their_deltas_count() -> None:
    rows = features_of(series(0.01, 10, 0, {})).sort_values("window_start_ns")
    assert not rows.iloc[0]["warm"]
    assert math.isnan(rows.iloc[0]["ttfb_p50_delta_ms"])
    assert rows.iloc[-1]["warm"]


def test_neighbours_in_the_same_window_give_scope_evidence() -> None:
    records = []
    for target in ("a", "b", "c"):  # one vantage, every target slower: near the prober
        records += series(0.01, 40, 4, {p: 0.02 for p in ("dns", "connect", "tls", "ttfb")}, target, "eu")
    records += series(0.01, 44, 0, {}, "a", "us")  # the same target from elsewhere is fine
    rows = features_of(records)
    last = rows[rows["window_start_ns"] == rows["window_start_ns"].max()].set_index(["target", "vantage"])
    assert last.loc[("a", "eu"), "vantage_slow_share"] == 1.0  # b and c from eu
    assert last.loc[("a", "eu"), "target_slow_share"] == 0.0  # a from us
    assert last.loc[("a", "us"), "target_slow_share"] == 1.0


def _vantage_with_one_large_body(fault: dict[str, float], large_body_fault: dict[str, float]) -> pd.Series:
    """The last window of target `a` on a vantage where `big` fetches a large body and `c` a small
    one, every series with `fault` and `big` also with `large_body_fault`."""
    records = series(0.01, 40, 4, fault, "a", "eu") + series(0.01, 40, 4, fault, "c", "eu")
    records += series(0.01, 40, 4, {**fault, **large_body_fault}, "big", "eu")
    rows = features_of(records)
    last = rows[rows["window_start_ns"] == rows["window_start_ns"].max()]
    return last.set_index(["target", "vantage"]).loc[("a", "eu")]


def test_a_longer_path_slowing_a_large_body_is_not_a_narrower_pipe() -> None:
    # +10 ms per round trip; the large body needs 4 slow-start rounds, so 40 ms more transfer
    longer_path = {p: 0.01 for p in ("dns", "connect", "tls", "ttfb")}
    row = _vantage_with_one_large_body(longer_path, {"transfer": 0.04})
    assert row["vantage_connect_share"] == 1.0  # both neighbours' handshakes are slower
    assert row["vantage_transfer_share"] == 0.0  # ... and so is big's body, by the path alone


def test_a_narrower_pipe_slows_the_large_body_alone() -> None:
    row = _vantage_with_one_large_body({}, {"transfer": 0.3})
    assert row["vantage_transfer_share"] == 0.5  # big, of big and c
    assert row["vantage_connect_share"] == 0.0


def test_a_transfer_far_beyond_the_paths_round_trips_is_still_a_slower_transfer() -> None:
    # a queue in front of a rate limit delays the handshake a little and the body a lot
    queued = {"connect": 0.005, "tls": 0.005}
    row = _vantage_with_one_large_body(queued, {"transfer": 0.5})
    assert row["vantage_transfer_share"] == 0.5


def test_features_do_not_depend_on_names() -> None:
    records = series(0.02, 40, 4, {"ttfb": 0.05})
    renamed = [replace(r, target="never-seen", vantage="mars-1") for r in records]
    a, b = feature_matrix(features_of(records)), feature_matrix(features_of(renamed))
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(np.nan_to_num(a), np.nan_to_num(b))


def test_the_schema_has_no_absolute_latency_or_identity() -> None:
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES))
    for name in FEATURE_NAMES:
        assert "target" != name and "vantage" != name
        assert not name.endswith(("_delta_ms", "_p50_ms", "_base")), name


def test_offline_and_window_by_window_give_the_same_features() -> None:
    """The live sidecar feeds one window slot at a time; the result must equal the offline pass."""
    records = series(0.01, 30, 6, {"ttfb": 0.05}) + series(0.02, 30, 6, {}, "b", "eu")
    offline, live = offline_and_live(assign_windows(records_frame(records), 2.0))
    np.testing.assert_allclose(
        np.nan_to_num(feature_matrix(offline)), np.nan_to_num(feature_matrix(live)), rtol=1e-9, atol=1e-9
    )


def test_window_length_follows_the_probe_interval() -> None:
    assert auto_window_s(records_frame(series(0.01, 30, 0, {}))) == 2.0
    slow = [replace(r, start_ns=T0_NS + i * 30 * SECOND_NS) for i, r in enumerate(series(0.01, 10, 0, {}))]
    assert auto_window_s(records_frame(slow)) == 60.0


def test_window_labels_majority_healthy_and_ambiguous() -> None:
    healthy = https_probe("a", "eu", 0.1, 0.01)
    labeled = https_probe("a", "eu", 2.1, 0.01, lab_cause="backend_slow")
    edge = https_probe("a", "eu", 4.1, 0.01, lab_cause="backend_slow")
    records = [healthy, replace(healthy, start_ns=healthy.start_ns + SECOND_NS // 2), labeled]
    records += [edge, https_probe("a", "eu", 4.6, 0.01), https_probe("a", "eu", 5.1, 0.01)]
    labels = window_labels(assign_windows(records_frame(records), 2.0)).sort_values("window_start_ns")
    assert list(labels["label"]) == [HEALTHY, "backend_slow", AMBIGUOUS]


def test_a_name_resolving_to_an_address_the_series_never_used_is_address_changed() -> None:
    # A wrong DNS answer: the probes connect to an address this series never had, and fail there.
    healthy = [replace(p, peer_address="192.0.2.1") for p in series(0.01, healthy_s=20, faulty_s=0, fault={})]
    wrong = [
        replace(
            https_probe("api", "eu", second + 0.1, 0.01, error="connect_refused", failed_phase="tcp.connect"),
            peer_address="192.0.2.7",
        )
        for second in range(20, 24)
    ]
    features = features_of(healthy + wrong).sort_values("window_start_ns")
    changed = features["address_changed"].tolist()
    assert changed == [0.0] * 10 + [1.0, 1.0]  # failing windows never teach the baseline the address
    assert features_of(series(0.01, 20, 4, {}))["address_changed"].eq(0.0).all()  # none recorded


def test_a_late_dns_answer_is_not_a_lost_query() -> None:
    """dns_retry_share counts queries lost and asked again. A configured resolver's retransmit
    answered by the first query (a longer path, a queue) is not one; an answer to the second try
    is; without the resolver's word (system resolver) a retransmit or a 150 ms step still counts."""
    healthy = series(0.010, 20, 0, {})

    def window_with(answered: float, attempts: float, dns_added: float = 0.0) -> float:
        start = 20
        late = [
            replace(
                https_probe("api", "eu", start + i + 0.1, 0.010, rng=random.Random(i)),
                dns_attempts=attempts,
                dns_answered_attempt=answered,
                dns_s=0.001 + dns_added,
            )
            for i in range(2)
        ]
        return float(last_window(features_of(healthy + late))["dns_retry_share"])

    assert window_with(answered=1.0, attempts=2.0, dns_added=0.3) == 0.0
    assert window_with(answered=2.0, attempts=2.0, dns_added=0.3) == 1.0
    assert window_with(answered=NAN, attempts=2.0) == 1.0
    assert window_with(answered=NAN, attempts=1.0, dns_added=0.3) == 1.0
    assert window_with(answered=NAN, attempts=1.0) == 0.0
