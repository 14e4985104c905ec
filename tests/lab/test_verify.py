"""`lab verify` end to end, small: real HTTPS probes against the lab target, compared with a
capture; every phase matched by client port and close to the wire (needs root)."""

from __future__ import annotations

import os

import pytest

from otelprobe.lab.verification.target import TargetSpec
from otelprobe.lab.verification.verify import format_runs, verify

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="AF_PACKET capture needs root")


async def test_spans_match_the_wire_at_one_and_several_concurrent_probes() -> None:
    runs = await verify((1, 20), probes=20, spec=TargetSpec(tls_delay_s=0.01, ttfb_s=0.01))
    assert [run.concurrency for run in runs] == [1, 20]
    for run in runs:
        assert run.failed == 0 and run.matched == run.probes == 20
        errors = {e.phase: e for e in run.errors}
        assert set(errors) == {"tcp.connect", "tls.handshake", "http.request", "http.ttfb", "http.transfer"}
        assert errors["tls.handshake"].wire_median_ms > 9  # the injected delay is on the wire
        assert errors["http.ttfb"].wire_median_ms > 9
        # Generous bounds (2 shared noisy cores); bench/timing_error.py gives the real figures.
        for phase in ("tcp.connect", "tls.handshake", "http.request"):
            assert errors[phase].mean_abs_ms < 3, (phase, errors[phase])
    assert "tls.handshake" in format_runs(runs)
