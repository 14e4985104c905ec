"""Synthetic probe records for feature tests: HTTPS probes over a path of a given round-trip time,
one a second, with a fault added to chosen phases."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

import pandas as pd

from otelprobe.attribution.features import FeatureEngine
from otelprobe.attribution.records import ProbeRecord, read_records
from otelprobe.attribution.windows import assign_windows

T0_NS = 1_800_000_000_000_000_000
SECOND_NS = 1_000_000_000
NAN = math.nan


def https_probe(
    target: str,
    vantage: str,
    start_s: float,
    rtt_s: float,
    *,
    dns_s: float | None = None,
    connect_s: float | None = None,
    tls_s: float | None = None,
    ttfb_s: float | None = None,
    transfer_s: float = 0.0005,
    error: str | None = None,
    detail: str | None = None,
    failed_phase: str | None = None,
    lab_cause: str | None = None,
    rng: random.Random | None = None,
) -> ProbeRecord:
    """An HTTPS probe over a path of `rtt_s`: DNS, connect and TLS one round trip each, TTFB one
    round trip plus 1 ms of server time (a little jitter from `rng`)."""
    jitter = (lambda: rng.uniform(0, 0.0002)) if rng else (lambda: 0.0)
    dns = rtt_s + jitter() if dns_s is None else dns_s
    connect = rtt_s + jitter() if connect_s is None else connect_s
    tls = rtt_s + jitter() if tls_s is None else tls_s
    ttfb = rtt_s + 0.001 + jitter() if ttfb_s is None else ttfb_s
    total = dns + connect + tls + ttfb + transfer_s
    start_ns = T0_NS + round(start_s * SECOND_NS)
    return ProbeRecord(
        trace_id=f"{random.getrandbits(128):032x}",
        span_id=f"{random.getrandbits(64):016x}",
        target=target,
        vantage=vantage,
        kind="http",
        start_ns=start_ns,
        end_ns=start_ns + round(total * SECOND_NS),
        total_s=total,
        success=error is None,
        attempt=1,
        error_type=error,
        error_detail=detail,
        failed_phase=failed_phase,
        status_code=NAN if error else 200.0,
        body_bytes=NAN if error else 4096.0,
        cert_remaining_s=NAN,
        tls_version="1.3",
        dns_s=dns,
        connect_s=connect,
        tls_s=tls,
        request_s=0.00001,
        ttfb_s=ttfb,
        transfer_s=transfer_s,
        other_s=NAN,
        connect_attempts=1,
        dns_attempts=1.0,
        phases_ok=error is None,
        lab_cause=lab_cause,
        lab_scope="path" if lab_cause else None,
        lab_incident=1.0 if lab_cause else NAN,
        lab_causes=None,
    )


def series(
    rtt_s: float,
    healthy_s: int,
    faulty_s: int,
    fault: dict[str, float],
    target: str = "api",
    vantage: str = "eu",
) -> list[ProbeRecord]:
    """One probe a second: `healthy_s` healthy seconds, then `faulty_s` with `fault` applied
    (phase -> seconds added)."""
    rng = random.Random(1)
    out = []
    for second in range(healthy_s + faulty_s):
        probe = https_probe(target, vantage, second + 0.1, rtt_s, rng=rng)
        if second >= healthy_s:
            probe = replace(
                probe,
                dns_s=probe.dns_s + fault.get("dns", 0.0),
                connect_s=probe.connect_s + fault.get("connect", 0.0),
                tls_s=probe.tls_s + fault.get("tls", 0.0),
                ttfb_s=probe.ttfb_s + fault.get("ttfb", 0.0),
                transfer_s=probe.transfer_s + fault.get("transfer", 0.0),
                lab_cause="fault",
            )
        out.append(probe)
    return out


def offline_and_live(frame: pd.DataFrame, window_s: float = 2.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The features of windowed records in one offline pass and a window slot at a time (as the
    live sidecar feeds them), both in (window, target, vantage) order."""
    offline = FeatureEngine().features(frame, window_s)
    engine = FeatureEngine()
    live = pd.concat(
        [engine.features(part, window_s) for _, part in frame.groupby("window_start_ns", sort=True)],
        ignore_index=True,
    )
    key = ["window_start_ns", "target", "vantage"]
    return offline.sort_values(key).reset_index(drop=True), live.sort_values(key).reset_index(drop=True)


def recording_windows(path: Path, windows: int, window_s: float = 2.0) -> pd.DataFrame:
    """The records of a recording in start order, windowed, its first `windows` window slots."""
    records, _ = read_records([str(path)])
    frame = assign_windows(records.sort_values("start_ns", kind="stable").reset_index(drop=True), window_s)
    first = sorted(frame["window_start_ns"].unique())[:windows]
    return frame[frame["window_start_ns"].isin(first)]
