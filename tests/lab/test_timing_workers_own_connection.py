"""`lab verify` (verify.match) and bench/timing_error_workers.py pair each probe with its own
connection when loopback reused its client port within one capture (TIME_WAIT reuse): by the SYN
time, not by the port's last connection (no capture needed: the segments are written here as the
capture records them)."""

from __future__ import annotations

import sys
from pathlib import Path

from otelprobe import names
from otelprobe.lab.verification.capture import ACK, FIN, SYN, Segment
from otelprobe.lab.verification.verify import match
from otelprobe.lab.verification.wire import WireConnection, wire_connections, wire_phases
from otelprobe.results import ProbeResult
from otelprobe.timing import Phase

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from timing_error_workers import own_connections

SERVER, CLIENT, MS = 8443, 40000, 1_000_000
EPOCH_OFFSET = 1_700_000_000 * 1_000_000_000  # span epoch time - capture monotonic time


def connection(syn_ns: int, ttfb_ns: int) -> list[Segment]:
    """Plain HTTP on one client port: handshake, a one-segment request, two response segments."""
    request = syn_ns + 1 * MS
    first = request + ttfb_ns
    return [
        Segment(syn_ns, CLIENT, SERVER, SYN, 0, 0, -1),
        Segment(syn_ns + 20_000, SERVER, CLIENT, SYN | ACK, 0, 0, -1),
        Segment(syn_ns + 30_000, CLIENT, SERVER, ACK, 1, 0, -1),
        Segment(request, CLIENT, SERVER, ACK, 1, 100, ord("G")),
        Segment(first, SERVER, CLIENT, ACK, 1, 500, ord("H")),
        Segment(first + 4 * MS, SERVER, CLIENT, ACK, 501, 500, ord("x")),
        Segment(first + 5 * MS, CLIENT, SERVER, FIN | ACK, 101, 0, -1),
    ]


def probe(syn_ns: int, ttfb_ns: int) -> ProbeResult:
    """The spans of that connection, on the epoch clock they are exported with."""
    start = syn_ns - 10_000 + EPOCH_OFFSET
    request = start + 1 * MS + 10_000
    phases = (
        Phase(names.SPAN_TCP_CONNECT, start, start + 20_000, attributes={names.NETWORK_LOCAL_PORT: CLIENT}),
        Phase(names.SPAN_HTTP_REQUEST, request, request),
        Phase(names.SPAN_HTTP_TTFB, request, request + ttfb_ns),
        Phase(names.SPAN_HTTP_TRANSFER, request + ttfb_ns, request + ttfb_ns + 4 * MS),
    )
    return ProbeResult("http", "t", 1, start, request + ttfb_ns + 4 * MS, 0, 0, phases)


def test_a_reused_client_port_pairs_each_probe_with_its_own_connection() -> None:
    early, late = probe(1_000 * MS, 5 * MS), probe(3_000 * MS, 9 * MS)
    segments = connection(1_000 * MS, 5 * MS) + connection(3_000 * MS, 9 * MS)

    own, reused = own_connections([early, late], segments, SERVER, EPOCH_OFFSET)

    assert reused == 1
    for result, truth in own:
        (wire,) = truth.values()
        assert wire[names.SPAN_HTTP_TTFB] == result.phases[2].duration_ns
        assert wire[names.SPAN_HTTP_TRANSFER] == 4 * MS
    # By the port alone both probes get the later connection: the early one looks 4 ms off.
    last = {port: [WireConnection(None, w)] for port, w in wire_phases(segments, SERVER).items()}
    assert match([early], last, EPOCH_OFFSET)[names.SPAN_HTTP_TTFB] == [(5 * MS, 9 * MS)]
    # lab verify's pairing (wire_connections + the SYN time) gets each probe its own.
    both = match([early, late], wire_connections(segments, SERVER), EPOCH_OFFSET)
    assert both[names.SPAN_HTTP_TTFB] == [(5 * MS, 5 * MS), (9 * MS, 9 * MS)]


def test_a_probe_whose_connection_is_not_in_the_capture_is_left_unpaired() -> None:
    segments = connection(3_000 * MS, 9 * MS)
    own, _ = own_connections([probe(1_000 * MS, 5 * MS)], segments, SERVER, EPOCH_OFFSET)
    assert own[0][1] == {}
