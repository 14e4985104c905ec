"""ICMP and ICMPv6 packets as bytes: echo request encoding, checksums, and reply parsing.

Pure code with no sockets: the ICMP probe and traceroute encode what they send and decode what
the kernel hands back here, including the datagram an error message quotes (time exceeded,
destination unreachable), which is how a reply is matched to the probe that caused it.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

ICMP_ECHO_REPLY: Final = 0
ICMP_DEST_UNREACHABLE: Final = 3
ICMP_ECHO_REQUEST: Final = 8
ICMP_TIME_EXCEEDED: Final = 11
ICMP6_DEST_UNREACHABLE: Final = 1
ICMP6_PACKET_TOO_BIG: Final = 2
ICMP6_TIME_EXCEEDED: Final = 3
ICMP6_ECHO_REQUEST: Final = 128
ICMP6_ECHO_REPLY: Final = 129

IPPROTO_ICMP: Final = 1
IPPROTO_UDP: Final = 17
IPPROTO_ICMPV6: Final = 58
_IPV6_HEADER_LEN: Final = 40
_HEADER: Final = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence


class PacketError(ValueError):
    """Bytes that are not a well-formed ICMP message of the expected kind."""


@dataclass(frozen=True, slots=True)
class Quoted:
    """The start of the datagram an ICMP error message carries back.

    For a quoted UDP datagram `ident`/`sequence` are its source/destination ports; for a quoted
    ICMP echo request they are its identifier and sequence number.
    """

    protocol: int
    source: str
    destination: str
    ident: int
    sequence: int


@dataclass(frozen=True, slots=True)
class ICMPMessage:
    """One received ICMP or ICMPv6 message, decoded."""

    type: int
    code: int
    ident: int
    sequence: int
    payload: bytes
    v6: bool
    ttl: int | None = None  # the reply's IP TTL, when the socket handed us the IPv4 header
    quoted: Quoted | None = None  # the offending datagram, for error messages

    @property
    def is_echo_reply(self) -> bool:
        return self.type == (ICMP6_ECHO_REPLY if self.v6 else ICMP_ECHO_REPLY)

    @property
    def is_time_exceeded(self) -> bool:
        return self.type == (ICMP6_TIME_EXCEEDED if self.v6 else ICMP_TIME_EXCEEDED)

    @property
    def is_unreachable(self) -> bool:
        if self.v6:
            return self.type in (ICMP6_DEST_UNREACHABLE, ICMP6_PACKET_TOO_BIG)
        return self.type == ICMP_DEST_UNREACHABLE


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's-complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\x00"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def encode_echo_request(ident: int, sequence: int, payload: bytes, *, v6: bool = False) -> bytes:
    """An echo request. ICMPv6 checksums cover a pseudo-header the kernel fills in, so it is left 0."""
    kind = ICMP6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST
    header = _HEADER.pack(kind, 0, 0, ident & 0xFFFF, sequence & 0xFFFF)
    if v6:
        return header + payload
    return _HEADER.pack(kind, 0, checksum(header + payload), ident & 0xFFFF, sequence & 0xFFFF) + payload


def echo_payload(size: int) -> bytes:
    """A recognizable payload of `size` bytes (like ping's incrementing pattern)."""
    return bytes(i & 0xFF for i in range(size))


def parse_icmp(data: bytes, *, v6: bool, has_ip_header: bool) -> ICMPMessage:
    """Decode what an ICMP socket returned.

    Args:
        data: the bytes from recvfrom.
        v6: an ICMPv6 socket (never has an IP header in front).
        has_ip_header: an IPv4 raw socket, which hands over the IPv4 header too.

    Raises:
        PacketError: the bytes are truncated or not ICMP.
    """
    ttl: int | None = None
    if has_ip_header and not v6:
        header_len, ttl, protocol = _ipv4_header(data)
        if protocol != IPPROTO_ICMP:
            raise PacketError(f"IPv4 protocol {protocol} is not ICMP")
        data = data[header_len:]
    if len(data) < _HEADER.size:
        raise PacketError(f"ICMP message of {len(data)} bytes is shorter than its 8-byte header")
    kind, code, _, ident, sequence = _HEADER.unpack_from(data)
    body = data[_HEADER.size :]
    message = ICMPMessage(kind, code, ident, sequence, body, v6, ttl)
    if message.is_time_exceeded or message.is_unreachable:
        # Error messages carry 4 unused (or MTU) bytes, then the offending datagram.
        return ICMPMessage(kind, code, 0, 0, body, v6, ttl, parse_quoted(body, v6=v6))
    return message


def parse_quoted(datagram: bytes, *, v6: bool) -> Quoted:
    """Decode the IP header and first 8 transport bytes quoted in an ICMP error message."""
    if v6:
        if len(datagram) < _IPV6_HEADER_LEN + 8:
            raise PacketError("quoted IPv6 datagram is truncated")
        # Extension headers in a quoted probe are not expected: we never send any.
        protocol = datagram[6]
        source = str(ipaddress.IPv6Address(datagram[8:24]))
        destination = str(ipaddress.IPv6Address(datagram[24:40]))
        transport = datagram[_IPV6_HEADER_LEN : _IPV6_HEADER_LEN + 8]
    else:
        header_len, _, protocol = _ipv4_header(datagram)
        if len(datagram) < header_len + 8:
            raise PacketError("quoted IPv4 datagram is truncated")
        source = str(ipaddress.IPv4Address(datagram[12:16]))
        destination = str(ipaddress.IPv4Address(datagram[16:20]))
        transport = datagram[header_len : header_len + 8]
    if protocol == IPPROTO_UDP:
        sport, dport = struct.unpack_from("!HH", transport)
        return Quoted(protocol, source, destination, sport, dport)
    ident, sequence = struct.unpack_from("!HH", transport, 4)
    return Quoted(protocol, source, destination, ident, sequence)


def _ipv4_header(data: bytes) -> tuple[int, int, int]:
    """(header length, TTL, protocol) of an IPv4 header."""
    if len(data) < 20 or data[0] >> 4 != 4:
        raise PacketError("not an IPv4 header")
    header_len = (data[0] & 0x0F) * 4
    if header_len < 20 or len(data) < header_len:
        raise PacketError(f"bad IPv4 header length {header_len}")
    return header_len, data[8], data[9]
