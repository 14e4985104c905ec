"""`window_aggregates` from one numpy grouping must give exactly what the pandas groupbys it
replaced gave (the reference below is that code): every value bit for bit, the same columns,
dtypes and row order, on records with ties, missing phases, failures of every class, several
windows and addresses."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from otelprobe import names
from otelprobe.attribution.aggregates import (
    AGGREGATE_QUANTILES,
    DETAIL_GROUPS,
    ERROR_CLASSES,
    FAILED_PHASES,
    PHASES,
    window_aggregates,
)
from otelprobe.attribution.features import INPUT_COLUMNS
from otelprobe.attribution.records import ProbeRecord, records_frame
from otelprobe.attribution.windows import WINDOW_KEYS, assign_windows

NAN = float("nan")


# --- the pandas groupbys this replaced (otelprobe/attribution/aggregates.py before it) -------------


def _detail_group(error_types: pd.Series, details: pd.Series, group: str) -> pd.Series:
    classes, words = DETAIL_GROUPS[group]
    found = error_types.isin(classes)
    if found.any():
        found[found] = details[found].fillna("").str.contains("|".join(words), regex=True).to_numpy(bool)
    return found


def _equals(values: pd.Series) -> Callable[[str], np.ndarray]:
    codes, uniques = pd.factorize(values)
    index = {value: i for i, value in enumerate(uniques.tolist())}
    return lambda x: np.asarray(codes == index.get(x, -2))


def reference_aggregates(rec: pd.DataFrame) -> pd.DataFrame:
    keys = list(WINDOW_KEYS)
    failed = ~rec["success"].astype(bool)
    derived = pd.DataFrame(
        {"n": 1, "n_fail": failed.astype(np.int64), "n_retry": (rec["attempt"] > 1).astype(np.int64)},
        index=rec.index,
    )
    error_type = _equals(rec["error_type"])
    for cls in ERROR_CLASSES:
        derived[f"err_{cls}"] = error_type(cls).astype(np.int64)
    for group in DETAIL_GROUPS:
        derived[f"detail_{group}"] = (
            _detail_group(rec["error_type"], rec["error_detail"], group) & failed
        ).astype(np.int64)
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
    out = derived.groupby(keys, sort=False).sum()
    phase_cols = [f"{p}_s" for p in PHASES]
    by_window = rec[keys + phase_cols].groupby(keys, sort=False)
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
    pieces.append(
        extra.groupby(keys, sort=False).agg(
            body_bytes=("body_bytes", "median"), cert_remaining_s=("cert_remaining_s", "min")
        )
    )
    pieces.append(rec.groupby(keys, sort=False)["kind"].first().to_frame())
    pieces.append(rec.groupby(keys, sort=False)["window_end_ns"].first().to_frame())
    seen: dict[tuple[object, ...], set[str]] = {}
    for window, address in zip(
        zip(*[rec[k].tolist() for k in keys], strict=True), rec["peer_address"].tolist(), strict=True
    ):
        found = seen.setdefault(window, set())
        if isinstance(address, str) and address:
            found.add(address)
    addresses = pd.Series([frozenset(seen[window]) for window in out.index], index=out.index)
    pieces.append(addresses.rename("addresses").to_frame())
    frame = pd.concat(pieces, axis=1).reset_index()
    return frame.sort_values(["window_start_ns", "target", "vantage"], kind="stable").reset_index(drop=True)


# --- records -----------------------------------------------------------------------------------

_ERRORS = [
    (None, None, None),
    ("tls_error", "certificate_expired", names.SPAN_TLS_HANDSHAKE),
    ("dns_error", "nxdomain", names.SPAN_DNS_LOOKUP),
    ("dns_error", "resolver_timeout", names.SPAN_DNS_LOOKUP),
    ("protocol_error", "connection_reset", names.SPAN_HTTP_TRANSFER),
    ("http_status", None, names.SPAN_HTTP_TTFB),
    ("connect_timeout", None, names.SPAN_TCP_CONNECT),
    ("assertion_failed", "answer_regex", None),
]


def random_records(rng: random.Random, count: int) -> list[ProbeRecord]:
    targets = [f"t{i}.example" for i in range(7)] + ["Z", "a", "é"]
    vantages = ["v-b", "v-a", "V"]
    # A few distinct values, so groups hold ties; some phases missing; a few huge values.
    durations = [0.001, 0.002, 0.0025, 0.1, 1e-9, 3.0, NAN]
    records = []
    for i in range(count):
        error_type, detail, phase = rng.choice(_ERRORS) if rng.random() < 0.3 else _ERRORS[0]
        success = error_type is None
        values = {f"{p}_s": rng.choice(durations) for p in PHASES}
        records.append(
            ProbeRecord(
                trace_id=f"{i:032x}",
                span_id=f"{i:016x}",
                target=rng.choice(targets),
                vantage=rng.choice(vantages),
                kind=rng.choice(["http", "dns"]),
                start_ns=1_800_000_000_000_000_000 + rng.randrange(6) * 1_000_000_000 + rng.randrange(999),
                end_ns=0,
                total_s=values["total_s"],
                success=success,
                attempt=rng.choice([1, 1, 2]),
                error_type=error_type,
                error_detail=detail,
                failed_phase=phase,
                status_code=rng.choice([200.0, 301.0, 404.0, 503.0, NAN]),
                body_bytes=rng.choice([100.0, 120.0, 7.0, NAN]),
                cert_remaining_s=rng.choice([86400.0, 3600.0, NAN]),
                tls_version=None,
                dns_s=values["dns_s"],
                connect_s=values["connect_s"],
                tls_s=values["tls_s"],
                request_s=values["request_s"],
                ttfb_s=values["ttfb_s"],
                transfer_s=values["transfer_s"],
                other_s=values["other_s"],
                connect_attempts=rng.choice([1, 1, 2]),
                dns_attempts=rng.choice([1.0, 2.0, NAN]),
                phases_ok=True,
                lab_cause=None,
                lab_scope=None,
                lab_incident=NAN,
                lab_causes=None,
                peer_address=rng.choice([None, "", "192.0.2.1", "192.0.2.2", "2001:db8::1"]),
            )
        )
    return records


def assert_bit_identical(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert got.index.equals(want.index)
    for column in want.columns:
        assert got[column].dtype == want[column].dtype, column
        a, b = got[column].to_numpy(), want[column].to_numpy()
        if b.dtype.kind == "f":
            assert np.array_equal(np.isnan(a), np.isnan(b)), column
            assert np.array_equal(np.nan_to_num(a).view(np.int64), np.nan_to_num(b).view(np.int64)), column
        else:
            assert a.tolist() == b.tolist(), column


@pytest.mark.parametrize("seed", range(6))
def test_the_numpy_aggregates_are_the_groupbys_bit_for_bit(seed: int) -> None:
    rng = random.Random(seed)
    records = assign_windows(
        records_frame(random_records(rng, rng.choice([1, 2, 50, 400])), INPUT_COLUMNS), 2.0
    )
    assert_bit_identical(window_aggregates(records), reference_aggregates(records))


def test_a_window_with_many_probes_interpolates_its_quantiles_as_pandas_does() -> None:
    rng = random.Random(7)
    records = random_records(rng, 300)
    one = [replace(r, target="a", vantage="v", start_ns=records[0].start_ns) for r in records]
    frame = assign_windows(records_frame(one, INPUT_COLUMNS), 2.0)
    got = window_aggregates(frame)
    assert len(got) == 1
    assert_bit_identical(got, reference_aggregates(frame))


def test_no_records_give_an_empty_table_of_the_same_shape() -> None:
    records = assign_windows(records_frame([], INPUT_COLUMNS), 2.0)
    assert_bit_identical(window_aggregates(records), reference_aggregates(records))
