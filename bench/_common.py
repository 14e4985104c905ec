"""Shared pieces of the cost and scale benchmarks: certificates, a private nginx, the OTLP sink process.

Everything listens on 127.0.0.1 only and lives in a temporary directory that the caller removes;
every child process is started here and stopped by its own pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PYTHON = sys.executable
NGINX = "/usr/sbin/nginx"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100 (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q / 100 * len(ordered) + 0.999999) - 1))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None, timeout_s: float = 10.0) -> None:
    """SIGTERM one child we started, SIGKILL it if it does not go."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(directory: Path) -> Certs:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    certs = Certs(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca.cert_pem.write_to_path(str(certs.ca))
    server.private_key_pem.write_to_path(str(certs.key))
    for i, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(str(certs.cert), append=i > 0)
    return certs


def nginx_conf(
    directory: Path, server: str, workers: int = 1, error_log: Path | None = None, preamble: str = ""
) -> str:
    """A private nginx config around one `server` block: pid and temp paths under `directory`, no
    access log, HTTP/1.1, `workers` worker processes; `preamble` goes first (e.g. `load_module`)."""
    temp = directory / "tmp"
    return f"""
{preamble}
worker_processes {workers};
daemon off;
pid {directory}/nginx.pid;
error_log {error_log or directory / "error.log"} warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    default_type text/plain;
    keepalive_timeout 5s;
    server {{{server}
    }}
}}
"""


class Nginx:
    """Debian's nginx with a private config, prefix and pid file; HTTPS and HTTP on 127.0.0.1.

    Every location answers 200 with a 1-byte body; no access log, one worker (HTTP/1.1 only, so
    that both probers speak the same protocol).
    """

    def __init__(self, directory: Path, certs: Certs, workers: int = 1) -> None:
        self.dir = directory / "nginx"
        self.https_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("logs", "tmp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        server = f"""
        listen 127.0.0.1:{self.https_port} ssl backlog=4096;
        listen 127.0.0.1:{self.http_port} backlog=4096;
        ssl_certificate {certs.cert};
        ssl_certificate_key {certs.key};
        location / {{ return 200 "x"; }}"""
        (self.dir / "nginx.conf").write_text(
            nginx_conf(self.dir, server, workers=workers, error_log=self.dir / "logs/error.log")
        )

    def __enter__(self) -> Nginx:
        conf = self.dir / "nginx.conf"
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "logs/error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.https_port)
        wait_port(self.http_port)
        return self

    def __exit__(self, *exc: object) -> None:
        # SIGQUIT is nginx's graceful stop; the master takes its workers with it.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"


class OTLPSink:
    """otelprobe's OTLPReceiver in its own process (bench/_otlp_sink.py), counting what arrives
    (and writing each span to `spans_out`, if given: bench/_span_log.py)."""

    def __init__(self, spans_out: Path | None = None) -> None:
        self.spans_out = spans_out
        self.proc: subprocess.Popen[str] | None = None
        self.http_port = 0
        self.grpc_port = 0

    def __enter__(self) -> OTLPSink:
        self.proc = subprocess.Popen(
            [
                PYTHON,
                str(BENCH_DIR / "_otlp_sink.py"),
                *([f"--spans-out={self.spans_out}"] if self.spans_out else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        ports = json.loads(self.proc.stdout.readline())
        self.http_port, self.grpc_port = ports["http"], ports["grpc"]
        return self

    def endpoint(self, exporter: str) -> str:
        if exporter == "otlp_grpc":
            return f"http://127.0.0.1:{self.grpc_port}"
        return f"http://127.0.0.1:{self.http_port}"

    def counts(self) -> dict[str, int]:
        """Spans and requests received so far."""
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        result: dict[str, int] = json.loads(self.proc.stdout.readline())
        return result

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
        stop(self.proc)


def require_tools() -> None:
    for tool in (NGINX, BLACKBOX):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install nginx-light prometheus-blackbox-exporter")
