"""`lab verify` pairs each probe with the wire phases of the connection it used (no capture needed)."""

from __future__ import annotations

from otelprobe.lab.verification.verify import match
from otelprobe.lab.verification.wire import WireConnection, WirePhases
from otelprobe.names import PROBE_CONNECT_ABANDONED as ABANDONED
from otelprobe.results import ProbeResult
from otelprobe.timing import Phase


def test_match_pairs_the_connection_that_won_a_race() -> None:
    port_key, peer_key = "network.local.port", "network.peer.address"
    phases = (
        Phase(
            "tcp.connect", 0, 100, "connect_refused", "connection_refused", {port_key: 1001, peer_key: "::1"}
        ),
        Phase("tcp.connect", 50, 400, attributes={port_key: 1002, peer_key: "127.0.0.2", ABANDONED: True}),
        Phase("tcp.connect", 100, 300, attributes={port_key: 1003, peer_key: "127.0.0.1"}),
        Phase("tls.handshake", 300, 900),
    )
    result = ProbeResult("http", "t", 1, 0, 900, 0, 0, phases)
    wire = {
        1002: [WireConnection(50, WirePhases(1002, 999, None, None, None, None))],
        1003: [WireConnection(100, WirePhases(1003, 190, 610, None, None, None))],
    }
    pairs = match([result], wire)
    assert pairs == {"tcp.connect": [(200, 190)], "tls.handshake": [(600, 610)]}
