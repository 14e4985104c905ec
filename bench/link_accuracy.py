"""Achieved vs requested delay, loss and rate of the userspace link emulator (needs root).

Delay: the same one-way delay is requested in each direction, so the expected TCP connect time
(SYN -> SYN-ACK, measured at the client socket in the vantage namespace) is 2 x the one-way delay.
Connects are started open-loop at --rate per second, like a busy prober. Loss: UDP datagrams
counted at a sink in the target namespace. Rate: TCP goodput of a download through a bottleneck.

    sudo .venv/bin/python bench/link_accuracy.py [--samples 300] [--rate 200] [--no-realtime]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import time
from pathlib import Path

from otelprobe.lab.emulation.link import TARGET_IPV4, Link, LinkEmulator
from otelprobe.lab.emulation.netns import Lab

PORT = 8080
UDP_PORT = 9000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        line = await reader.readline()
        if line.strip().isdigit():
            writer.write(b"x" * int(line))
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


async def connect_once(link: Link, start_at: float) -> float | None:
    loop = asyncio.get_running_loop()
    sock = await link.vantage.acall(socket.socket)
    with sock:
        sock.setblocking(False)
        await asyncio.sleep(max(0.0, start_at - loop.time()))
        start = time.perf_counter()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (TARGET_IPV4, PORT)), 5.0)
        except TimeoutError:
            return None
        return time.perf_counter() - start


async def bench_delay(link: Link, samples: int, rate: float) -> None:
    print(f"\nTCP connect time, {samples} connects at {rate:.0f}/s; requested = 2 x one-way delay")
    print(
        f"{'one-way':>8} {'expect':>8} {'median':>8} {'mean':>8} {'p99':>8} {'med err':>8}"
        f" {'fwd late p99':>12}"
    )
    for one_way_ms in (0, 5, 20, 50):
        link.set("both", delay_s=one_way_ms / 1000)
        link.control.wait_drained()
        link.control.reset_stats()
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.05
        results = await asyncio.gather(*(connect_once(link, t0 + i / rate) for i in range(samples)))
        ms = [r * 1000 for r in results if r is not None]
        late = link.stats()["up"].lateness_p99_s or 0.0
        expect = 2 * one_way_ms
        med = statistics.median(ms)
        print(
            f"{one_way_ms:>6}ms {expect:>6}ms {med:>8.2f} {statistics.mean(ms):>8.2f} {pct(ms, 0.99):>8.2f}"
            f" {med - expect:>+8.2f} {late * 1000:>10.3f}ms"
        )
    link.set("both", delay_s=0.0)
    link.control.wait_drained()


async def bench_loss(link: Link, target_sink: socket.socket, count: int) -> None:
    print(f"\nloss: {count} UDP datagrams vantage -> target")
    print(f"{'requested':>10} {'burst':>6} {'achieved':>9}")
    sender = link.vantage.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sender:
        for loss, burst in ((0.01, 1.0), (0.05, 1.0), (0.2, 1.0), (0.05, 4.0)):
            link.set("up", loss=loss, loss_burst=burst)
            link.control.reset_stats()
            for i in range(count):
                sender.sendto(i.to_bytes(4, "big"), (TARGET_IPV4, UDP_PORT))
                if i % 50 == 49:
                    await asyncio.sleep(0.002)  # stay below the TUN and socket queues
            await asyncio.sleep(0.05)
            got = 0
            while True:
                try:
                    target_sink.recv(64)
                    got += 1
                except BlockingIOError:
                    break
            print(f"{loss:>10.3f} {burst:>6.1f} {1 - got / count:>9.4f}")
    link.set("up", loss=0.0, loss_burst=1.0)


async def bench_rate(link: Link) -> None:
    print("\nrate limit on the download direction (TCP goodput; IP/TCP headers cost ~3.5 %)")
    print(f"{'requested':>10} {'bytes':>9} {'seconds':>8} {'goodput':>9} {'ratio':>6}")
    for mbit in (1, 5, 20):
        rate = mbit * 1_000_000
        link.set("down", rate_bps=rate, queue_bytes=max(65536, rate // 8 // 10))
        size = int(rate / 8 * 1.5)
        reader, writer = await link.vantage.open_connection(TARGET_IPV4, PORT)
        start = time.perf_counter()
        writer.write(f"{size}\n".encode())
        got = len(await reader.read(-1))
        elapsed = time.perf_counter() - start
        writer.close()
        await writer.wait_closed()
        goodput = got * 8 / elapsed
        print(f"{mbit:>7}Mb/s {got:>9} {elapsed:>8.3f} {goodput / 1e6:>7.3f}Mb {goodput / rate:>6.3f}")
    link.set("down", rate_bps=None)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--rate", type=float, default=200.0, help="connects started per second")
    parser.add_argument(
        "--no-realtime", dest="realtime", action="store_false", help="forwarder without SCHED_FIFO"
    )
    args = parser.parse_args()
    with Lab() as lab:
        emulator = LinkEmulator(lab)
        link = emulator.add_vantage("bench", realtime=args.realtime)
        server = await emulator.target.start_server(serve, TARGET_IPV4, PORT, backlog=1024)
        sink = emulator.target.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind((TARGET_IPV4, UDP_PORT))
        sink.setblocking(False)
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        try:
            cpu0, wall0 = cpu_s(link.process.pid), time.monotonic()
            await bench_delay(link, args.samples, args.rate)
            cpu1, wall1 = cpu_s(link.process.pid), time.monotonic()
            share = 100 * (cpu1 - cpu0) / (wall1 - wall0)
            print(f"forwarder CPU during the delay runs: {share:.1f} % of one core")
            await bench_loss(link, sink, 4000)
            await bench_rate(link)
        finally:
            sink.close()
            server.close()
            await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
