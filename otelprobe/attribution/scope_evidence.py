"""Cause-specific neighbour evidence for the scope model: of a series' neighbours in the same window,
the share that show *this cause's own symptom* (a 5xx for http_error, a certificate error for
certificate_invalid, a slower TTFB for backend_slow, ...).

Why: "a neighbour shows some symptom" is weak evidence where faults overlap — a vantage seeing a
slow backend on one target and loss on another is not one vantage fault. A vantage-wide fault
shows the same symptom on the vantage's other targets, a target-wide one on the target's other
vantages, a path fault on neither. And a fault reaches only targets that can show it (a 5xx only
HTTP targets), so the vantage side is also counted over the targets probed the same way (same
kind): the share then does not depend on how many DNS or TCP targets a vantage happens to probe.

The same shares are also taken over the last RECENT_WINDOWS windows (`*_recent_share`): a fault
that hits a share of requests (loss at 10 %, a 5xx at 30 %) shows its symptom on each neighbour
in some windows, not every one, so one window's share undercounts a vantage- or target-wide fault.
A neighbour counts when its own signature showed the cause in this window or one of its last two
(features.py keeps each series' recent signatures, and the sidecar saves them across a restart).

`add_cause_evidence` adds, per cause, `{feature}.{cause}` columns to a window table (all series
of each window slot present, as features.py builds it); `model.scope_inputs` picks each row's
candidate cause's column. Each window slot is computed on its own, as the sidecar computes it; the
recent signatures come in as an argument.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from otelprobe.causes import ROOT_CAUSES

SAME_WINDOW_EVIDENCE_FEATURES: Final = (
    "vantage_kin_same_cause_share",
    "vantage_same_cause_share",
    "target_same_cause_share",
)
"""The shares over neighbours' signatures in this window only."""
RECENT_EVIDENCE_FEATURES: Final = (
    "vantage_kin_same_cause_recent_share",
    "vantage_same_cause_recent_share",
    "target_same_cause_recent_share",
)
"""The same shares over neighbours' signatures in this window or one of their last two."""
CAUSE_EVIDENCE_FEATURES: Final = SAME_WINDOW_EVIDENCE_FEATURES + RECENT_EVIDENCE_FEATURES
"""Scope features whose value depends on the candidate cause (a column per cause in the table)."""

_GROUP_KEYS: Final = (
    ("window_start_ns", "vantage", "kind"),
    ("window_start_ns", "vantage"),
    ("window_start_ns", "target"),
)


def column_of(feature: str, cause: str) -> str:
    return f"{feature}.{cause}"


def _any(frame: pd.DataFrame, *columns: str) -> np.ndarray:
    found = np.zeros(len(frame), dtype=bool)
    for column in columns:
        found |= np.nan_to_num(frame[column].to_numpy(dtype=np.float64)) > 0
    return found


def _flag(frame: pd.DataFrame, column: str) -> np.ndarray:
    return np.asarray(frame[column].to_numpy(dtype=bool), dtype=bool)


def cause_signatures(frame: pd.DataFrame) -> np.ndarray:
    """n x 11 (ROOT_CAUSES order): does the window show the symptom each cause leaves (DESIGN §5)?"""
    signs = {
        "dns_latency": _flag(frame, "sym_dns"),
        "dns_failure": _any(frame, "dns_error_share"),
        "network_latency": _flag(frame, "sym_connect"),
        "packet_loss": _any(
            frame, "stall_share", "connect_retry_share", "connect_timeout_share", "timeout_share"
        ),
        "bandwidth_limit": _flag(frame, "sym_transfer"),
        "tls_slow": _flag(frame, "sym_tls"),
        "certificate_invalid": _any(frame, "detail_cert_share"),
        "backend_slow": _flag(frame, "sym_ttfb") | _any(frame, "timeout_share"),
        "http_error": _any(frame, "http_status_share", "protocol_error_share"),
        "target_unreachable": _any(frame, "connect_refused_share", "connect_timeout_share"),
        "content_mismatch": _any(frame, "assertion_failed_share"),
    }
    return np.column_stack([signs[cause] for cause in ROOT_CAUSES]).astype(np.float64)


def add_cause_evidence(
    frame: pd.DataFrame,
    recent_signatures: np.ndarray | None = None,
    signatures: np.ndarray | None = None,
) -> pd.DataFrame:
    """`frame` with a `{feature}.{cause}` column per CAUSE_EVIDENCE_FEATURES and cause: the share of
    the row's neighbours (excluding itself) with the cause's symptom; NaN with no neighbour.

    `recent_signatures` (n x 11, `cause_signatures` of each row's series OR-ed over this window and
    its last two) feeds the `*_recent_share` features; without it (a table with no history) they
    equal the same-window shares. `signatures`: the rows' own `cause_signatures`, when the caller
    has them already."""
    if frame.empty:
        for feature in CAUSE_EVIDENCE_FEATURES:
            for cause in ROOT_CAUSES:
                frame[column_of(feature, cause)] = np.zeros(0)
        return frame
    signs = cause_signatures(frame) if signatures is None else signatures
    recent = signs if recent_signatures is None else np.asarray(recent_signatures, dtype=np.float64)
    codes_of = [frame.groupby(list(keys), sort=False).ngroup().to_numpy() for keys in _GROUP_KEYS]
    columns: dict[str, np.ndarray] = {}
    for features, shown in ((SAME_WINDOW_EVIDENCE_FEATURES, signs), (RECENT_EVIDENCE_FEATURES, recent)):
        for feature, codes in zip(features, codes_of, strict=True):
            peers = np.bincount(codes)[codes] - 1
            for j, cause in enumerate(ROOT_CAUSES):
                others = np.bincount(codes, weights=shown[:, j])[codes] - shown[:, j]
                with np.errstate(divide="ignore", invalid="ignore"):
                    columns[column_of(feature, cause)] = np.where(peers > 0, others / peers, np.nan)
    kept = frame.drop(columns=[name for name in columns if name in frame])
    return pd.concat([kept, pd.DataFrame(columns, index=frame.index)], axis=1)
