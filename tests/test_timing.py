from __future__ import annotations

import asyncio
import time

import pytest

from otelprobe.errors import ConnectTimeout, DNSError, ProbeTimeout, TLSError
from otelprobe.probes.base import run_attempt
from otelprobe.timing import PhaseClock


def test_phases_are_recorded_in_order_with_monotonic_bounds() -> None:
    clock = PhaseClock()
    with clock.phase("dns.lookup"):
        time.sleep(0.002)
    with clock.phase("tcp.connect") as phase:
        phase.attributes["network.peer.address"] = "127.0.0.1"
    phases = clock.sorted_phases()
    assert [p.name for p in phases] == ["dns.lookup", "tcp.connect"]
    assert phases[0].duration_ns >= 2_000_000
    assert phases[0].end_ns <= phases[1].start_ns
    assert phases[1].attributes == {"network.peer.address": "127.0.0.1"}


def test_epoch_conversion_uses_one_anchor() -> None:
    clock = PhaseClock()
    mono = clock.now_ns()
    assert abs(clock.to_epoch_ns(mono) - time.time_ns()) < 50_000_000
    assert clock.to_epoch_ns(mono + 1_000) - clock.to_epoch_ns(mono) == 1_000


def test_error_escaping_a_phase_is_recorded_then_reraised() -> None:
    clock = PhaseClock()
    with pytest.raises(TLSError), clock.phase("tls.handshake"):
        raise TLSError("certificate_expired")
    (phase,) = clock.phases
    assert phase.error_type == "tls_error"
    assert phase.error_detail == "certificate_expired"


@pytest.mark.parametrize(
    ("phase_name", "expected"),
    [("dns.lookup", DNSError), ("tcp.connect", ConnectTimeout), ("http.ttfb", ProbeTimeout)],
)
async def test_deadline_is_classified_by_the_open_phase(phase_name: str, expected: type) -> None:
    async def body(clock: PhaseClock, attrs: dict[str, object]) -> None:
        with clock.phase(phase_name):
            await asyncio.sleep(5)

    started = time.monotonic()
    result = await run_attempt("http", "t", 1, 0.05, body)  # type: ignore[arg-type]
    assert time.monotonic() - started < 1.0
    assert isinstance(result.error, expected)
    assert result.phases[-1].name == phase_name
    assert result.phases[-1].error_type == expected.error_type
    assert result.attributes["error.type"] == expected.error_type


async def test_deadline_in_an_open_started_phase_closes_it() -> None:
    async def body(clock: PhaseClock, attrs: dict[str, object]) -> None:
        clock.start("http.ttfb")
        await asyncio.sleep(5)

    result = await run_attempt("http", "t", 1, 0.05, body)  # type: ignore[arg-type]
    assert isinstance(result.error, ProbeTimeout)
    assert result.phases[-1].name == "http.ttfb"
    assert result.phases[-1].error_type == "timeout"


def test_outsiders_extend_the_record_only_through_the_clocks_operations() -> None:
    clock = PhaseClock()
    other = PhaseClock()  # e.g. a racing connect attempt, or the lookup shared by `ip: all`
    with other.phase("dns.lookup"):
        pass
    clock.adopt(other.phases)
    mark = clock.mark()
    with clock.phase("tcp.connect"):
        pass
    clock.annotate(mark, {"probe.http.hop": 1})
    lookup, connect = clock.phases
    assert lookup.attributes == {}  # recorded before the mark: left alone
    assert connect.attributes == {"probe.http.hop": 1}
    assert isinstance(clock.phases, tuple)  # a snapshot: appending to it cannot reach the record


def test_a_phase_start_moves_to_an_edge_known_later() -> None:
    clock = PhaseClock()
    opened = clock.start("tls.handshake", 100)
    opened.move_start(None)  # nothing known: the start stays
    opened.move_start(150)  # e.g. the ClientHello's send
    phase = opened.end(200)
    assert (phase.start_ns, phase.end_ns) == (150, 200)
