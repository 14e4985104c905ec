"""Path traces: TTL-limited UDP or ICMP probes, one `traceroute.hop` phase per hop.

Used by the ICMP probe's `mode: traceroute` and, through `trace_path`, by any probe that attaches
a path trace to a failed attempt (`traceroute_on_failure`). Every TTL is sent at once and the
replies are collected until the deadline, so a trace costs one timeout, not one per hop. Replies
arrive on a raw ICMP socket (CAP_NET_RAW): datagram ICMP sockets never see errors caused by
other sockets' packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from dataclasses import dataclass
from typing import Final, Literal

from otelprobe import names
from otelprobe.probes.icmp import _packet as packet
from otelprobe.probes.icmp._socket import open_icmp_socket, set_ttl
from otelprobe.timing import AttributeValue, Phase, PhaseClock

TraceMethod = Literal["udp", "icmp"]

FIRST_PORT: Final = 33434  # traceroute(8)'s base port; probe n goes to FIRST_PORT + n
_PORT_UNREACHABLE_V4: Final = 3
_PORT_UNREACHABLE_V6: Final = 4


@dataclass(slots=True)
class _Hop:
    ttl: int
    send_ns: int
    recv_ns: int | None = None
    responder: str | None = None
    reply: str = "none"
    reached: bool = False
    terminal: bool = False  # the path ends here, reached or not (e.g. host unreachable)


async def trace_path(
    host_ip: str,
    *,
    max_hops: int = 30,
    timeout_s: float = 3.0,
    clock: PhaseClock,
    method: TraceMethod = "udp",
    first_port: int = FIRST_PORT,
) -> list[Phase]:
    """Trace the path to `host_ip`, recording one `traceroute.hop` phase per hop on `clock`.

    Hops after the destination are dropped; so are unanswered hops after the last answered one,
    except one, which shows where the path went dark. A hop's phase runs from its probe's send
    to its reply (to the end of the wait when none came) and carries the TTL, the responder
    (`network.peer.address`), the reply kind and whether it is the destination. Unanswered hops
    are not errors: routers often drop TTL-expired packets silently.

    Args:
        host_ip: an IPv4 or IPv6 literal.
        max_hops: the largest TTL / hop limit sent.
        timeout_s: how long to wait for replies, for the whole trace.
        clock: the attempt's clock, which receives the hop phases.
        method: "udp" (to ports first_port+ttl, like traceroute(8)) or "icmp" (echo requests).
        first_port: base UDP port.

    Returns:
        The recorded hop phases, by TTL.

    Raises:
        ICMPNotPermittedError: no raw ICMP socket may be opened (needs CAP_NET_RAW).
    """
    v6 = ":" in host_ip
    receiver, _ = open_icmp_socket(v6, "raw")
    sender: socket.socket | None = None
    ident = random.randrange(1, 0xFFFF)
    try:
        if method == "udp":
            sender = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
            sender.setblocking(False)
            sender.bind(("::" if v6 else "0.0.0.0", 0))
            ident = sender.getsockname()[1]
        hops = _send_all(receiver, sender, host_ip, v6, ident, max_hops, first_port, clock)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await _collect(receiver, host_ip, v6, method, ident, first_port, hops)
    finally:
        receiver.close()
        if sender is not None:
            sender.close()
    wait_end = clock.now_ns()
    return [
        clock.record(
            names.SPAN_TRACEROUTE_HOP, hop.send_ns, hop.recv_ns or wait_end, None, _attributes(hop, method)
        )
        for hop in _kept(hops)
    ]


def _send_all(
    receiver: socket.socket,
    sender: socket.socket | None,
    host_ip: str,
    v6: bool,
    ident: int,
    max_hops: int,
    first_port: int,
    clock: PhaseClock,
) -> dict[int, _Hop]:
    """One probe per TTL; non-blocking sends of a few bytes complete at once."""
    hops: dict[int, _Hop] = {}
    for ttl in range(1, max_hops + 1):
        if sender is not None:
            set_ttl(sender, v6, ttl)
            hops[ttl] = _Hop(ttl, clock.now_ns())
            sender.sendto(b"otelprobe", (host_ip, first_port + ttl))
        else:
            set_ttl(receiver, v6, ttl)
            request = packet.encode_echo_request(ident, ttl, b"otelprobe", v6=v6)
            hops[ttl] = _Hop(ttl, clock.now_ns())
            receiver.sendto(request, (host_ip, 0))
    return hops


async def _collect(
    receiver: socket.socket,
    host_ip: str,
    v6: bool,
    method: TraceMethod,
    ident: int,
    first_port: int,
    hops: dict[int, _Hop],
) -> None:
    """Read ICMP messages until every hop up to the end of the path has answered."""
    loop = asyncio.get_running_loop()
    while not _complete(hops):
        data, source = await loop.sock_recvfrom(receiver, 65535)
        recv_ns = PhaseClock.now_ns()
        try:
            message = packet.parse_icmp(data, v6=v6, has_ip_header=not v6)
        except packet.PacketError:
            continue
        ttl = _ttl_of(message, host_ip, method, ident, first_port)
        hop = hops.get(ttl) if ttl is not None else None
        if hop is None or hop.recv_ns is not None:
            continue
        hop.recv_ns = recv_ns
        hop.responder = str(source[0]).split("%")[0]
        hop.reply, hop.reached, hop.terminal = _classify(message, v6)


def _ttl_of(
    message: packet.ICMPMessage, host_ip: str, method: TraceMethod, ident: int, first_port: int
) -> int | None:
    """Which of our probes a message answers (its TTL), or None when it is not about ours."""
    if method == "icmp" and message.is_echo_reply:
        return message.sequence if message.ident == ident else None
    quoted = message.quoted
    if quoted is None or quoted.destination != host_ip or quoted.ident != ident:
        return None
    if method == "udp":
        return quoted.sequence - first_port if quoted.protocol == packet.IPPROTO_UDP else None
    return quoted.sequence if quoted.protocol in (packet.IPPROTO_ICMP, packet.IPPROTO_ICMPV6) else None


def _classify(message: packet.ICMPMessage, v6: bool) -> tuple[str, bool, bool]:
    """(reply kind, destination reached, path ends here)."""
    if message.is_echo_reply:
        return "echo_reply", True, True
    if message.is_time_exceeded:
        return "time_exceeded", False, False
    port_unreachable = _PORT_UNREACHABLE_V6 if v6 else _PORT_UNREACHABLE_V4
    unreachable = packet.ICMP6_DEST_UNREACHABLE if v6 else packet.ICMP_DEST_UNREACHABLE
    if message.type == unreachable and message.code == port_unreachable:
        return "port_unreachable", True, True
    return f"unreachable_code_{message.code}", False, True


def _complete(hops: dict[int, _Hop]) -> bool:
    """The path's end has answered, and so has every hop before it."""
    end = min((hop.ttl for hop in hops.values() if hop.terminal), default=None)
    return end is not None and all(hops[ttl].recv_ns is not None for ttl in range(1, end))


def _kept(hops: dict[int, _Hop]) -> list[_Hop]:
    ordered = [hops[ttl] for ttl in sorted(hops)]
    end = next((i for i, hop in enumerate(ordered) if hop.terminal), None)
    if end is not None:
        return ordered[: end + 1]
    answered = [i for i, hop in enumerate(ordered) if hop.recv_ns is not None]
    last = answered[-1] + 1 if answered else 0
    return ordered[: last + 1]


def _attributes(hop: _Hop, method: TraceMethod) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        names.PROBE_HOP_TTL: hop.ttl,
        names.PROBE_TRACEROUTE_REPLY: hop.reply,
        names.PROBE_TRACEROUTE_REACHED: hop.reached,
        names.PROBE_TRACEROUTE_METHOD: method,
    }
    if hop.responder is not None:
        attrs[names.NETWORK_PEER_ADDRESS] = hop.responder
    return attrs
