"""Hand-built ProbeResults for the telemetry tests (no probing involved)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from otelprobe import names
from otelprobe.errors import ProbeError
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.timing import AttributeValue, PhaseClock

MS = 1_000_000


def make_result(
    *,
    kind: str = "http",
    target: str = "api",
    attempt: int = 1,
    phases: tuple[tuple[str, float, float], ...] = (
        (names.SPAN_DNS_LOOKUP, 0.0, 1.0),
        (names.SPAN_TCP_CONNECT, 1.0, 3.0),
        (names.SPAN_TLS_HANDSHAKE, 3.0, 8.0),
        (names.SPAN_HTTP_REQUEST, 8.0, 8.5),
        (names.SPAN_HTTP_TTFB, 8.5, 20.0),
        (names.SPAN_HTTP_TRANSFER, 20.0, 25.0),
    ),
    failed_phase: str | None = None,
    error: ProbeError | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    phase_attributes: Mapping[str, Mapping[str, AttributeValue]] | None = None,
    total_ms: float | None = None,
    trace_ref: TraceRef | None = None,
) -> ProbeResult:
    """A result whose phases start at the given offsets (ms) from the attempt's start."""
    clock = PhaseClock()
    start = clock.now_ns()
    for name, begin_ms, end_ms in phases:
        clock.record(
            name,
            start + int(begin_ms * MS),
            start + int(end_ms * MS),
            error if name == failed_phase else None,
            (phase_attributes or {}).get(name),
        )
    end_ms = total_ms if total_ms is not None else max((p[2] for p in phases), default=0.0)
    return ProbeResult(
        kind=kind,
        target=target,
        attempt=attempt,
        start_ns=start,
        end_ns=start + int(end_ms * MS),
        anchor_wall_ns=clock.anchor_wall_ns,
        anchor_mono_ns=clock.anchor_mono_ns,
        phases=clock.sorted_phases(),
        error=error,
        attributes=dict(attributes or {}),
        trace_ref=trace_ref,
    )


@pytest.fixture
def result_factory() -> Callable[..., ProbeResult]:
    return make_result
