"""Per series-window aggregates of probe records: the raw material of features and SLOs.

One row per (target, vantage, window_start_ns): counts, per-phase quantiles, error-class counts.
Everything here is still absolute (seconds, counts); features.py turns it into changes against the
series' own baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import numpy as np

from otelprobe import names
from otelprobe.attribution.windows import WINDOW_KEYS

if TYPE_CHECKING:
    import pandas as pd

PHASES: Final = ("dns", "connect", "tls", "request", "ttfb", "transfer", "other", "total")
"""Phase names of features; the record column of phase `p` is `p + "_s"`."""
COMPONENT_PHASES: Final = PHASES[:-1]
"""The phases that make up a probe's total."""

ERROR_CLASSES: Final = (
    "dns_error",
    "connect_refused",
    "connect_timeout",
    "tls_error",
    "timeout",
    "http_status",
    "assertion_failed",
    "protocol_error",
)
"""DESIGN §4's classes."""

# Finer groups of `probe.error.detail` that tell causes apart within one class.
DETAIL_GROUPS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    # group: (error classes it belongs to, words of probe.error.detail)
    "cert": (
        ("tls_error",),
        ("certificate", "hostname_mismatch", "untrusted", "self_signed", "chain", "expired"),
    ),
    "dns_timeout": (("dns_error",), ("resolver_timeout", "resolver_unreachable")),
    "dns_rcode": (("dns_error",), ("nxdomain", "servfail", "refused", "no_address")),
    "answer": (("dns_error", "assertion_failed"), ("answer_regex", "min_answers", "wrong_answer")),
    "reset": (
        ("protocol_error", "tls_error", "connect_refused"),
        ("reset", "disconnected", "incomplete", "connection_terminated"),
    ),
}

FAILED_PHASES: Final = {
    names.SPAN_DNS_LOOKUP: "dns",
    names.SPAN_TCP_CONNECT: "connect",
    names.SPAN_TLS_HANDSHAKE: "tls",
    names.SPAN_HTTP_REQUEST: "request",
    names.SPAN_HTTP_TTFB: "ttfb",
    names.SPAN_HTTP_TRANSFER: "transfer",
}
"""The phase a failed probe failed in (`failed_phase` is the failing span's name)."""

AGGREGATE_QUANTILES: Final = (0.1, 0.5, 0.9, 0.99)


def _detail_group(error_types: pd.Series, details: pd.Series, group: str) -> pd.Series:
    classes, words = DETAIL_GROUPS[group]
    pattern = "|".join(words)
    found = error_types.isin(classes)
    if found.any():  # the words only where the class matches (few records: failed ones)
        found[found] = details[found].fillna("").str.contains(pattern, regex=True).to_numpy(dtype=bool)
    return found


def _equals(values: pd.Series) -> Callable[[str], np.ndarray]:
    """`values == x` for many x: the column factorized once (a string compare per x costs more)."""
    import pandas as pd

    codes, uniques = pd.factorize(values)
    index = {value: i for i, value in enumerate(uniques.tolist())}
    return lambda x: np.asarray(codes == index.get(x, -2))


def window_aggregates(records: pd.DataFrame) -> pd.DataFrame:
    """One row per series-window of `records` (which carry `window_start_ns`), sorted by window."""
    import pandas as pd

    rec = records
    keys = list(WINDOW_KEYS)
    failed = ~rec["success"].astype(bool)
    derived = pd.DataFrame(
        {
            "n": 1,
            "n_fail": failed.astype(np.int64),
            "n_retry": (rec["attempt"] > 1).astype(np.int64),
        },
        index=rec.index,
    )
    error_type = _equals(rec["error_type"])
    for cls in ERROR_CLASSES:
        derived[f"err_{cls}"] = error_type(cls).astype(np.int64)
    details = rec["error_detail"]
    for group in DETAIL_GROUPS:
        derived[f"detail_{group}"] = (_detail_group(rec["error_type"], details, group) & failed).astype(
            np.int64
        )
    failed_phase = _equals(rec["failed_phase"])
    for span, phase in FAILED_PHASES.items():
        derived[f"failed_in_{phase}"] = failed_phase(span).astype(np.int64)
    status = rec["status_code"]
    for klass in (3, 4, 5):
        derived[f"status_{klass}xx"] = ((status >= klass * 100) & (status < klass * 100 + 100)).astype(
            np.int64
        )
    derived["dns_retried"] = (rec["dns_attempts"].fillna(1) > 1).astype(np.int64)
    derived["connect_raced"] = (rec["connect_attempts"] > 1).astype(np.int64)
    for key in keys:
        derived[key] = rec[key]
    grouped = derived.groupby(keys, sort=False)
    out = grouped.sum()

    phase_cols = [f"{p}_s" for p in PHASES]
    values = rec[keys + phase_cols]
    by_window = values.groupby(keys, sort=False)
    counts = by_window[phase_cols].count()
    counts.columns = [f"{p}_n" for p in PHASES]
    pieces = [out, counts]
    for q in AGGREGATE_QUANTILES:
        part = by_window[phase_cols].quantile(q)
        part.columns = [f"{p}_q{int(q * 100)}" for p in PHASES]
        pieces.append(part)
    maxima = by_window[phase_cols].max()
    maxima.columns = [f"{p}_max" for p in PHASES]
    pieces.append(maxima)

    extra = rec[keys].copy()
    extra["body_bytes"] = rec["body_bytes"]
    extra["cert_remaining_s"] = rec["cert_remaining_s"]
    more = extra.groupby(keys, sort=False).agg(
        body_bytes=("body_bytes", "median"), cert_remaining_s=("cert_remaining_s", "min")
    )
    pieces.append(more)
    kinds = rec.groupby(keys, sort=False)["kind"].first()
    pieces.append(kinds.to_frame())
    window_end = rec.groupby(keys, sort=False)["window_end_ns"].first()
    pieces.append(window_end.to_frame())
    if "peer_address" in rec:
        # One pass in Python rather than a groupby with a Python function per group (10,000
        # series-windows per sidecar slot).
        seen: dict[tuple[object, ...], set[str]] = {}
        columns = [rec[key].tolist() for key in keys]
        window_keys = zip(*columns, strict=True)
        for window, address in zip(window_keys, rec["peer_address"].tolist(), strict=True):
            found = seen.setdefault(window, set())
            if isinstance(address, str) and address:
                found.add(address)
        addresses = pd.Series([frozenset(seen[window]) for window in out.index], index=out.index)
        pieces.append(addresses.rename("addresses").to_frame())
    frame = pd.concat(pieces, axis=1).reset_index()
    if "addresses" not in frame:
        frame["addresses"] = [frozenset()] * len(frame)
    return frame.sort_values(["window_start_ns", "target", "vantage"], kind="stable").reset_index(drop=True)
