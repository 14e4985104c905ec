"""What receive stamp a late TCP read gets: the first queued segment's or the newest one's.

A server sends three segments 20 ms apart on loopback; the client reads only after the third,
with recvmsg of the first segment's length, of 1 byte, MSG_PEEK of 1 byte and of that length, and
of 64 KiB. Printed: bytes read, the stamp minus each segment's send time (ms), and how much
TcpExt.TCPRcvCoalesce grew. `--capture` also holds an AF_PACKET socket on lo that is never read
(needs root), as a packet capture that lags would. bench/README.md "First byte under a late loop".

    .venv/bin/python bench/kernel_coalescing.py [--capture]
"""

from __future__ import annotations

import argparse
import socket
import time

from otelprobe.net.kernel_time import SO_TIMESTAMPNS, hold_rx_timestamping, realtime_offset_ns, rx_stamp_ns

_ANCILLARY = socket.CMSG_SPACE(16)
_GAP_S = 0.02


def coalesced() -> int:
    lines = open("/proc/net/netstat").read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))["TCPRcvCoalesce"]
    return -1


def trial(size: int, read_size: int, flags: int, capture: bool) -> tuple[int, list[float], int]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        client.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        server, _ = listener.accept()
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)) if capture else None
        if tap is not None:
            tap.bind(("lo", 0))
        try:
            before, sent = coalesced(), []
            for _ in range(3):
                sent.append(time.perf_counter_ns())
                server.send(b"x" * size)
                time.sleep(_GAP_S)
            merged = coalesced() - before
            data, ancillary, _, _ = client.recvmsg(read_size, _ANCILLARY, flags)
            stamp = rx_stamp_ns(ancillary, realtime_offset_ns()) or 0
            return len(data), [round((stamp - t) / 1e6, 2) for t in sent], merged
        finally:
            for sock in (client, server, tap):
                if sock is not None:
                    sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--capture", action="store_true")
    args = parser.parse_args()
    hold_rx_timestamping(wait_s=1.0)
    print("| segment bytes | read | bytes read | stamp - send of segment 1 / 2 / 3 ms | TCPRcvCoalesce + |")
    print("|---:|---|---:|---|---:|")
    for size in (100, 1024, 16000):
        for label, read_size, flags in (
            ("recvmsg(segment length)", size, 0),
            ("recvmsg(1)", 1, 0),
            ("recvmsg(1, MSG_PEEK)", 1, socket.MSG_PEEK),
            ("recvmsg(segment length, MSG_PEEK)", size, socket.MSG_PEEK),
            ("recvmsg(65536)", 65536, 0),
        ):
            got, offsets, merged = trial(size, read_size, flags, args.capture)
            print(f"| {size} | {label} | {got} | {' / '.join(f'{o:+.1f}' for o in offsets)} | {merged} |")


if __name__ == "__main__":
    main()
