"""Timing error of the `dns.lookup` phase against the wire: a UDP capture of the DNS port.

The lab DNS server runs in its own process and answers `www.lab.test` after `--delay`. Here,
`--concurrency` workers resolve it back to back through `timed_resolve` with a
`DNSServerResolver` (A and AAAA in parallel, each on its own UDP socket), `--resolves` in all,
while an optional `--busy-ms` callback blocks the event loop now and then, as other probes'
work would. With `--lose-first N` the server ignores the first N datagrams of every query, so
each lookup is answered on try N+1 (retransmits every `--try-timeout`). Truth: an AF_PACKET
capture of lo filtered to the DNS port, each packet with the kernel's receive stamp (on lo that
is the send time too); a lookup on the wire runs from its first query datagram to its last
answer datagram, matched by (client port, DNS ID) — each try has its own port, and the bench
records every try's and which one was answered; the capture runs in its own process. Reports
mean / p99 of |span - wire| for start, end and duration, in ms.

    sudo .venv/bin/python bench/dns_lookup_error.py [--concurrency 1 50 300] [--resolves 600]
        [--delay 0.02] [--busy-ms 0 5] [--user-space] [--lose-first 1 --try-timeout 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message

from otelprobe import names
from otelprobe.errors import DNSError
from otelprobe.net import kernel_time as _kernel_time
from otelprobe.net.dns import channel as _dns_channel
from otelprobe.net.dns.resolver import DNSServerResolver
from otelprobe.net.dns.retransmit import ONE_TRY, RetransmitPolicy
from otelprobe.probes.base import timed_resolve
from otelprobe.settings.common import ResolverConfig
from otelprobe.timing import Phase, PhaseClock

Exchange = tuple[tuple[int, ...], int, int | None]
"""One query's (source port of each try, DNS ID, answered try or None)."""
_EXCHANGES: contextvars.ContextVar[list[Exchange]] = contextvars.ContextVar("exchanges")
_PACKET_OUTGOING = 4
_SO_RCVBUFFORCE = 33
_SOL_PACKET = 263
_PACKET_STATISTICS = 6
_SERVE = """
import asyncio, sys
from pathlib import Path
from otelprobe.lab.servers.dns import DNSFault, DNSFaultServer
async def main():
    async with DNSFaultServer(zone={"www": {"A": ["127.0.0.1"], "AAAA": ["::1"]}}) as server:
        server.set_fault("www", DNSFault(delay=float(sys.argv[2]), drop_first=int(sys.argv[3])))
        Path(sys.argv[1]).write_text(str(server.port))
        await asyncio.Event().wait()
asyncio.run(main())
"""


def record_exchanges() -> None:
    """Note each UDP query's tries (client ports, DNS ID, answered try), so spans can be matched
    to packets (bench only)."""
    original = _dns_channel.DNSChannel.exchange

    async def exchange(
        self: _dns_channel.DNSChannel,
        query: dns.message.Message,
        *,
        tcp_fallback: bool = True,
        retransmit: RetransmitPolicy = ONE_TRY,
    ) -> dns.message.Message:
        try:
            return await original(self, query, tcp_fallback=tcp_fallback, retransmit=retransmit)
        finally:
            tries = self.tries
            if tries is not None:
                _EXCHANGES.get().append((tries.local_ports, query.id, tries.answered))

    setattr(_dns_channel.DNSChannel, "exchange", exchange)  # noqa: B010


def tight_realtime_offset_ns(tries: int = 200) -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC from the tightest of `tries` brackets.

    One bracket can be stretched by preemption; every captured stamp shares this offset, so a
    stretched one would bias the whole run (the prober takes its own per socket).
    """
    best = (1 << 62, 0)
    for _ in range(tries):
        before = time.perf_counter_ns()
        real = time.clock_gettime_ns(time.CLOCK_REALTIME)
        after = time.perf_counter_ns()
        best = min(best, (after - before, real - (before + after) // 2))
    return best[1]


def capture(port: int, out: Path) -> None:
    """Write (client port, DNS ID, is_answer, kernel stamp) of UDP datagrams to/from `port` on lo.

    Runs in its own process (`--capture`) until SIGTERM, so it never takes the GIL from the
    event loop under test; prints the kernel's drop count at the end.
    """
    stop = [False]
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.__setitem__(0, True))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 64 << 20)
    sock.setsockopt(socket.SOL_SOCKET, _kernel_time.SO_TIMESTAMPNS, 1)
    sock.bind(("lo", 3))
    sock.settimeout(0.05)
    offset = tight_realtime_offset_ns()
    with sock, out.open("w") as sink:
        sink.flush()
        while not stop[0]:
            try:
                data, ancillary, _, address = sock.recvmsg(128, 64)
            except (TimeoutError, InterruptedError):
                continue
            if address[2] == _PACKET_OUTGOING or not data:
                continue  # lo shows every packet twice
            version = data[0] >> 4
            if version == 4 and data[9] == 17:
                header = (data[0] & 0x0F) * 4
            elif version == 6 and data[6] == 17:
                header = 40
            else:
                continue
            src, dst = struct.unpack_from("!HH", data, header)
            if port not in (src, dst) or len(data) < header + 10:
                continue
            dns_id = struct.unpack_from("!H", data, header + 8)[0]
            stamp = _kernel_time.rx_stamp_ns(ancillary, offset) or time.perf_counter_ns()
            is_answer = int(src == port)
            sink.write(f"{dst if is_answer else src} {dns_id} {is_answer} {stamp}\n")
        _, drops = struct.unpack("II", sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8))
    print(drops, flush=True)


def udp_rcvbuf_errors() -> int:
    """The host's UDP RcvbufErrors counter: datagrams dropped because a socket's buffer was full."""
    header, values = (
        line.split()[1:]
        for line in Path("/proc/net/snmp").read_text().splitlines()
        if line.startswith("Udp:")
    )
    return int(dict(zip(header, values, strict=True))["RcvbufErrors"])


def read_capture(path: Path) -> dict[tuple[int, int, bool], int]:
    """(client port, DNS ID, is_answer) -> first kernel stamp seen."""
    packets: dict[tuple[int, int, bool], int] = {}
    for line in path.read_text().splitlines():
        client, dns_id, is_answer, stamp = (int(field) for field in line.split())
        packets.setdefault((client, dns_id, bool(is_answer)), stamp)
    return packets


async def run(
    port: int, concurrency: int, resolves: int, busy_ms: float, try_timeout_s: float | None
) -> list[tuple[Phase, list[Exchange]]]:
    fields: dict[str, object] = {"server": f"127.0.0.1:{port}"}
    if try_timeout_s is not None:
        fields["try_timeout"] = try_timeout_s
    resolver = DNSServerResolver(ResolverConfig.model_validate(fields))
    results: list[tuple[Phase, list[Exchange]]] = []
    remaining = [resolves]

    async def worker(index: int) -> None:
        await asyncio.sleep(index * 0.2 / concurrency)  # staggered starts
        while remaining[0] > 0:
            remaining[0] -= 1
            exchanges: list[Exchange] = []
            _EXCHANGES.set(exchanges)
            clock = PhaseClock()
            with contextlib.suppress(DNSError):  # counted as a lookup without a wire match
                await timed_resolve(clock, resolver, "www.lab.test", "any", {})
            results.append((clock.phases[0], exchanges))

    async def busy() -> None:
        while busy_ms:
            await asyncio.sleep(0.005)
            until = time.perf_counter() + busy_ms / 1e3
            while time.perf_counter() < until:
                pass

    burner = asyncio.create_task(busy())
    await asyncio.gather(*(asyncio.create_task(worker(i)) for i in range(concurrency)))
    burner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await burner
    return results


def errors_ms(
    results: list[tuple[Phase, list[Exchange]]], packets: dict[tuple[int, int, bool], int]
) -> dict[str, list[float]]:
    """|span - wire| per lookup: first try's query datagram -> the answering try's answer datagram.

    Lookups that went on without a family are left out: they end when the resolution delay ran
    out, by design, not at an answer.
    """
    out: dict[str, list[float]] = {"start": [], "end": [], "duration": []}
    for phase, exchanges in results:
        if phase.failed or not exchanges or names.PROBE_DNS_MISSING_FAMILY in phase.attributes:
            continue
        if any(answered is None for _, _, answered in exchanges):
            continue
        sent = [packets.get((ports[0], i, False)) for ports, i, _ in exchanges]
        answered = [packets.get((ports[(a or 1) - 1], i, True)) for ports, i, a in exchanges]
        if None in sent or None in answered:
            continue
        wire_start = min(s for s in sent if s is not None)
        wire_end = max(a for a in answered if a is not None)
        out["start"].append(abs(phase.start_ns - wire_start) / 1e6)
        out["end"].append(abs(phase.end_ns - wire_end) / 1e6)
        out["duration"].append(abs(phase.duration_ns - (wire_end - wire_start)) / 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50, 300])
    parser.add_argument("--resolves", type=int, default=600)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--busy-ms", type=float, nargs="+", default=[0.0, 5.0])
    parser.add_argument("--user-space", action="store_true", help="kernel stamps off (baseline)")
    parser.add_argument(
        "--lose-first", type=int, default=0, help="datagrams of each query the server ignores"
    )
    parser.add_argument("--try-timeout", type=float, default=None, help="resolver try_timeout (s)")
    parser.add_argument("--capture", nargs=2, metavar=("PORT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.capture:
        capture(int(args.capture[0]), Path(args.capture[1]))
        return
    if args.user_space:
        setattr(_kernel_time, "enable_rx_timestamps", lambda sock: False)  # noqa: B010
    record_exchanges()
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        server = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(port_file), str(args.delay), str(args.lose_first)]
        )
        try:
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            port = int(port_file.read_text())
            mode = "user-space marks" if args.user_space else "kernel stamps"
            lost = f", first {args.lose_first} datagram(s) of each query lost" if args.lose_first else ""
            print(f"# dns.lookup vs wire ({mode}); server delay {args.delay * 1e3:.0f} ms{lost}")
            columns = "start mean / p99 | end mean / p99 | duration mean / p99"
            print(f"| concurrency | loop busy ms / 5 ms | lookups | {columns} |")
            print("|---:|---:|---:|---:|---:|---:|")
            for busy_ms in args.busy_ms:
                for concurrency in args.concurrency:
                    out = Path(tmp) / f"capture-{busy_ms}-{concurrency}"
                    child = subprocess.Popen(
                        [sys.executable, __file__, "--capture", str(port), str(out)], stdout=subprocess.PIPE
                    )
                    try:
                        while not out.exists():
                            time.sleep(0.02)
                        time.sleep(0.1)
                        rcvbuf_errors = udp_rcvbuf_errors()
                        results = asyncio.run(
                            run(port, concurrency, max(args.resolves, concurrency), busy_ms, args.try_timeout)
                        )
                        time.sleep(0.1)
                    finally:
                        child.terminate()
                        stdout, _ = child.communicate()
                    packets = read_capture(out)
                    drops = stdout.decode().strip() or "?"
                    rcvbuf_errors = udp_rcvbuf_errors() - rcvbuf_errors
                    errors = errors_ms(results, packets)
                    cells = [
                        f"{statistics.fmean(v):.3f} / {sorted(v)[int(0.99 * (len(v) - 1))]:.3f}" if v else "-"
                        for v in errors.values()
                    ]
                    failed = sum(phase.failed for phase, _ in results)
                    median_ms = statistics.median(p.duration_ns / 1e6 for p, _ in results)
                    print(
                        f"| {concurrency} | {busy_ms:g} | {len(errors['end'])}/{len(results)}"
                        f" ({failed} failed, {rcvbuf_errors} UDP rcvbuf drops, {drops} capture drops,"
                        f" median lookup {median_ms:.1f} ms) | " + " | ".join(cells) + " |",
                        flush=True,
                    )
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
