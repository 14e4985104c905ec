"""What the kernel keeps of a segment's receive stamp once later segments queue behind it.

The reason for net/prompt_read.py, checked on the running kernel: in-order segments that wait in
a TCP receive queue are merged into one buffer stamped with the *newest* arrival, so a late reader
cannot get the first segment's stamp back, not even with a one-byte read or MSG_PEEK.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from otelprobe.net.kernel_time import SO_TIMESTAMPNS, hold_rx_timestamping, realtime_offset_ns, rx_stamp_ns

_ANCILLARY = socket.CMSG_SPACE(16)
_GAP_S = 0.02


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    assert hold_rx_timestamping(wait_s=1.0)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        client.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        server, _ = listener.accept()
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with client, server:
            yield client, server


@pytest.mark.parametrize("flags", [0, socket.MSG_PEEK], ids=["read", "peek"])
def test_a_late_one_byte_read_gets_the_newest_segments_stamp(
    pair: tuple[socket.socket, socket.socket], flags: int
) -> None:
    client, server = pair
    sent = []
    for _ in range(3):  # three segments, 20 ms apart, all queued before the read
        sent.append(time.perf_counter_ns())
        server.send(b"x" * 1024)
        time.sleep(_GAP_S)
    data, ancillary, _, _ = client.recvmsg(1, _ANCILLARY, flags)
    stamp = rx_stamp_ns(ancillary, realtime_offset_ns())
    assert data == b"x" and stamp is not None
    if stamp - sent[0] < _GAP_S * 1e9 / 2:
        # Only while something holds a clone of the queued segment (a packet capture on lo that
        # has not read it yet) are segments left apart; then the first keeps its own stamp.
        pytest.skip("segments were not merged: a packet capture is running on this host?")
    # The stamp is the third segment's arrival, not the first's.
    assert stamp - sent[2] < _GAP_S * 1e9 / 2
    assert stamp - sent[0] > _GAP_S * 1e9 * 1.5
