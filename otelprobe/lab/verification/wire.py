"""The phases of each TCP connection as the wire shows them, from captured segments.

`lab/verification/capture.py` records the segments; this module turns them into one `WirePhases` per client
connection, the truth that `lab/verification/verify.py` compares the prober's spans with. Definitions, all on
the CLOCK_MONOTONIC capture stamps of the client side of a loopback or lab interface:

- connect: the client's first SYN -> the server's SYN-ACK.
- tls: the ClientHello's first segment -> the last server segment before the client's first
  application-data record (0x17). That is the server's Finished: for TLS 1.3 its first flight,
  for TLS 1.2 its CCS+Finished flight. It assumes the server sends no TLS 1.3 session tickets
  before the request (the verify servers set `num_tickets = 0`); tickets would count as handshake.
- request: first -> last client payload segment of the request (application data).
- ttfb: last request segment -> first server payload segment after it.
- transfer: first server payload segment of the response -> its last one before the client closes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from otelprobe import names
from otelprobe.lab.verification.capture import ACK, FIN, RST, SYN, Segment

_TLS_HANDSHAKE = 0x16
_TLS_APPLICATION_DATA = 0x17


@dataclass(frozen=True, slots=True)
class WirePhases:
    """One connection's phase durations on the wire, in nanoseconds (None: not seen)."""

    client_port: int
    connect_ns: int | None
    tls_ns: int | None
    request_ns: int | None
    ttfb_ns: int | None
    transfer_ns: int | None

    def as_dict(self) -> dict[str, int | None]:
        return {
            names.SPAN_TCP_CONNECT: self.connect_ns,
            names.SPAN_TLS_HANDSHAKE: self.tls_ns,
            names.SPAN_HTTP_REQUEST: self.request_ns,
            names.SPAN_HTTP_TTFB: self.ttfb_ns,
            names.SPAN_HTTP_TRANSFER: self.transfer_ns,
        }


def _connections(segments: Iterable[Segment], server_port: int) -> list[tuple[int, list[Segment]]]:
    """Segments grouped by client port, split where a new SYN reuses a port."""
    by_port: dict[int, list[list[Segment]]] = defaultdict(list)
    for segment in sorted(segments, key=lambda s: s.ts_ns):
        outgoing = segment.dst_port == server_port
        client = segment.src_port if outgoing else segment.dst_port
        starts = outgoing and segment.flags & SYN and not segment.flags & ACK
        if starts and (not by_port[client] or _has_payload(by_port[client][-1])):
            by_port[client].append([])
        if not by_port[client]:
            by_port[client].append([])  # the capture began mid-connection
        by_port[client][-1].append(segment)
    return [(port, group) for port, groups in by_port.items() for group in groups]


def _has_payload(group: list[Segment]) -> bool:
    return any(s.payload_bytes for s in group) or any(s.flags & (FIN | RST) for s in group)


def _first_transmissions(segments: list[Segment]) -> list[Segment]:
    """Drop retransmitted payload (a loopback tail-loss probe repeats a segment a delayed ACK
    has not yet acknowledged): the phase edges are where data first went out."""
    seen: set[tuple[int, int]] = set()
    kept: list[Segment] = []
    for segment in segments:
        if segment.payload_bytes:
            key = (segment.src_port, segment.seq)
            if key in seen:
                continue
            seen.add(key)
        kept.append(segment)
    return kept


def connection_phases(client_port: int, segments: list[Segment], server_port: int) -> WirePhases:
    """The wire phases of one connection (its segments in time order)."""
    syn = next((s for s in segments if s.dst_port == server_port and s.flags & SYN), None)
    synack = next(
        (s for s in segments if s.src_port == server_port and s.flags & SYN and s.flags & ACK), None
    )
    closed = next((s.ts_ns for s in segments if s.dst_port == server_port and s.flags & (FIN | RST)), None)
    segments = _first_transmissions(segments)
    sent = [s for s in segments if s.dst_port == server_port and s.payload_bytes]
    received = [
        s
        for s in segments
        if s.src_port == server_port and s.payload_bytes and (closed is None or s.ts_ns < closed)
    ]
    connect = synack.ts_ns - syn.ts_ns if syn and synack else None
    tls: int | None = None
    request = sent
    if sent and sent[0].first_byte == _TLS_HANDSHAKE:
        request = [s for s in sent if s.first_byte == _TLS_APPLICATION_DATA]
        # TLS 1.3 without middlebox compatibility sends its Finished as 0x17: not the request.
        if request and not any(s.first_byte == 0x14 for s in sent) and len(sent) > 1:
            handshake_flights = [s for s in sent if s.ts_ns < request[0].ts_ns]
            if len(handshake_flights) == 1:
                request = request[1:]
        if request:
            flight = [s for s in received if s.ts_ns < request[0].ts_ns]
            tls = flight[-1].ts_ns - sent[0].ts_ns if flight else None
    if not request:
        return WirePhases(client_port, connect, tls, None, None, None)
    response = [s for s in received if s.ts_ns > request[0].ts_ns]
    if not response:
        return WirePhases(client_port, connect, tls, None, None, None)
    request = [s for s in request if s.ts_ns < response[0].ts_ns]
    return WirePhases(
        client_port,
        connect,
        tls,
        request[-1].ts_ns - request[0].ts_ns,
        response[0].ts_ns - request[-1].ts_ns,
        response[-1].ts_ns - response[0].ts_ns,
    )


SAME_CONNECTION_NS: Final = 20_000_000
"""How far a connection's SYN on the wire may be from the start of the probe's tcp.connect span: the
two are microseconds apart, while another connection on a reused port is seconds away."""


@dataclass(frozen=True, slots=True)
class WireConnection:
    """One connection of the capture: when its SYN left (None: the capture began after it) and
    its phases."""

    syn_ns: int | None
    phases: WirePhases


def wire_connections(segments: Iterable[Segment], server_port: int) -> dict[int, list[WireConnection]]:
    """client port -> every connection the capture saw on it, in order. A port alone does not name
    one connection: on loopback Linux reuses a TIME_WAIT port within seconds (tcp_tw_reuse=2 is
    the default there), so at a few hundred probes per second one capture holds several
    connections of some ports."""
    out: dict[int, list[WireConnection]] = defaultdict(list)
    for port, group in _connections(segments, server_port):
        syn = next((s.ts_ns for s in group if s.dst_port == server_port and s.flags & SYN), None)
        out[port].append(WireConnection(syn, connection_phases(port, group, server_port)))
    return dict(out)


def connection_at(connections: Sequence[WireConnection], connect_start_ns: int) -> WirePhases | None:
    """The connection whose SYN left when a probe's tcp.connect began (`connect_start_ns` on the
    capture's clock), within SAME_CONNECTION_NS; a port's only connection whose SYN was before
    the capture began counts as it."""
    if len(connections) == 1 and connections[0].syn_ns is None:
        return connections[0].phases
    gaps = [(abs(c.syn_ns - connect_start_ns), i) for i, c in enumerate(connections) if c.syn_ns is not None]
    gap, nearest = min(gaps, default=(SAME_CONNECTION_NS + 1, -1))
    return connections[nearest].phases if gap <= SAME_CONNECTION_NS else None


def wire_phases(segments: Iterable[Segment], server_port: int) -> dict[int, WirePhases]:
    """client port -> its connection's wire phases (the last connection, if a port was reused:
    pair probes with `wire_connections` + `connection_at` instead)."""
    return {
        port: connection_phases(port, group, server_port)
        for port, group in _connections(segments, server_port)
    }
