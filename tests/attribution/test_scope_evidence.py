"""Cause-specific neighbour evidence (attribution/scope_evidence.py) and how the scope model reads it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from otelprobe.attribution.model import LEGACY_SCOPE_FEATURES, SCOPE_FEATURES, scope_inputs
from otelprobe.attribution.scope_evidence import CAUSE_EVIDENCE_FEATURES, add_cause_evidence, column_of
from otelprobe.causes import ROOT_CAUSES

_SHARES = (
    "dns_error_share",
    "stall_share",
    "connect_retry_share",
    "connect_timeout_share",
    "timeout_share",
    "detail_cert_share",
    "http_status_share",
    "protocol_error_share",
    "connect_refused_share",
    "assertion_failed_share",
)
_FLAGS = ("sym_dns", "sym_connect", "sym_transfer", "sym_tls", "sym_ttfb")


def _window(rows: list[dict[str, object]]) -> pd.DataFrame:
    """One window slot of a window table: every share and symptom 0 unless a row says otherwise."""
    full = []
    for row in rows:
        base: dict[str, object] = {"window_start_ns": 0, **dict.fromkeys(_SHARES, 0.0)}
        base.update(dict.fromkeys(_FLAGS, False))
        base.update(row)
        full.append(base)
    return pd.DataFrame(full)


def _vantage_with_5xx() -> pd.DataFrame:
    # One vantage probing three HTTP targets (two answer 5xx), a DNS and a TCP target; the first
    # HTTP target is also probed from a second vantage, where it answers fine.
    return _window(
        [
            {"target": "web", "vantage": "v1", "kind": "http", "http_status_share": 0.5},
            {"target": "api", "vantage": "v1", "kind": "http", "http_status_share": 1.0},
            {"target": "img", "vantage": "v1", "kind": "http"},
            {"target": "ns", "vantage": "v1", "kind": "dns"},
            {"target": "db", "vantage": "v1", "kind": "tcp"},
            {"target": "web", "vantage": "v2", "kind": "http"},
        ]
    )


def test_a_vantage_wide_5xx_counts_among_the_targets_that_can_answer_one() -> None:
    frame = add_cause_evidence(_vantage_with_5xx())
    web = frame.iloc[0]
    # Of web's other targets from v1, 1 of 4 answered 5xx; of those probed over HTTP, 1 of 2.
    assert web[column_of("vantage_same_cause_share", "http_error")] == 0.25
    assert web[column_of("vantage_kin_same_cause_share", "http_error")] == 0.5
    # web's other vantage sees no 5xx: the evidence says vantage, not target.
    assert web[column_of("target_same_cause_share", "http_error")] == 0.0
    # Another cause's symptom is not this cause's evidence.
    assert web[column_of("vantage_same_cause_share", "certificate_invalid")] == 0.0


def test_no_neighbour_is_missing_evidence_not_zero() -> None:
    frame = add_cause_evidence(_vantage_with_5xx())
    ns = frame.iloc[3]
    assert math.isnan(ns[column_of("vantage_kin_same_cause_share", "dns_failure")])  # the only DNS target
    assert math.isnan(ns[column_of("target_same_cause_share", "dns_failure")])  # one vantage


def test_windows_do_not_share_evidence() -> None:
    first = _vantage_with_5xx()
    second = _vantage_with_5xx().assign(window_start_ns=2_000_000_000, http_status_share=0.0)
    frame = add_cause_evidence(pd.concat([first, second], ignore_index=True))
    later_web = frame.iloc[6]
    assert later_web[column_of("vantage_kin_same_cause_share", "http_error")] == 0.0


def test_scope_inputs_take_each_rows_own_cause_evidence() -> None:
    frame = add_cause_evidence(_vantage_with_5xx())
    frame = frame.assign(
        **{name: 0.0 for name in LEGACY_SCOPE_FEATURES if name != "cause_code" and name not in frame}
    )
    http_error = ROOT_CAUSES.index("http_error")
    tls_slow = ROOT_CAUSES.index("tls_slow")
    rows = scope_inputs(frame, np.array([http_error, tls_slow, *[np.nan] * 4]))
    kin = SCOPE_FEATURES.index("vantage_kin_same_cause_share")
    assert rows[0, kin] == 0.5  # web, asked about http_error
    assert rows[1, kin] == 0.0  # api, asked about tls_slow: no other HTTP target's TLS is slow
    assert np.isnan(rows[2:, kin]).all()  # no candidate cause, no cause-specific evidence
    assert rows[0, -1] == http_error
    legacy = scope_inputs(frame, None, LEGACY_SCOPE_FEATURES)
    assert legacy.shape == (6, len(LEGACY_SCOPE_FEATURES))
    assert set(CAUSE_EVIDENCE_FEATURES) <= set(SCOPE_FEATURES) - set(LEGACY_SCOPE_FEATURES)


def test_a_compound_windows_scope_label_teaches_only_its_labeled_cause() -> None:
    from otelprobe.attribution.train import teaching_windows

    rows = [
        {"label": cause, "label_causes": cause, "label_scope": "path", "label_incident": i}
        for i, cause in enumerate(ROOT_CAUSES)
    ]
    # Loss at a vantage (the spans' label and scope) while one of its targets answers 5xx (a path
    # fault): the window's scope is the loss's, not the 5xx's.
    rows.append(
        {
            "label": "packet_loss",
            "label_causes": "packet_loss,http_error",
            "label_scope": "vantage",
            "label_incident": 99,
        }
    )
    frame = pd.DataFrame(rows).assign(warm=True, symptomatic=True)
    teaching = teaching_windows(frame)
    compound = teaching.frame["label_incident"].to_numpy() == 99
    taught = dict(
        zip(
            [ROOT_CAUSES[c] for c in teaching.causes[compound]],
            teaching.teaches_scope[compound].tolist(),
            strict=True,
        )
    )
    assert taught == {"packet_loss": True, "http_error": False}
    assert teaching.teaches_scope[~compound].all()
    assert teaching.weights[compound].tolist() == [0.5, 0.5]  # both still teach the cause model
