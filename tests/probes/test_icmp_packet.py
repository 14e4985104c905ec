"""ICMP packet encoding and decoding as pure code: no sockets."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from otelprobe.probes.icmp import _packet as packet


def _ipv4_header(src: str, dst: str, protocol: int, ttl: int = 64, payload_len: int = 0) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + payload_len,
        0,
        0,
        ttl,
        protocol,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header[:10] + struct.pack("!H", packet.checksum(header)) + header[12:]


def _ipv6_header(src: str, dst: str, next_header: int, payload_len: int) -> bytes:
    return (
        struct.pack("!IHBB", 6 << 28, payload_len, next_header, 1)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
    )


def test_checksum_matches_rfc1071_example() -> None:
    # RFC 1071 section 3's worked example sums to 0xddf2; the checksum is its complement.
    assert packet.checksum(bytes.fromhex("0001f203f4f5f6f7")) == (~0xDDF2 & 0xFFFF)


def test_checksum_of_a_packet_including_its_checksum_is_zero() -> None:
    request = packet.encode_echo_request(0x1234, 7, b"hello", v6=False)
    assert packet.checksum(request) == 0


def test_checksum_pads_odd_lengths() -> None:
    assert packet.checksum(b"\x01") == packet.checksum(b"\x01\x00")


def test_echo_request_v4_layout() -> None:
    request = packet.encode_echo_request(0xBEEF, 0x10001, b"xy")  # sequence wraps to 16 bits
    kind, code, _, ident, sequence = struct.unpack("!BBHHH", request[:8])
    assert (kind, code, ident, sequence, request[8:]) == (8, 0, 0xBEEF, 1, b"xy")


def test_echo_request_v6_leaves_checksum_to_the_kernel() -> None:
    request = packet.encode_echo_request(1, 2, b"", v6=True)
    assert request == struct.pack("!BBHHH", 128, 0, 0, 1, 2)


def test_echo_payload_has_the_requested_size() -> None:
    assert len(packet.echo_payload(0)) == 0
    assert packet.echo_payload(300)[255:258] == b"\xff\x00\x01"


def test_parse_echo_reply_from_a_datagram_socket() -> None:
    reply = bytearray(packet.encode_echo_request(42, 3, b"data"))
    reply[0] = packet.ICMP_ECHO_REPLY
    message = packet.parse_icmp(bytes(reply), v6=False, has_ip_header=False)
    assert message.is_echo_reply and (message.ident, message.sequence, message.payload) == (42, 3, b"data")
    assert message.ttl is None and message.quoted is None


def test_parse_echo_reply_from_a_raw_socket_reads_the_ttl() -> None:
    body = bytearray(packet.encode_echo_request(42, 3, b"data"))
    body[0] = packet.ICMP_ECHO_REPLY
    data = _ipv4_header("10.0.0.2", "10.0.0.1", 1, ttl=61, payload_len=len(body)) + bytes(body)
    message = packet.parse_icmp(data, v6=False, has_ip_header=True)
    assert message.is_echo_reply and message.ttl == 61 and message.sequence == 3


def test_parse_icmpv6_echo_reply() -> None:
    data = struct.pack("!BBHHH", 129, 0, 0xABCD, 9, 4) + b"p"
    message = packet.parse_icmp(data, v6=True, has_ip_header=False)
    assert message.is_echo_reply and (message.ident, message.sequence) == (9, 4)


def test_time_exceeded_quoting_a_udp_probe() -> None:
    udp = struct.pack("!HHHH", 40000, 33435, 8, 0)
    quoted = _ipv4_header("10.0.0.1", "192.0.2.9", 17, ttl=1, payload_len=8) + udp
    error = struct.pack("!BBHI", 11, 0, 0, 0) + quoted
    data = _ipv4_header("10.0.0.254", "10.0.0.1", 1, payload_len=len(error)) + error
    message = packet.parse_icmp(data, v6=False, has_ip_header=True)
    assert message.is_time_exceeded and not message.is_echo_reply
    assert message.quoted == packet.Quoted(17, "10.0.0.1", "192.0.2.9", 40000, 33435)


def test_time_exceeded_quoting_an_echo_request() -> None:
    echo = packet.encode_echo_request(777, 5, b"")
    quoted = _ipv4_header("10.0.0.1", "192.0.2.9", 1, payload_len=8) + echo
    data = struct.pack("!BBHI", 11, 0, 0, 0) + quoted
    message = packet.parse_icmp(data, v6=False, has_ip_header=False)
    assert message.quoted is not None and (message.quoted.ident, message.quoted.sequence) == (777, 5)


def test_icmpv6_port_unreachable_quoting_udp() -> None:
    udp = struct.pack("!HHHH", 40000, 33436, 8, 0)
    quoted = _ipv6_header("2001:db8::1", "2001:db8::9", 17, 8) + udp
    data = struct.pack("!BBHI", 1, 4, 0, 0) + quoted
    message = packet.parse_icmp(data, v6=True, has_ip_header=False)
    assert message.is_unreachable and message.code == 4
    assert message.quoted == packet.Quoted(17, "2001:db8::1", "2001:db8::9", 40000, 33436)


def test_icmpv6_time_exceeded_quoting_an_echo_request() -> None:
    echo = packet.encode_echo_request(5, 6, b"", v6=True)
    data = struct.pack("!BBHI", 3, 0, 0, 0) + _ipv6_header("::1", "2001:db8::9", 58, 8) + echo
    message = packet.parse_icmp(data, v6=True, has_ip_header=False)
    assert message.is_time_exceeded and message.quoted is not None
    assert (message.quoted.protocol, message.quoted.ident, message.quoted.sequence) == (58, 5, 6)


@pytest.mark.parametrize(
    ("data", "v6", "has_ip_header", "match"),
    [
        (b"\x00\x00\x00", False, False, "shorter than its 8-byte header"),
        (b"\x60" + bytes(30), False, True, "not an IPv4 header"),
        (b"\x41" + bytes(30), False, True, "bad IPv4 header length"),
        (b"\x0b\x00" + bytes(10), False, False, "not an IPv4 header"),
        (b"\x0b\x00" + bytes(6) + b"\x45" + bytes(22), False, False, "quoted IPv4 datagram is truncated"),
        (b"\x03\x00" + bytes(20), True, False, "quoted IPv6 datagram is truncated"),
    ],
)
def test_malformed_input_raises_packet_error(data: bytes, v6: bool, has_ip_header: bool, match: str) -> None:
    with pytest.raises(packet.PacketError, match=match):
        packet.parse_icmp(data, v6=v6, has_ip_header=has_ip_header)


def test_raw_ipv4_packet_that_is_not_icmp_is_rejected() -> None:
    with pytest.raises(packet.PacketError, match="not ICMP"):
        packet.parse_icmp(_ipv4_header("10.0.0.1", "10.0.0.2", 6) + bytes(8), v6=False, has_ip_header=True)
