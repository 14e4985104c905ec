"""Client CPU per full TLS handshake: the `ssl` module vs net/tls/openssl.py, same nginx, same run.

Each round opens a fresh TCP connection to a private nginx (bench/_common.py: 127.0.0.1 only,
TLS 1.3, ECDSA P-256 certificate from a throwaway CA), does a verified handshake over memory
BIOs with blocking sockets, sends one request and reads the response head, and closes. What is
measured is this process's CPU (handshake calls alone, and the whole round trip including the
socket syscalls); nginx runs in its own process and is not counted. Engines alternate, and
medians of `--repeats` batches are reported.

    .venv/bin/python bench/tls_engine.py [--rounds 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import resource
import socket
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import Nginx, make_certs

from otelprobe.net.tls.openssl import ClientTLS
from otelprobe.settings.common import TLSClientConfig

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
Round = Callable[[int, list[float]], None]


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def stdlib_round(context: ssl.SSLContext) -> Round:
    def run(port: int, handshake_cpu: list[float]) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with connect(port) as sock:
            while True:
                started = time.thread_time()
                try:
                    obj.do_handshake()
                    handshake_cpu[0] += time.thread_time() - started
                    break
                except ssl.SSLWantReadError:
                    handshake_cpu[0] += time.thread_time() - started
                    sock.sendall(outgoing.read())
                    incoming.write(sock.recv(65536))
            obj.write(REQUEST)
            sock.sendall(outgoing.read())
            while True:
                try:
                    if b"\r\n\r\n" in obj.read(65536):
                        break
                except ssl.SSLWantReadError:
                    incoming.write(sock.recv(65536))

    return run


def openssl_round(client: ClientTLS) -> Round:
    def run(port: int, handshake_cpu: list[float]) -> None:
        session = client.session("localhost")
        with connect(port) as sock:
            while True:
                started = time.thread_time()
                done = session.step()
                handshake_cpu[0] += time.thread_time() - started
                pending = session.take_output()
                if pending:
                    sock.sendall(pending)
                if done:
                    break
                session.feed(sock.recv(65536))
            sock.sendall(session.encrypt(REQUEST))
            while True:
                data = session.decrypt(65536)
                if data and b"\r\n\r\n" in data:
                    break
                if data is None:
                    session.feed(sock.recv(65536))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=1000, help="handshakes per batch")
    parser.add_argument("--repeats", type=int, default=5, help="batches per engine (alternating)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="otelprobe-tls-") as tmp:
        directory = Path(tmp)
        certs = make_certs(directory)
        config = TLSClientConfig(ca_file=str(certs.ca))
        engines: dict[str, Round] = {
            f"ssl module ({ssl.OPENSSL_VERSION.split()[1]})": stdlib_round(
                ssl.create_default_context(cafile=str(certs.ca))
            ),
            "_openssl, default groups": openssl_round(ClientTLS(config)),
            "_openssl, X25519MLKEM768 first": openssl_round(
                ClientTLS(config.model_copy(update={"groups": ("X25519MLKEM768", "X25519", "P-256")}))
            ),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
        with Nginx(directory, certs) as nginx:
            port = int(nginx.https_url.rstrip("/").rsplit(":", 1)[1])
            for run in engines.values():
                run(port, [0.0])  # warm-up
            for _ in range(args.repeats):
                for name, run in engines.items():
                    handshake_cpu = [0.0]
                    before = process_cpu_s()
                    for _ in range(args.rounds):
                        run(port, handshake_cpu)
                    total = process_cpu_s() - before
                    results[name].append((1e6 * handshake_cpu[0] / args.rounds, 1e6 * total / args.rounds))
    baseline = statistics.median(t for _, t in next(iter(results.values())))
    print(f"{'engine':34} {'handshake us':>13} {'round us':>9} {'vs ssl':>7}")
    for name, values in results.items():
        handshake = statistics.median(h for h, _ in values)
        total = statistics.median(t for _, t in values)
        print(f"{name:34} {handshake:13.0f} {total:9.0f} {total / baseline:7.2f}")


if __name__ == "__main__":
    main()
