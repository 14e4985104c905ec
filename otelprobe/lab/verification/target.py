"""The lab target that `lab/verification/verify.py` probes, run in a process of its own.

A lab DNS server (answer delay) for `www.lab.test`, and a TLS front (handshake delay) proxying
to the lab HTTP server (TTFB delay, trickled body); in its own process, so serving does not
share the prober's event loop or GIL. TLS 1.3 session tickets are off, so the wire shows where
the server's handshake flight ends (see lab/verification/wire.py).
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Final

from otelprobe.lab.certs import LabCA, LeafKind
from otelprobe.lab.faults import DNSDelay, TLSDelay, TrickleBody, TTFBDelay, dns_server_fault
from otelprobe.lab.servers.dns import DNSFaultServer
from otelprobe.lab.servers.http import HTTPFaultServer
from otelprobe.lab.servers.tls import TLSFront

TARGET_NAME: Final = "www.lab.test"
"""The name the lab DNS server answers with 127.0.0.1 (and the certificate is issued for)."""


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """The faults the target injects."""

    dns_delay_s: float = 0.0
    tls_delay_s: float = 0.0
    ttfb_s: float = 0.0
    trickle_bytes_per_s: int | None = None
    trickle_chunk_bytes: int = 1024
    body_bytes: int = 1024

    def to_argv(self) -> list[str]:
        return [
            f"--{key.replace('_', '-')}={value}" for key, value in asdict(self).items() if value is not None
        ]


class TicketlessCA(LabCA):
    """A lab CA whose server contexts send no TLS 1.3 session tickets."""

    def server_context(self, kind: LeafKind = "valid", alpn: Sequence[str] = ("http/1.1",)) -> ssl.SSLContext:
        context = super().server_context(kind, alpn)
        context.num_tickets = 0
        return context


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m otelprobe.lab.verification.target --ca PATH [spec...]`: prints the TLS port, serves
    until stdin closes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--ca", type=Path, required=True)
    for spec_field in fields(TargetSpec):
        parser.add_argument(f"--{spec_field.name.replace('_', '-')}", type=float)
    args = vars(parser.parse_args(argv))
    ca_path: Path = args.pop("ca")
    given = {key: value for key, value in args.items() if value is not None}
    for key in ("trickle_bytes_per_s", "trickle_chunk_bytes", "body_bytes"):
        if key in given:
            given[key] = int(given[key])
    ca = TicketlessCA(hosts=(TARGET_NAME, "127.0.0.1", "localhost"))
    ca_path.write_bytes(ca.root_pem)
    asyncio.run(_serve(TargetSpec(**given), ca))
    return 0


async def _serve(spec: TargetSpec, ca: LabCA) -> None:
    async with HTTPFaultServer(body_size=spec.body_bytes, coalesce=True) as http:
        if spec.ttfb_s:
            http.apply(TTFBDelay(delay_s=spec.ttfb_s))
        if spec.trickle_bytes_per_s:
            trickle = TrickleBody(
                rate_bytes_per_s=spec.trickle_bytes_per_s, chunk_bytes=spec.trickle_chunk_bytes
            )
            http.apply(trickle)
        async with TLSFront(ca, upstream=(http.host, http.port), body_size=spec.body_bytes) as front:
            if spec.tls_delay_s:
                front.apply(TLSDelay(delay_s=spec.tls_delay_s))
            async with DNSFaultServer() as dns_server:
                dns_server.set_records("www", "A", ["127.0.0.1"])
                if spec.dns_delay_s:
                    dns_server.set_fault("www", dns_server_fault(DNSDelay(delay_s=spec.dns_delay_s)))
                print(front.port, dns_server.port, flush=True)
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    sys.exit(main())
