"""The lab's environment knobs on loopback: backend think-time spikes, the TLS front's record size,
and each vantage's resolver answer time (kept under a fault that hits only some queries)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import statistics
import time
from collections.abc import Iterator

import dns.message
import dns.query
import dns.rcode
import pytest

from otelprobe.lab.certs import LabCA
from otelprobe.lab.emulation.topology import ServerLoop, TargetSide
from otelprobe.lab.faults import parse_fault
from otelprobe.lab.scenario import load_scenario_text
from otelprobe.lab.servers.http import HTTPFaultServer
from otelprobe.lab.servers.measure import http_get
from otelprobe.lab.servers.tls import TLSFront

# --- think-time spikes ------------------------------------------------------------------------


async def test_think_spikes_stall_the_share_of_requests_they_say() -> None:
    async with HTTPFaultServer(think_spike_rate=0.3, think_spike_s=0.1, seed=4) as server:
        ttfbs = [(await http_get(server.host, server.port)).ttfb_s for _ in range(30)]
    spikes = server.think_spikes
    assert 3 <= spikes <= 18  # 30 draws at 0.3
    # The `spikes` slowest answers are the stalled ones (a loaded machine may slow any answer a
    # little, so no fixed threshold splits them): 0.5x to 1.5x of 100 ms, the rest fast.
    ordered = sorted(ttfbs, reverse=True)
    stalled, others = ordered[:spikes], ordered[spikes:]
    assert all(0.05 <= t < 0.15 + 0.05 for t in stalled)
    assert statistics.median(others) < 0.02 and max(others) < min(stalled)


async def test_no_think_spikes_by_default() -> None:
    async with HTTPFaultServer(seed=4) as server:
        ttfbs = [(await http_get(server.host, server.port)).ttfb_s for _ in range(15)]
    assert server.think_spikes == 0 and statistics.median(ttfbs) < 0.02


# --- TLS record size --------------------------------------------------------------------------


def _record_lengths(port: int, context: ssl.SSLContext, body_bytes: int) -> list[int]:
    """GET / through TLS on a raw socket; the lengths of the TLS records that carried the answer."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        for _ in range(20):
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        sock.sendall(outgoing.read())
        tls.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        sock.sendall(outgoing.read())
        raw, plain = b"", b""
        deadline = time.monotonic() + 5.0
        while len(plain) < body_bytes and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            raw += data
            incoming.write(data)
            try:
                while chunk := tls.read(65536):
                    plain += chunk
            except ssl.SSLWantReadError:
                pass
    assert len(plain) >= body_bytes, "the whole answer arrived"
    lengths, offset = [], 0
    while offset + 5 <= len(raw):
        length = int.from_bytes(raw[offset + 3 : offset + 5], "big")
        lengths.append(length)
        offset += 5 + length
    return lengths


@pytest.mark.parametrize("record_bytes", [None, 1400])
async def test_tls_front_cuts_records_at_record_bytes(lab_ca: LabCA, record_bytes: int | None) -> None:
    body_bytes = 48 * 1024
    async with (
        HTTPFaultServer(body_size=body_bytes, coalesce=True) as http,
        TLSFront(lab_ca, ("127.0.0.1", http.port), record_bytes=record_bytes) as front,
    ):
        lengths = await asyncio.to_thread(_record_lengths, front.port, lab_ca.client_context(), body_bytes)
    overhead = 1 + 16 + 256  # content type + AEAD tag, and room for a session ticket's record
    if record_bytes is None:
        assert max(lengths) > 8192  # what the backend wrote in one read goes out in big records
    else:
        assert max(lengths) <= record_bytes + overhead
        assert len(lengths) >= body_bytes // record_bytes


# --- resolver answer time ---------------------------------------------------------------------

SCENARIO = """\
vantages:
  - {name: quick}
  - {name: slow, resolver_delay: 60ms, resolver_jitter: 1ms}
targets:
  - {name: web, kind: http}
  - {name: api, kind: http}
"""


@pytest.fixture
def side() -> Iterator[TargetSide]:
    loop = ServerLoop(None)
    target_side = TargetSide(
        load_scenario_text(SCENARIO), "127.0.0.1", LabCA(["localhost"]), loop, fixed_ports=False
    )
    try:
        target_side.start()
        yield target_side
    finally:
        target_side.close()
        loop.close()


def lookup(side: TargetSide, vantage: str, name: str) -> tuple[dns.rcode.Rcode, float]:
    host, port = side.resolver_address(vantage).split(":")
    began = time.monotonic()
    answer = dns.query.udp(dns.message.make_query(f"{name}.lab.test", "A"), host, port=int(port), timeout=2)
    return answer.rcode(), time.monotonic() - began


def test_each_vantage_resolver_answers_in_its_own_time(side: TargetSide) -> None:
    quick = [lookup(side, "quick", "web")[1] for _ in range(5)]
    slow = [lookup(side, "slow", "web")[1] for _ in range(5)]
    assert statistics.median(quick) < 0.02
    assert min(slow) >= 0.06 and statistics.median(slow) < 0.06 + 0.03


def test_resolver_time_holds_under_a_fault_that_hits_some_queries(side: TargetSide) -> None:
    servfail = parse_fault({"kind": "dns_servfail", "probability": 0.5})
    side.set_faults({("web", "slow"): [servfail]}, {("web", "slow")})
    results = [lookup(side, "slow", "web") for _ in range(16)]
    codes = {code for code, _ in results}
    assert codes == {dns.rcode.SERVFAIL, dns.rcode.NOERROR}  # 16 draws at 0.5
    assert all(seconds >= 0.06 for _, seconds in results)  # failed or not, after the usual time
    delayed = parse_fault({"kind": "dns_delay", "delay": "100ms"})
    side.set_faults({("web", "slow"): [delayed]}, {("web", "slow")})
    code, seconds = lookup(side, "slow", "web")
    assert code == dns.rcode.NOERROR and 0.16 <= seconds < 0.16 + 0.1  # on top of the usual time
    side.set_faults({}, {("web", "slow")})
    assert 0.06 <= lookup(side, "slow", "web")[1] < 0.06 + 0.1
    assert lookup(side, "slow", "api")[1] >= 0.06  # other names kept the usual time throughout
