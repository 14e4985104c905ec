"""Window features: how a series-window differs from the series' own healthy baseline, and how
many of its neighbours (other targets from the same vantage, other vantages of the same target)
show the same symptom at the same time.

`FEATURE_NAMES` is the ordered schema stored with a model. No feature encodes a target's or a
vantage's identity or an absolute baseline: every latency feature is a change against the series'
baseline (in ms, in robust z-units, relative, or in units of the series' round-trip time), a share
of where added time went, or a count of failures, so a model works on targets, vantages and
round-trip times it never saw. docs/attribution.md documents each feature with its unit.

The same `FeatureEngine` serves the offline path (one call over a whole recording) and the live
sidecar (one call per closed window slot): baselines are replayed series by series in window order,
so a window only ever sees the baseline as of its own start.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np

from otelprobe.attribution.aggregates import (
    COMPONENT_PHASES,
    DETAIL_GROUPS,
    ERROR_CLASSES,
    FAILED_PHASES,
    PHASES,
    WindowGroups,
    aggregate_windows,
)
from otelprobe.attribution.baseline_store import BaselineStore, Snapshots, concat_snapshots
from otelprobe.attribution.scope_evidence import add_cause_evidence, cause_signatures
from otelprobe.attribution.windows import assign_windows, window_ns_of

if TYPE_CHECKING:
    import pandas as pd

STEP_S: Final = 0.15
"""An excess this large over the baseline in one phase of one probe is a stall (TCP's minimum
retransmission timeout is 200 ms; a lost SYN costs about 1 s)."""
SLOW_Z: Final = 4.0
SLOW_MIN_S: Final = 0.002
KIND_CODES: Final = {"http": 0, "dns": 1, "tcp": 2, "tls": 3, "icmp": 4, "grpc": 5, "websocket": 6}
_SYMPTOMS: Final = ("fail", "slow", "connect", "dns", "ttfb", "tls", "transfer")
_RECENT_SYMPTOMS: Final = ("fail", "slow")
_OWN_RECENT: Final = ("own_recent_through_after_stall", "own_recent_all_failed")
"""The series' own last two windows (not this one): did a probe stall or retry its connect and
still succeed (loss lets probes through, late), did every probe fail (a dead target fails all)."""
RECENT_WINDOWS: Final = 3
"""Neighbours count as affected when they showed a symptom in any of the last 3 windows: a fault
that hits a share of requests (5xx at 30 %) reaches every neighbour, just not in every window."""


def _phase_features(phase: str) -> list[str]:
    return [
        f"{phase}_present",
        f"{phase}_p50_mag",
        f"{phase}_p50_rtt",
        f"{phase}_uniformity",
        f"{phase}_spread_ratio",
    ]


FEATURE_NAMES: Final[tuple[str, ...]] = tuple(
    [name for phase in PHASES for name in _phase_features(phase)]
    + [f"{phase}_delta_share" for phase in COMPONENT_PHASES]
    + ["dominant_" + phase + "_share" for phase in COMPONENT_PHASES]
    + [
        "added_mag",
        "tls_connect_ratio_change",
        "ttfb_connect_ratio_change",
        "ttfb_tls_ratio_change",
        "stall_share",
        "shift_coherence",
        "connect_retry_share",
        "dns_retry_share",
        "success_ratio",
    ]
    + [f"{cls}_share" for cls in ERROR_CLASSES]
    + [f"detail_{group}_share" for group in DETAIL_GROUPS]
    + [f"failed_in_{phase}_share" for phase in FAILED_PHASES.values()]
    + ["status_3xx_share", "status_4xx_share", "status_5xx_share"]
    + ["body_bytes_rel", "body_rate_rel", "address_changed", "cert_days_left", "retry_share", "kind_code"]
    + [f"vantage_{symptom}_share" for symptom in _SYMPTOMS]
    + [f"target_{symptom}_share" for symptom in _SYMPTOMS]
    + [f"vantage_{symptom}_recent_share" for symptom in _RECENT_SYMPTOMS]
    + [f"target_{symptom}_recent_share" for symptom in _RECENT_SYMPTOMS]
    + list(_OWN_RECENT)
)
"""The ordered feature schema (the contract with models/)."""

INPUT_COLUMNS: Final = (
    "target",
    "vantage",
    "kind",
    "start_ns",
    "success",
    "attempt",
    "error_type",
    "error_detail",
    "failed_phase",
    "status_code",
    "body_bytes",
    "cert_remaining_s",
    *(f"{phase}_s" for phase in PHASES),
    "connect_attempts",
    "dns_attempts",
    "dns_answered_attempt",
    "peer_address",
    "tenant",
)
"""The record columns `FeatureEngine.features` and the SLO evaluator read (the sidecar builds
only these per slot); any other record column does not change a feature."""

CONTEXT_COLUMNS: Final = (
    "target",
    "vantage",
    "window_start_ns",
    "window_end_ns",
    "kind",
    "n",
    "n_fail",
    "warm",
    "symptomatic",
    "vantage_peers",
    "target_peers",
)
"""Columns kept beside the features for detection, scope and evidence wording."""


@dataclass(slots=True)
class FeatureEngine:
    """Per-series baselines plus the feature computation; bounded by `max_series`."""

    max_series: int = 100_000
    baselines: BaselineStore = field(default_factory=BaselineStore)
    recent: dict[tuple[Hashable, Hashable], deque[tuple[int, int]]] = field(default_factory=dict)
    evicted_series: int = 0

    def features(self, records: pd.DataFrame, window_s: float) -> pd.DataFrame:
        """Features of every series-window in `records`, in window order; the baselines learn from
        each window after its features are taken."""
        rec = assign_windows(records, window_s) if "window_start_ns" not in records else records
        agg, groups = aggregate_windows(rec)
        snapshots = self._replay(agg)
        frame = _own_features(rec, agg, groups, snapshots)
        signatures = cause_signatures(frame)
        recent_signatures = self._mark_recent(frame, window_ns_of(window_s), signatures)
        cross = _add_cross_series(frame)
        return add_cause_evidence(cross, recent_signatures, signatures)  # scope_evidence.py

    def _mark_recent(self, frame: pd.DataFrame, window_ns: int, signatures: np.ndarray) -> np.ndarray:
        """`rsym_<symptom>`: the symptom in this window or one of the series' last RECENT_WINDOWS;
        returns the same for each cause's `signatures` (n x 11, scope_evidence.cause_signatures)."""
        bits = np.zeros(len(frame), dtype=np.int64)
        for i, symptom in enumerate(_RECENT_SYMPTOMS):
            bits |= frame[f"sym_{symptom}"].to_numpy(dtype=np.int64) << i
        # The causes' signatures ride in the same int above the symptoms: a state saved before
        # they were kept reads as "no signature", one saved after reads fine in older code.
        shift = np.arange(len(_RECENT_SYMPTOMS), len(_RECENT_SYMPTOMS) + signatures.shape[1])
        bits |= (signatures.astype(np.int64) << shift).sum(axis=1)
        own_shift = len(_RECENT_SYMPTOMS) + signatures.shape[1]  # above the signatures, likewise
        bits |= _own_history_bits(frame) << own_shift
        # Python values throughout: a numpy scalar per row costs more than this loop's own work.
        merged_bits, earlier_bits = [], []
        starts = frame["window_start_ns"].to_numpy(dtype=np.int64).tolist()
        horizon = RECENT_WINDOWS * window_ns
        series_of = zip(frame["target"].tolist(), frame["vantage"].tolist(), strict=True)
        for series, now, flags_now in zip(series_of, starts, bits.tolist(), strict=True):
            history = self.recent.get(series)
            if history is None:
                history = self.recent[series] = deque(maxlen=RECENT_WINDOWS)
            history.append((now, flags_now))
            merged = earlier = 0
            for start, flags in history:
                if now - start < horizon:
                    merged |= flags
                    if start != now:
                        earlier |= flags
            merged_bits.append(merged)
            earlier_bits.append(earlier)
        out = np.array(merged_bits, dtype=np.int64)
        earlier_out = np.array(earlier_bits, dtype=np.int64)
        for i, name in enumerate(_OWN_RECENT):
            frame[name] = ((earlier_out >> (own_shift + i)) & 1).astype(np.float64)
        for i, symptom in enumerate(_RECENT_SYMPTOMS):
            frame[f"rsym_{symptom}"] = (out >> i) & 1 == 1
        return ((out[:, None] >> shift) & 1).astype(np.float64)

    def _replay(self, agg: pd.DataFrame) -> Snapshots:
        """Each series-window's baseline as of its window's start, learning window by window (the
        series of one window at once: a series appears once per window)."""
        p50 = np.column_stack([agg[f"{p}_q50"].to_numpy(dtype=np.float64) for p in PHASES])
        jitter = np.column_stack(
            [(agg[f"{p}_q90"] - agg[f"{p}_q50"]).to_numpy(dtype=np.float64) for p in PHASES]
        )
        failed = agg["n_fail"].to_numpy(dtype=np.int64)
        body = agg["body_bytes"].to_numpy(dtype=np.float64)
        addresses = agg["addresses"].tolist()
        series = list(zip(agg["target"].tolist(), agg["vantage"].tolist(), strict=True))
        starts = agg["window_start_ns"].to_numpy(dtype=np.int64)
        bounds = [0, *(np.flatnonzero(np.diff(starts)) + 1).tolist(), len(agg)]
        parts = []
        for a, b in itertools.pairwise(bounds):
            rows = self._rows_for(series[a:b])
            before = self.baselines.snapshots(rows)
            self.baselines.observe(
                rows, before, failed[a:b], p50[a:b], jitter[a:b], body[a:b], addresses[a:b]
            )
            parts.append(before)
        return concat_snapshots(parts)

    def _rows_for(self, window_series: list[tuple[Hashable, Hashable]]) -> np.ndarray:
        """The store rows of one window's series: known ones marked as seen now, new ones added,
        then the least recently seen series evicted beyond `max_series` — never one of this
        window's (with more series in one window than `max_series`, the store holds the window's
        series until the sidecar's own eviction trims it; evicting a series about to be seen
        again would only make it, and the one its return evicts, start cold in turn)."""
        store = self.baselines
        found = [store.row_of(series) for series in window_series]
        store.touch([series for series, row in zip(window_series, found, strict=True) if row is not None])
        for i, row in enumerate(found):
            if row is None:
                found[i] = store.add(window_series[i])
        if len(store) > self.max_series:
            in_window = set(window_series)
            while len(store) > self.max_series and store.oldest() not in in_window:
                store.release([store.detach(store.oldest())])
                self.evicted_series += 1
        return np.array(found, dtype=np.int64)


def _own_history_bits(frame: pd.DataFrame) -> np.ndarray:
    """Each window's `_OWN_RECENT` facts as bits (bit 0: a probe got through after a stall or a
    connect retry; bit 1: every probe failed)."""
    troubled = (np.nan_to_num(frame["stall_share"].to_numpy(dtype=np.float64)) > 0) | (
        np.nan_to_num(frame["connect_retry_share"].to_numpy(dtype=np.float64)) > 0
    )
    success = frame["success_ratio"].to_numpy(dtype=np.float64)
    through = troubled & (success > 0)
    return np.asarray(through.astype(np.int64) | ((success == 0).astype(np.int64) << 1), dtype=np.int64)


def _baseline_columns(snapshots: Snapshots) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for i, p in enumerate(PHASES):
        # Copies, so each column is contiguous.
        cols[f"base_{p}"] = snapshots.p50[:, i].copy()
        cols[f"spread_{p}"] = snapshots.spread[:, i].copy()
        cols[f"jitter_{p}"] = snapshots.jitter[:, i].copy()
    cols["base_body"] = snapshots.body.copy()
    cols["warm"] = snapshots.warm
    return cols


def _rtt_reference(base: dict[str, np.ndarray]) -> np.ndarray:
    """The series' round-trip time as its baseline connect (one RTT), else its DNS lookup."""
    rtt = np.where(np.isfinite(base["base_connect"]), base["base_connect"], base["base_dns"])
    return np.asarray(np.maximum(np.nan_to_num(rtt, nan=0.001), 0.0005), dtype=np.float64)


def _probe_excess(
    rec: pd.DataFrame, agg: pd.DataFrame, groups: WindowGroups, base: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per-window stats that need each probe against the baseline: stalls, retries, which phase
    took the added time (per row of `agg`; `groups`: each record's row)."""
    at = groups.order  # the counted records, by row
    row = groups.row[at]
    starts = groups.bounds[:-1]
    above_low = np.column_stack(
        [
            rec[f"{p}_s"].to_numpy(dtype=np.float64)[at] - agg[f"{p}_q10"].to_numpy(dtype=np.float64)[row]
            for p in COMPONENT_PHASES
        ]
    )
    excess = np.column_stack(
        [rec[f"{p}_s"].to_numpy(dtype=np.float64)[at] - base[f"base_{p}"][row] for p in COMPONENT_PHASES]
    )
    filled = np.nan_to_num(excess, nan=-np.inf)
    max_excess = filled.max(axis=1)
    has_any = np.isfinite(max_excess)
    dominant = np.where(has_any, filled.argmax(axis=1), -1)
    notable = has_any & (max_excess > SLOW_MIN_S)
    connect_excess = excess[:, COMPONENT_PHASES.index("connect")]
    dns_excess = excess[:, COMPONENT_PHASES.index("dns")]
    counts: dict[str, np.ndarray] = {}
    counts["step_n"] = has_any & (max_excess >= STEP_S)
    # A stall is one probe's phase far above the same phase of the window's other probes: loss
    # stalls some probes by a retransmission timeout, a longer path delays all of them alike.
    counts["stall_n"] = (np.nan_to_num(above_low, nan=0.0) >= STEP_S).any(axis=1)
    counts["connect_retry_n"] = np.nan_to_num(connect_excess, nan=0.0) >= 0.9
    # A query lost and asked again: the answer came for a later try. Where the resolver says which
    # try was answered, a retransmit answered by the first query (a late answer: a longer path or a
    # queue) is not a loss; elsewhere (system resolver) a retransmit or a step is the sign.
    answered = rec["dns_answered_attempt"].to_numpy(dtype=np.float64)[at]
    with np.errstate(invalid="ignore"):
        retried = rec["dns_attempts"].to_numpy(dtype=np.float64)[at] > 1  # NaN: one attempt
    guessed = retried | (np.nan_to_num(dns_excess, nan=0.0) >= STEP_S)
    counts["dns_retry_n"] = np.where(np.isfinite(answered), answered > 1, guessed)
    counts["notable_n"] = notable
    for i, p in enumerate(COMPONENT_PHASES):
        counts[f"dominant_{p}_n"] = notable & (dominant == i)
    out: dict[str, np.ndarray] = {}
    if not len(at):
        return {name: np.zeros(0) for name in (*counts, "max_excess")}
    sums = np.add.reduceat(np.column_stack(list(counts.values())).astype(np.int64), starts, axis=0)
    for k, name in enumerate(counts):
        out[name] = sums[:, k]
    # groupby max: NaN where a window has no phase values at all
    out["max_excess"] = np.fmax.reduceat(np.where(has_any, max_excess, np.nan), starts)
    return out


def _ratio_change(agg: pd.DataFrame, base: dict[str, np.ndarray], num: str, den: str) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        now = np.log(agg[f"{num}_q50"].to_numpy() / agg[f"{den}_q50"].to_numpy())
        usual = np.log(base[f"base_{num}"] / base[f"base_{den}"])
    return np.asarray(now - usual, dtype=np.float64)


def _shift_coherence(agg: pd.DataFrame, base: dict[str, np.ndarray]) -> np.ndarray:
    """How evenly the round-trip-bound phases (DNS, connect, TLS) moved, from their p10 (every
    probe of the window): near 1 when they all grew alike (a longer path), near 0 when one did."""
    shifts = np.column_stack(
        [agg[f"{p}_q10"].to_numpy() - base[f"base_{p}"] for p in ("dns", "connect", "tls")]
    )
    finite = np.isfinite(shifts)
    positive = np.clip(np.nan_to_num(shifts), 0, None)
    low = np.where(finite, positive, np.inf).min(axis=1)
    high = np.where(finite, positive, -np.inf).max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(high > SLOW_MIN_S, low / high, np.nan), dtype=np.float64)


def _own_features(
    rec: pd.DataFrame, agg: pd.DataFrame, groups: WindowGroups, snapshots: Snapshots
) -> pd.DataFrame:
    import pandas as pd

    base = _baseline_columns(snapshots)
    rtt = _rtt_reference(base)
    n = agg["n"].to_numpy(dtype=np.float64)
    cols: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        deltas = {}
        for p in PHASES:
            b, spread, jitter = base[f"base_{p}"], base[f"spread_{p}"], base[f"jitter_{p}"]
            q50 = agg[f"{p}_q50"].to_numpy()
            delta = q50 - b
            deltas[p] = delta
            cols[f"{p}_present"] = agg[f"{p}_n"].to_numpy() / n
            cols[f"{p}_p10_delta_ms"] = (agg[f"{p}_q10"].to_numpy() - b) * 1000
            cols[f"{p}_p50_ms"] = q50 * 1000  # absolute, for the static-threshold baseline only
            cols[f"{p}_p50_delta_ms"] = delta * 1000
            cols[f"{p}_p90_delta_ms"] = (agg[f"{p}_q90"].to_numpy() - b) * 1000
            cols[f"{p}_max_delta_ms"] = (agg[f"{p}_max"].to_numpy() - b) * 1000
            cols[f"{p}_p50_z"] = delta / spread
            cols[f"{p}_p50_rel"] = delta / np.maximum(b, 0.0005)
            cols[f"{p}_p50_rtt"] = delta / rtt
            cols[f"{p}_p50_mag"] = _signed_log(delta * 1000)
            d10, d90 = cols[f"{p}_p10_delta_ms"], cols[f"{p}_p90_delta_ms"]
            cols[f"{p}_uniformity"] = np.where(d90 > 2.0, np.clip(d10 / d90, -1.0, 1.0), np.nan)
            spread_now = agg[f"{p}_q90"].to_numpy() - agg[f"{p}_q10"].to_numpy()
            cols[f"{p}_spread_ratio"] = np.log1p(spread_now / np.maximum(jitter, 0.0005))
        positive = np.column_stack([np.clip(np.nan_to_num(deltas[p]), 0, None) for p in COMPONENT_PHASES])
        total_added = positive.sum(axis=1)
        cols["added_ms"] = total_added * 1000
        cols["added_mag"] = _signed_log(total_added * 1000)
        for i, p in enumerate(COMPONENT_PHASES):
            cols[f"{p}_delta_share"] = np.where(
                total_added > SLOW_MIN_S, positive[:, i] / total_added, np.nan
            )

        excess = _probe_excess(rec, agg, groups, base)
        notable = excess["notable_n"].astype(np.float64)
        for p in COMPONENT_PHASES:
            cols[f"dominant_{p}_share"] = np.where(
                notable > 0, excess[f"dominant_{p}_n"].astype(np.float64) / notable, np.nan
            )
        cols["tls_connect_ratio_change"] = _ratio_change(agg, base, "tls", "connect")
        cols["ttfb_connect_ratio_change"] = _ratio_change(agg, base, "ttfb", "connect")
        cols["ttfb_tls_ratio_change"] = _ratio_change(agg, base, "ttfb", "tls")
        cols["step_share"] = excess["step_n"].astype(np.float64) / n
        cols["stall_share"] = excess["stall_n"].astype(np.float64) / n
        cols["shift_coherence"] = _shift_coherence(agg, base)
        cols["connect_retry_share"] = excess["connect_retry_n"].astype(np.float64) / n
        cols["dns_retry_share"] = excess["dns_retry_n"].astype(np.float64) / n
        cols["max_excess_ms"] = excess["max_excess"].astype(np.float64) * 1000
        cols["success_ratio"] = 1.0 - agg["n_fail"].to_numpy() / n
        for cls in ERROR_CLASSES:
            cols[f"{cls}_share"] = agg[f"err_{cls}"].to_numpy() / n
        for group in DETAIL_GROUPS:
            cols[f"detail_{group}_share"] = agg[f"detail_{group}"].to_numpy() / n
        for phase in FAILED_PHASES.values():
            cols[f"failed_in_{phase}_share"] = agg[f"failed_in_{phase}"].to_numpy() / n
        for klass in (3, 4, 5):
            cols[f"status_{klass}xx_share"] = agg[f"status_{klass}xx"].to_numpy() / n
        body = agg["body_bytes"].to_numpy(dtype=np.float64)
        cols["body_bytes_rel"] = body / base["base_body"] - 1.0
        fetch_now = np.nan_to_num(agg["ttfb_q50"].to_numpy()) + np.nan_to_num(agg["transfer_q50"].to_numpy())
        fetch_usual = np.nan_to_num(base["base_ttfb"]) + np.nan_to_num(base["base_transfer"])
        rate_now = body / np.maximum(fetch_now, 1e-4)
        rate_usual = base["base_body"] / np.maximum(fetch_usual, 1e-4)
        cols["body_rate_rel"] = np.log(rate_now / rate_usual)
        cols["address_changed"] = np.array(
            [
                float(bool(now) and bool(usual) and not now <= usual)
                for now, usual in zip(agg["addresses"].to_numpy(), snapshots.addresses, strict=True)
            ]
        )
        cert_days = agg["cert_remaining_s"].to_numpy(dtype=np.float64) / 86400
        cols["cert_days_left"] = np.clip(cert_days, -30, 30)
        cols["retry_share"] = agg["n_retry"].to_numpy() / n
        cols["kind_code"] = agg["kind"].map(KIND_CODES).fillna(-1).to_numpy(dtype=np.float64)

        symptoms = {
            "fail": agg["n_fail"].to_numpy() > 0,
            "slow": _slow(cols, excess),
            "connect": _up(cols, "connect"),
            "dns": _up(cols, "dns"),
            "ttfb": _up(cols, "ttfb"),
            "tls": _up(cols, "tls"),
            "transfer": _transfer_beyond_path(cols),
        }

    frame = pd.DataFrame(cols)
    for name in ("target", "vantage", "window_start_ns", "window_end_ns", "kind", "n", "n_fail"):
        frame[name] = agg[name].to_numpy()
    frame["warm"] = base["warm"]
    for symptom, flags in symptoms.items():
        frame[f"sym_{symptom}"] = flags & base["warm"] if symptom != "fail" else flags
    frame["symptomatic"] = frame["sym_fail"] | frame["sym_slow"]
    return frame


def _signed_log(values_ms: np.ndarray) -> np.ndarray:
    """Magnitude on a log scale (sign kept): trees split on "an order of magnitude more", which
    carries over to round-trip times and fault sizes a lab never had."""
    return np.asarray(np.sign(values_ms) * np.log1p(np.abs(values_ms)), dtype=np.float64)


def _up(cols: dict[str, np.ndarray], phase: str) -> np.ndarray:
    z = np.nan_to_num(cols[f"{phase}_p50_z"], nan=0.0)
    delta = np.nan_to_num(cols[f"{phase}_p50_delta_ms"], nan=0.0) / 1000
    return np.asarray((z >= SLOW_Z) & (delta >= SLOW_MIN_S))


TRANSFER_ROUNDS_MAX: Final = 8.0
"""A longer path slows a body by at most about one round trip per slow-start round (7 rounds
carry 1 MiB from an initial window of 10 segments), so a transfer that grew by no more than this
many times its connect's growth is the path's round trips, not a narrower pipe."""


def _transfer_beyond_path(cols: dict[str, np.ndarray]) -> np.ndarray:
    """The *transfer* symptom: a slower body transfer that a longer path does not explain. A path
    fault slows every multi-round-trip body too, so counting those would make a vantage-wide
    latency fault look, from its neighbours, like a bandwidth limit (DESIGN §5 tells them apart
    by the connect: a narrower pipe leaves the handshake's single packets alone)."""
    transfer = np.nan_to_num(cols["transfer_p50_delta_ms"], nan=0.0)
    connect = np.nan_to_num(cols["connect_p50_delta_ms"], nan=0.0)
    explained = _up(cols, "connect") & (transfer <= TRANSFER_ROUNDS_MAX * connect)
    return np.asarray(_up(cols, "transfer") & ~explained)


def _slow(cols: dict[str, np.ndarray], excess: dict[str, np.ndarray]) -> np.ndarray:
    any_phase = np.zeros(len(excess["step_n"]), dtype=bool)
    for p in COMPONENT_PHASES:
        any_phase |= _up(cols, p)
    return np.asarray(any_phase | (excess["step_n"] > 0), dtype=bool)


def _group_codes(frame: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """Each row's group of `keys` (any numbering: only who shares a group matters)."""
    import pandas as pd

    combined = np.zeros(len(frame), dtype=np.int64)
    for key in keys:
        codes, uniques = pd.factorize(frame[key])
        combined = combined * (len(uniques) + 1) + codes
    return np.asarray(pd.factorize(combined)[0], dtype=np.int64)


def _add_cross_series(frame: pd.DataFrame) -> pd.DataFrame:
    """Neighbours' symptoms in the same window slot: other targets from this vantage, other
    vantages of this target (a share of the neighbours, excluding the series itself). Sums of
    integer flags per group (np.bincount), so exact whatever the order."""
    for side, group in (("vantage", "vantage"), ("target", "target")):
        codes = _group_codes(frame, ["window_start_ns", group])
        peers = np.bincount(codes)[codes] - 1
        frame[f"{side}_peers"] = peers
        for symptom, name in [(s, f"{side}_{s}") for s in _SYMPTOMS] + [
            (s, f"{side}_{s}_recent") for s in _RECENT_SYMPTOMS
        ]:
            column = f"rsym_{symptom}" if name.endswith("_recent") else f"sym_{symptom}"
            flags = frame[column].to_numpy().astype(np.int64)
            total = np.bincount(codes, weights=flags).astype(np.int64)[codes]
            others = total - flags
            with np.errstate(divide="ignore", invalid="ignore"):
                frame[f"{name}_share"] = np.where(peers > 0, others / peers, np.nan)
            frame[f"{name}_count"] = others
        frame[f"{side}_peers_log"] = np.log1p(peers)
    return frame


def feature_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The model's input: FEATURE_NAMES in order, float64, NaN for missing (LightGBM's own)."""
    matrix = np.array(
        frame.loc[:, list(FEATURE_NAMES)].to_numpy(dtype=np.float64), dtype=np.float64, copy=True
    )
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix


def is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
