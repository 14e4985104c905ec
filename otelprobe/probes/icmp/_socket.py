"""ICMP sockets: unprivileged datagram ("ping") sockets where allowed, raw sockets otherwise.

Shared by the ICMP echo probe and traceroute. Linux lets a process open `SOCK_DGRAM/IPPROTO_ICMP`
when its group is inside `net.ipv4.ping_group_range` (the kernel then owns the echo identifier
and filters replies for us); a raw socket needs CAP_NET_RAW and sees every ICMP message, so
the caller filters by identifier. When neither is allowed the error names both fixes.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from pathlib import Path
from typing import Final, Literal

from otelprobe.errors import MissingDependencyError

logger = logging.getLogger(__name__)

SocketMode = Literal["auto", "datagram", "raw"]
SocketKind = Literal["datagram", "raw"]

# Linux socket options Python's socket module does not name.
IP_MTU_DISCOVER: Final = 10
IP_PMTUDISC_DO: Final = 2
IPV6_MTU_DISCOVER: Final = 23
IPV6_PMTUDISC_DO: Final = 2
IPV6_UNICAST_HOPS: Final = 16

_PING_GROUP_RANGE: Final = Path("/proc/sys/net/ipv4/ping_group_range")
_DENIED: Final = (errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT)


class ICMPNotPermittedError(MissingDependencyError):
    """This process may open neither a datagram nor a raw ICMP socket; the message names the fix."""


def ping_group_range() -> str:
    """The current `net.ipv4.ping_group_range` ("1 0" means nobody may open datagram sockets)."""
    try:
        return " ".join(_PING_GROUP_RANGE.read_text().split())
    except OSError:
        return "unknown"


def not_permitted_message(mode: SocketMode) -> str:
    groups = f"{os.getegid()} (and supplementary groups {sorted(os.getgroups())})"
    fixes = []
    if mode in ("auto", "datagram"):
        fixes.append(
            "allow unprivileged datagram ICMP sockets for your group: "
            f'`sysctl -w net.ipv4.ping_group_range="0 2147483647"` (now {ping_group_range()!r}, '
            f"your group is {groups})"
        )
    if mode in ("auto", "raw"):
        fixes.append(
            "or give the prober CAP_NET_RAW for raw sockets "
            "(`setcap cap_net_raw+ep $(readlink -f $(which python3))`, or AmbientCapabilities="
            "CAP_NET_RAW in systemd, or securityContext.capabilities.add: [NET_RAW] in Kubernetes)"
        )
    return f"cannot open an ICMP socket ({mode}): " + "; ".join(fixes)


def open_icmp_socket(v6: bool, mode: SocketMode = "auto") -> tuple[socket.socket, SocketKind]:
    """A non-blocking ICMP (v6: ICMPv6) socket of the first permitted kind.

    Raises:
        ICMPNotPermittedError: no permitted kind; the message says how to permit one.
    """
    family = socket.AF_INET6 if v6 else socket.AF_INET
    protocol = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    kinds: list[SocketKind] = ["datagram", "raw"] if mode == "auto" else [mode]
    for kind in kinds:
        sock_type = socket.SOCK_DGRAM if kind == "datagram" else socket.SOCK_RAW
        try:
            sock = socket.socket(family, sock_type, protocol)
        except OSError as exc:
            if exc.errno in _DENIED:
                logger.debug("ICMP %s socket not permitted: %s", kind, exc)
                continue
            raise
        sock.setblocking(False)
        return sock, kind
    raise ICMPNotPermittedError(not_permitted_message(mode))


def set_ttl(sock: socket.socket, v6: bool, ttl: int) -> None:
    """Set the unicast TTL (IPv4) or hop limit (IPv6) of packets sent from now on."""
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_UNICAST_HOPS, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)


def set_dont_fragment(sock: socket.socket, v6: bool) -> None:
    """Never fragment locally and set DF (IPv4): oversized packets fail instead of splitting."""
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
