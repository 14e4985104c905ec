"""The one way a result of an attempt is built, and the one way trace IDs are made."""

from __future__ import annotations

from otelprobe.errors import ProbeTimeout
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.timing import AttributeValue, PhaseClock


def test_a_failed_result_carries_its_class_and_detail_as_attributes() -> None:
    clock = PhaseClock()
    start_ns = clock.now_ns()
    with clock.phase("tcp.connect"):
        pass
    attrs: dict[str, AttributeValue] = {"server.address": "127.0.0.1"}
    error = ProbeTimeout("probe_unresponsive", "probe did not return by its timeout + 1 s")
    result = ProbeResult.of_attempt("tcp", "t", 2, clock, start_ns, error, attrs)
    assert not result.success and result.attempt == 2
    assert result.to_json()["error_type"] == "timeout"
    assert result.attributes == {
        "server.address": "127.0.0.1",
        "error.type": "timeout",
        "probe.error.detail": "probe_unresponsive",
    }
    assert [p.name for p in result.phases] == ["tcp.connect"]
    assert result.start_ns <= result.phases[0].start_ns <= result.end_ns


def test_a_successful_result_has_no_error_attributes() -> None:
    clock = PhaseClock()
    result = ProbeResult.of_attempt("http", "t", 1, clock, clock.now_ns(), None, {})
    assert result.success and result.attributes == {} and result.phases == ()


def test_trace_ids_are_random_and_never_zero() -> None:
    refs = {TraceRef.new() for _ in range(100)}
    assert len(refs) == 100
    assert all(0 < r.trace_id < 2**128 and 0 < r.span_id < 2**64 for r in refs)
