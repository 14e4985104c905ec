"""Per series-window aggregates of probe records: the raw material of features and SLOs.

One row per (target, vantage, window_start_ns): counts, per-phase quantiles, error-class counts.
Everything here is still absolute (seconds, counts); features.py turns it into changes against the
series' own baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def _detail_group(
    error_type: np.ndarray, error_types: list[object], details: pd.Series, group: str
) -> np.ndarray:
    """Records whose class is one of the group's and whose detail holds one of its words
    (`error_type`: each record's code into `error_types`)."""
    classes, words = DETAIL_GROUPS[group]
    found = np.isin(error_type, [i for i, name in enumerate(error_types) if name in classes])
    if found.any():  # the words only where the class matches (few records: failed ones)
        pattern = "|".join(words)
        found[found] = details[found].fillna("").str.contains(pattern, regex=True).to_numpy(dtype=bool)
    return found


def _factorized(values: pd.Series) -> tuple[np.ndarray, list[object]]:
    """Codes (-1: missing) and the distinct values: `values == x` for many x costs one pass."""
    import pandas as pd

    codes, uniques = pd.factorize(values)
    return np.asarray(codes), uniques.tolist()


@dataclass(frozen=True, slots=True)
class WindowGroups:
    """Which row of the aggregates each record went into.

    `row[i]`: record i's row (-1: a record without target or vantage, which no row counts);
    `order`: the counted records grouped by row (record order within a row); `bounds`: row r's
    records are `order[bounds[r]:bounds[r + 1]]`."""

    row: np.ndarray
    order: np.ndarray
    bounds: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.bounds) - 1


def _string_ranks(values: pd.Series) -> tuple[np.ndarray, int]:
    """Each value's rank among the distinct values in string order (-1: missing), and how many."""
    import pandas as pd

    codes, uniques = pd.factorize(values)
    ranks = np.empty(len(uniques), dtype=np.int64)
    # Python's string comparison: the order sort_values puts them in.
    ranks[np.argsort(np.asarray(uniques, dtype=object), kind="stable")] = np.arange(len(uniques))
    return np.where(codes >= 0, ranks[np.maximum(codes, 0)], -1), len(uniques)


def window_groups(records: pd.DataFrame) -> WindowGroups:
    """The series-windows of `records`, numbered in (window_start_ns, target, vantage) order."""
    target, targets = _string_ranks(records["target"])
    vantage, vantages = _string_ranks(records["vantage"])
    _, window = np.unique(records["window_start_ns"].to_numpy(dtype=np.int64), return_inverse=True)
    combined = (window.astype(np.int64).reshape(-1) * targets + target) * vantages + vantage
    counted = (target >= 0) & (vantage >= 0)
    row = np.full(len(records), -1, dtype=np.int64)
    distinct, inner = np.unique(combined[counted], return_inverse=True)
    row[counted] = inner.reshape(-1)
    order = np.flatnonzero(counted)
    order = order[np.argsort(row[order], kind="stable")]
    sizes = np.bincount(row[order], minlength=len(distinct))
    bounds = np.zeros(len(distinct) + 1, dtype=np.int64)
    np.cumsum(sizes, out=bounds[1:])
    return WindowGroups(row, order, bounds)


def _sorted_within(values: pd.Series, groups: WindowGroups) -> tuple[np.ndarray, np.ndarray]:
    """The counted records' `values` grouped by row and sorted within each (NaN last), and how
    many values each row has (NaN not counted)."""
    grouped = values.to_numpy(dtype=np.float64)[groups.order]
    ordered = grouped[np.lexsort((grouped, groups.row[groups.order]))]
    if not len(ordered):
        return ordered, np.zeros(groups.rows, dtype=np.int64)
    present = np.add.reduceat((~np.isnan(ordered)).astype(np.int64), groups.bounds[:-1])
    return ordered, present


def _quantile(ordered: np.ndarray, starts: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """pandas' groupby quantile (linear) of sorted groups, operation for operation: the value at
    trunc(q x (n - 1)), plus the step to the next one times the fraction; NaN for no values."""
    position = q * (counts - 1).astype(np.float64)
    low = np.maximum(position, 0).astype(np.int64)
    fraction = np.fmod(position, 1.0)
    last = len(ordered) - 1
    value = ordered[np.minimum(starts + low, last)]
    following = ordered[np.minimum(starts + low + 1, last)]
    with np.errstate(invalid="ignore"):
        stepped = value + (following - value) * fraction
    out = np.where(fraction == 0.0, value, stepped)
    return np.where(counts > 0, out, np.nan)


def _median(ordered: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """pandas' groupby median: the middle value, or the mean of the middle two."""
    last = len(ordered) - 1
    high = ordered[np.minimum(starts + counts // 2, last)]
    low = ordered[np.clip(starts + counts // 2 - 1, 0, last)]
    out = np.where(counts % 2 == 1, high, (high + low) / 2)
    return np.where(counts > 0, out, np.nan)


def window_aggregates(records: pd.DataFrame) -> pd.DataFrame:
    """One row per series-window of `records` (which carry `window_start_ns`), sorted by window."""
    return aggregate_windows(records)[0]


def aggregate_windows(records: pd.DataFrame) -> tuple[pd.DataFrame, WindowGroups]:
    """`window_aggregates` and which row each record went into.

    One grouping of the records (numpy) instead of a pandas groupby per statistic; every value is
    the one the groupbys gave, bit for bit: sums and counts of integers, and quantiles and medians
    by pandas' own arithmetic on the same sorted values (tests/attribution/
    test_aggregates_numpy.py compares against the groupbys).
    """
    import pandas as pd

    rec = records
    groups = window_groups(rec)
    order, bounds = groups.order, groups.bounds
    starts = bounds[:-1]
    counted = len(order)

    failed = ~rec["success"].to_numpy(dtype=bool)
    flags: dict[str, np.ndarray] = {
        "n": np.ones(len(rec), dtype=np.int64),
        "n_fail": failed,
        "n_retry": rec["attempt"].to_numpy() > 1,
    }
    error_type, error_types = _factorized(rec["error_type"])
    for cls in ERROR_CLASSES:
        flags[f"err_{cls}"] = error_type == (error_types.index(cls) if cls in error_types else -2)
    details = rec["error_detail"]
    for group in DETAIL_GROUPS:
        flags[f"detail_{group}"] = _detail_group(error_type, error_types, details, group) & failed
    failed_phase, failed_phases = _factorized(rec["failed_phase"])
    for span, phase in FAILED_PHASES.items():
        flags[f"failed_in_{phase}"] = failed_phase == (
            failed_phases.index(span) if span in failed_phases else -2
        )
    status = rec["status_code"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        for klass in (3, 4, 5):
            flags[f"status_{klass}xx"] = (status >= klass * 100) & (status < klass * 100 + 100)
        flags["dns_retried"] = rec["dns_attempts"].to_numpy(dtype=np.float64) > 1  # NaN: not retried
    flags["connect_raced"] = rec["connect_attempts"].to_numpy() > 1
    matrix = np.column_stack([np.asarray(v, dtype=np.int64) for v in flags.values()])[order]
    sums = np.add.reduceat(matrix, starts, axis=0) if counted else matrix[:0]

    first = order[starts] if counted else order
    columns: dict[str, object] = {key: rec[key].array.take(first) for key in WINDOW_KEYS}
    for k, name in enumerate(flags):
        columns[name] = sums[:, k]
    phase_stats: dict[str, np.ndarray] = {}
    for p in PHASES:
        ordered, present = _sorted_within(rec[f"{p}_s"], groups)
        phase_stats[f"{p}_n"] = present
        for q in AGGREGATE_QUANTILES:
            phase_stats[f"{p}_q{int(q * 100)}"] = _quantile(ordered, starts, present, q)
        phase_stats[f"{p}_max"] = _quantile(ordered, starts, present, 1.0)  # the last value
    for suffix in ("n", *(f"q{int(q * 100)}" for q in AGGREGATE_QUANTILES), "max"):
        for p in PHASES:
            columns[f"{p}_{suffix}"] = phase_stats[f"{p}_{suffix}"]
    body, present = _sorted_within(rec["body_bytes"], groups)
    columns["body_bytes"] = _median(body, starts, present)
    cert, present = _sorted_within(rec["cert_remaining_s"], groups)
    columns["cert_remaining_s"] = _quantile(cert, starts, present, 0.0)  # the first value
    columns["kind"] = _first_present(rec["kind"], groups, first)
    columns["window_end_ns"] = rec["window_end_ns"].to_numpy()[first]
    addresses: list[frozenset[str]] = [frozenset()] * groups.rows
    if "peer_address" in rec:
        # One pass in Python rather than a groupby with a Python function per group (10,000
        # series-windows per sidecar slot); a row's addresses are almost always one, and rows
        # with the same one share its (immutable) set.
        held: dict[int, list[str]] = {}
        for row, address in zip(groups.row.tolist(), rec["peer_address"].tolist(), strict=True):
            if row >= 0 and isinstance(address, str) and address:
                found = held.get(row)
                if found is None:
                    held[row] = [address]
                elif address not in found:
                    found.append(address)
        alone: dict[str, frozenset[str]] = {}
        for row, found in held.items():
            if len(found) == 1:
                one = alone.get(found[0])
                if one is None:
                    one = alone[found[0]] = frozenset(found)
                addresses[row] = one
            else:
                addresses[row] = frozenset(found)
    frame = pd.DataFrame(columns)
    frame["addresses"] = pd.Series(addresses, dtype=object)
    return frame, groups


def _first_present(values: pd.Series, groups: WindowGroups, first: np.ndarray) -> object:
    """Each row's first non-missing value (groupby `first`)."""
    if not values.isna().any():
        return values.array.take(first)
    present = np.flatnonzero(values.notna().to_numpy())
    rows = groups.row[present]
    present, rows = present[rows >= 0], rows[rows >= 0]
    found, at = np.unique(rows, return_index=True)  # the lowest record index per row
    picks = np.full(groups.rows, -1, dtype=np.int64)
    picks[found] = present[at]
    return values.array.take(picks, allow_fill=True)
