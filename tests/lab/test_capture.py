"""The pure-Python capture sees a loopback connection's segments with kernel times, and the wire
phases derived from them match what the server did (needs root for AF_PACKET)."""

from __future__ import annotations

import asyncio
import os
import struct
import time

import pytest

from otelprobe.lab.verification.capture import SYN, PacketCapture, parse_packet
from otelprobe.lab.verification.wire import wire_phases

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="AF_PACKET capture needs root")


async def test_capture_gives_connect_ttfb_and_transfer_of_a_connection() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        await asyncio.sleep(0.03)  # TTFB
        writer.write(b"head")
        await writer.drain()
        await asyncio.sleep(0.02)  # transfer
        writer.write(b"tail")
        await writer.drain()
        await reader.read(100)
        writer.close()
        await writer.wait_closed()
        done.set()

    done = asyncio.Event()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with PacketCapture(port) as capture:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            client_port = writer.get_extra_info("sockname")[1]
            writer.write(b"GET")
            await reader.readexactly(8)
            writer.close()
            await writer.wait_closed()
            await asyncio.wait_for(done.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()
    # Only our connection: other processes' traffic may share the port number on lo.
    segments = [s for s in capture.result.segments if client_port in (s.src_port, s.dst_port)]
    assert capture.result.drops == 0
    assert segments[0].flags & SYN and segments[0].dst_port == port
    phases = wire_phases(segments, port)[client_port]
    assert phases.connect_ns is not None and 0 < phases.connect_ns < 5_000_000
    assert phases.tls_ns is None and phases.request_ns == 0
    assert phases.ttfb_ns is not None and 0.025e9 < phases.ttfb_ns < 0.2e9
    assert phases.transfer_ns is not None and 0.015e9 < phases.transfer_ns < 0.2e9
    assert all(abs(s.ts_ns - time.perf_counter_ns()) < 10e9 for s in segments)  # monotonic clock


def test_parse_packet_reads_ports_flags_and_payload() -> None:
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, 7, 0, 5 << 4, 0x18, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 20 + 3, 0, 0, 64, 6, 0, bytes(4), bytes(4))
    segment = parse_packet(ip + tcp + b"\x16\x03\x01", 123)
    assert segment is not None
    assert (segment.src_port, segment.dst_port, segment.seq) == (40000, 443, 7)
    assert (segment.flags, segment.payload_bytes, segment.first_byte) == (0x18, 3, 0x16)
    assert parse_packet(b"\x60" + bytes(5) + b"\x11" + bytes(40), 0) is None  # IPv6 UDP
