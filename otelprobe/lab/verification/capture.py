"""A packet capture in pure Python: TCP segments to and from one port, with kernel timestamps.

`otelprobe lab verify` and bench/timing_error.py take the wire's view of every connection from
it and compare the prober's phase spans with it. It runs as its own process (`python -m
otelprobe.lab.verification.capture`), so parsing packets never competes with the prober's event loop for the
GIL; an AF_PACKET socket with a classic BPF filter passes only the wanted port, and each packet
carries the kernel's receive stamp, so a late capture loop does not blur the truth. Timestamps
are put on CLOCK_MONOTONIC, the clock every process's `perf_counter_ns` reads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

from otelprobe.net.kernel_time import SO_TIMESTAMPNS, realtime_offset_ns, rx_stamp_ns

ETH_P_ALL: Final = 0x0003
_SO_ATTACH_FILTER: Final = 26
_SO_RCVBUFFORCE: Final = 33
_SOL_PACKET: Final = 263
_PACKET_STATISTICS: Final = 6
_PACKET_OUTGOING: Final = 4
_SNAP_BYTES: Final = 128
_SKF_AD_PKTTYPE: Final = 0xFFFFF000 + 4

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


@dataclass(frozen=True, slots=True)
class Segment:
    """One captured TCP segment (headers, payload size and first payload byte)."""

    ts_ns: int
    """Kernel receive stamp on the CLOCK_MONOTONIC / perf_counter_ns clock."""
    src_port: int
    dst_port: int
    flags: int
    seq: int
    payload_bytes: int
    first_byte: int
    """First payload byte (the TLS record type), -1 without payload."""

    def to_line(self) -> str:
        fields = (
            self.ts_ns,
            self.src_port,
            self.dst_port,
            self.flags,
            self.seq,
            self.payload_bytes,
            self.first_byte,
        )
        return " ".join(map(str, fields))

    @classmethod
    def from_line(cls, line: str) -> Segment:
        ts, src, dst, flags, seq, size, first = (int(part) for part in line.split())
        return cls(ts, src, dst, flags, seq, size, first)


def _port_filter(port: int) -> bytes:
    """cBPF: not an outgoing copy (lo shows each packet twice), IPv4/IPv6 TCP, either port == `port`."""

    def op(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)

    accept, drop = 20, 21
    program = [
        op(0x20, 0, 0, _SKF_AD_PKTTYPE),  # 0 ld pkttype
        op(0x15, drop - 2, 0, _PACKET_OUTGOING),  # 1
        op(0x30, 0, 0, 0),  # 2 ldb [0]
        op(0x74, 0, 0, 4),  # 3 rsh 4
        op(0x15, 0, 7, 4),  # 4 ipv4? else -> 12
        op(0x30, 0, 0, 9),  # 5 ldb [9] protocol
        op(0x15, 0, drop - 7, 6),  # 6 tcp?
        op(0xB1, 0, 0, 0),  # 7 ldxb 4*([0]&0xf)
        op(0x48, 0, 0, 0),  # 8 ldh [x+0] source port
        op(0x15, accept - 10, 0, port),  # 9
        op(0x48, 0, 0, 2),  # 10 ldh [x+2] destination port
        op(0x15, accept - 12, drop - 12, port),  # 11 (offsets relative to the next instruction)
        op(0x15, 0, drop - 13, 6),  # 12 ipv6? (A still holds the version)
        op(0x30, 0, 0, 6),  # 13 ldb [6] next header
        op(0x15, 0, drop - 15, 6),  # 14 tcp?
        op(0x28, 0, 0, 40),  # 15 ldh [40]
        op(0x15, accept - 17, 0, port),  # 16
        op(0x28, 0, 0, 42),  # 17 ldh [42]
        op(0x15, accept - 19, drop - 19, port),  # 18
        op(0x06, 0, 0, 0),  # 19 (unused)
        op(0x06, 0, 0, _SNAP_BYTES),  # 20 accept
        op(0x06, 0, 0, 0),  # 21 drop
    ]
    return b"".join(program)


def _attach_filter(sock: socket.socket, program: bytes) -> ctypes.Array[ctypes.c_char]:
    """SO_ATTACH_FILTER; returns the buffer, which must outlive the call."""
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    return buffer


def parse_packet(packet: bytes, ts_ns: int) -> Segment | None:
    """The TCP segment in an IP packet (as AF_PACKET/SOCK_DGRAM gives it), or None."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20 and packet[9] == 6:
        header = (packet[0] & 0x0F) * 4
        total = struct.unpack_from("!H", packet, 2)[0]
    elif version == 6 and len(packet) >= 40 and packet[6] == 6:
        header, total = 40, 40 + struct.unpack_from("!H", packet, 4)[0]
    else:
        return None
    if len(packet) < header + 14:
        return None
    src, dst, seq = struct.unpack_from("!HHI", packet, header)
    tcp_header = (packet[header + 12] >> 4) * 4
    flags = packet[header + 13]
    payload = total - header - tcp_header
    start = header + tcp_header
    first = packet[start] if payload > 0 and len(packet) > start else -1
    return Segment(ts_ns, src, dst, flags, seq, payload, first)


def capture(interface: str, port: int, out: Path, stop: list[bool], ready: Path | None = None) -> int:
    """Write every segment to/from `port` on `interface` to `out` until `stop[0]`; returns drops."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 64 << 20)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        keep = _attach_filter(sock, _port_filter(port))
        sock.bind((interface, ETH_P_ALL))
        sock.settimeout(0.1)
        offset = realtime_offset_ns()
        if ready is not None:
            ready.write_text("ready\n")
        with out.open("w") as sink:
            while not stop[0]:
                try:
                    packet, ancillary, _, _ = sock.recvmsg(_SNAP_BYTES, 64)
                except TimeoutError:
                    continue
                except InterruptedError:
                    continue
                stamp = rx_stamp_ns(ancillary, offset) or time.perf_counter_ns()
                segment = parse_packet(packet, stamp)
                if segment is not None:
                    sink.write(segment.to_line() + "\n")
        _, drops = struct.unpack("II", sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8))
        del keep
        return int(drops)
    finally:
        sock.close()


@dataclass(frozen=True, slots=True)
class CaptureResult:
    segments: list[Segment]
    drops: int
    """Packets the kernel dropped because the capture fell behind (then the figures are partial)."""


class PacketCapture:
    """Runs the capture process for `port` on `interface` (inside network namespace `netns` if set).

    Use as `async with PacketCapture(port) as cap: ...` then `cap.result`; needs root (CAP_NET_RAW).
    """

    def __init__(self, port: int, interface: str = "lo", *, netns: str | None = None) -> None:
        self.port, self.interface, self.netns = port, interface, netns
        self._process: asyncio.subprocess.Process | None = None
        self._dir: Path | None = None
        self.result = CaptureResult([], 0)

    async def __aenter__(self) -> PacketCapture:
        import tempfile

        self._dir = Path(tempfile.mkdtemp(prefix="otelprobe-capture-"))
        prefix: list[str] = ["ip", "netns", "exec", self.netns] if self.netns else []
        command = [
            *prefix,
            sys.executable,
            "-m",
            "otelprobe.lab.verification.capture",
            "--interface",
            self.interface,
            "--port",
            str(self.port),
            "--out",
            str(self._dir / "segments"),
            "--ready",
            str(self._dir / "ready"),
        ]
        self._process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
        async with asyncio.timeout(10):
            while not (self._dir / "ready").exists():
                if self._process.returncode is not None:
                    raise RuntimeError(f"capture process exited with {self._process.returncode}")
                await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._process is not None and self._dir is not None
        await asyncio.sleep(0.05)  # let the last packets reach the capture socket
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(signal.SIGTERM)
        stdout, _ = await self._process.communicate()
        path = self._dir / "segments"
        lines = path.read_text().splitlines() if path.exists() else []
        drops = int(stdout.decode().strip() or 0) if self._process.returncode == 0 else -1
        self.result = CaptureResult([Segment.from_line(line) for line in lines if line], drops)
        for child in self._dir.iterdir():
            child.unlink()
        self._dir.rmdir()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="capture TCP segments to/from one port")
    parser.add_argument("--interface", default="lo")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ready", type=Path)
    args = parser.parse_args(argv)
    stop = [False]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(capture(args.interface, args.port, args.out, stop, args.ready), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
