"""TLS and DNS servers that misbehave on purpose (issue 11): each a classified failure (DESIGN §4)
within the probe's deadline.

TLS: garbage instead of a ServerHello, a record header announcing 16 KiB that never come, a fatal
alert, an enormous certificate (a 200 KB chain). DNS, against the dns probe and against an HTTP
probe's own resolver: a name compression loop, a truncated message, answers to another question
or ID, an oversized answer, bytes that are no DNS message at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import dns.message
import dns.rrset
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from otelprobe.errors import ERROR_TYPES
from otelprobe.lab.servers.raw import RawFaultServer
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.dns.probe import DNSProbe, DNSProbeConfig
from otelprobe.probes.tls import TLSProbe, TLSProbeConfig
from otelprobe.results import ProbeResult
from tests.support.http_probing import probe_once
from tests.support.http_servers import serve_raw

TIMEOUT_S = 1.5
SLACK_S = 1.0  # a loaded 2-core machine
DNS_TIMEOUT_S = 0.6  # every hostile DNS case waits it out (the client waits for a valid answer)
CTX = ProbeContext(vantage="test")


def _classified(result: ProbeResult, elapsed_s: float) -> tuple[str, str]:
    assert elapsed_s < TIMEOUT_S + SLACK_S, f"took {elapsed_s:.2f} s"
    assert result.error is not None, "a misbehaving server made a successful probe"
    assert result.error.error_type in ERROR_TYPES
    return result.error.error_type, result.error.detail


# --- TLS ---------------------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _tls_probe(port: int, ca_file: str | None = None) -> tuple[ProbeResult, float]:
    tls = {"ca_file": ca_file} if ca_file else {"verify": False}
    config = TLSProbeConfig.model_validate(
        {"name": "t", "address": f"127.0.0.1:{port}", "timeout": f"{TIMEOUT_S}s", "tls": tls}
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    probe = TLSProbe(config, CTX)
    try:
        [result] = await probe.run()
    finally:
        await probe.aclose()
    return result, loop.time() - started


def answer_hello_with(data: bytes, *, then_wait: bool = True) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(5)  # the ClientHello's record header
        writer.write(data)
        await writer.drain()
        if then_wait:
            await asyncio.sleep(10)  # cancelled when the server closes

    return handler


GARBAGE = bytes(range(256)) * 16
TLS_MISBEHAVIOUR = {
    "not-tls": (answer_hello_with(b"SSH-2.0-OpenSSH_9.6\r\n" + GARBAGE), "tls_error"),
    "garbage-records": (answer_hello_with(b"\x16\x03\x03\x00\x40" + GARBAGE[:64] + GARBAGE), "tls_error"),
    "fatal-alert": (answer_hello_with(b"\x15\x03\x03\x00\x02\x02\x28"), "tls_error"),
    "record-never-completes": (answer_hello_with(b"\x16\x03\x03\x40\x00" + b"\x02" * 100), "timeout"),
    "oversized-record": (answer_hello_with(b"\x16\x03\x03\xff\xff" + GARBAGE), "tls_error"),
    "closed-after-hello": (answer_hello_with(b"", then_wait=False), "tls_error"),
}


@pytest.mark.parametrize("case", sorted(TLS_MISBEHAVIOUR))
async def test_a_tls_server_sending_garbage_is_classified_within_the_deadline(case: str) -> None:
    handler, error_type = TLS_MISBEHAVIOUR[case]
    async with serve_raw(handler) as port:
        result, elapsed = await _tls_probe(port)
    assert _classified(result, elapsed)[0] == error_type, result.error


def _enormous_certificate(directory: Path, names: int) -> tuple[Path, Path]:
    """A self-signed certificate with `names` DNS names: one certificate of ~25 bytes a name."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enormous")])
    now = dt.datetime.now(dt.UTC)
    sans = [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
    sans += [x509.DNSName(f"name-{i:06d}.enormous.lab.test") for i in range(names)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "enormous.pem", directory / "enormous.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


@contextlib.asynccontextmanager
async def _tls_server(cert_file: Path, key_file: Path) -> AsyncIterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read(1)
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def test_an_enormous_certificate_is_a_tls_error_within_the_deadline(tmp_path: Path) -> None:
    cert_file, key_file = _enormous_certificate(tmp_path, 8_000)  # ~200 KB: over OpenSSL's 100 KB cap
    assert cert_file.stat().st_size > 200_000
    async with _tls_server(cert_file, key_file) as port:
        result, elapsed = await _tls_probe(port, str(cert_file))
        https = await probe_once(
            f"https://127.0.0.1:{port}/", timeout=f"{TIMEOUT_S}s", tls={"ca_file": str(cert_file)}
        )
    assert _classified(result, elapsed)[0] == "tls_error", result.error
    assert https.error is not None and https.error.error_type == "tls_error", https.error


# --- DNS ---------------------------------------------------------------------------------------

Reply = Callable[[bytes], list[bytes]]


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # asyncio's own class is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        for datagram in self.reply(data):
            self.transport.sendto(datagram, addr)


@contextlib.asynccontextmanager
async def _dns_server(reply: Reply) -> AsyncIterator[int]:
    """A UDP DNS server on loopback answering each query with `reply(query)` (raw bytes)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Responder(reply), local_addr=("127.0.0.1", 0))
    try:
        yield int(transport.get_extra_info("sockname")[1])
    finally:
        transport.close()


def _answer(query: bytes, address: str = "127.0.0.1", count: int = 1) -> dns.message.Message:
    request = dns.message.from_wire(query)
    response = dns.message.make_response(request)
    question = request.question[0]
    addresses = [address] * 1 if count == 1 else [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(count)]
    response.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", "A", addresses))
    return response


def compression_loop(query: bytes) -> list[bytes]:
    """A valid header and question, then an answer whose owner name points at itself."""
    header = query[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00"
    question = query[12:]
    answer_at = 12 + len(question)
    loop = struct.pack("!H", 0xC000 | answer_at)
    return [header + question + loop + b"\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f\x00\x00\x01"]


def truncated(query: bytes) -> list[bytes]:
    return [_answer(query).to_wire()[:-3]]  # cut inside the A record's data, TC not set


def header_only(query: bytes) -> list[bytes]:
    return [query[:2] + b"\x81\x80\x00\x01\x00\x01"]  # shorter than a DNS header


def wrong_id_and_question(query: bytes) -> list[bytes]:
    wrong_id = bytes([query[0] ^ 0xFF, query[1]]) + _answer(query).to_wire()[2:]
    other = dns.message.make_query("other.lab.test", "A")
    other.id = int.from_bytes(query[:2], "big")
    other_answer = dns.message.make_response(other).to_wire()
    return [wrong_id, other_answer]


def oversized(query: bytes) -> list[bytes]:
    return [_answer(query, count=4_000).to_wire(max_size=65_535)]  # ~64 KB in one datagram


def not_dns(query: bytes) -> list[bytes]:
    return [GARBAGE[:300]]


def pointer_forward(query: bytes) -> list[bytes]:
    """An answer name pointing past the end of the message."""
    header = query[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00"
    return [header + query[12:] + b"\xff\xff" + b"\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f\x00\x00\x01"]


DNS_MISBEHAVIOUR: dict[str, Reply] = {
    "compression-loop": compression_loop,
    "pointer-past-the-end": pointer_forward,
    "truncated-message": truncated,
    "shorter-than-a-header": header_only,
    "wrong-id-and-question": wrong_id_and_question,
    "not-dns": not_dns,
}


@pytest.mark.parametrize("case", sorted(DNS_MISBEHAVIOUR))
async def test_a_hostile_dns_answer_to_the_dns_probe_is_classified(case: str) -> None:
    async with _dns_server(DNS_MISBEHAVIOUR[case]) as port:
        config = DNSProbeConfig.model_validate(
            {
                "name": "t",
                "server": f"127.0.0.1:{port}",
                "query_name": "www.lab.test",
                "timeout": f"{DNS_TIMEOUT_S}s",
                "tcp_fallback": False,
            }
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        [result] = await DNSProbe(config, CTX).run()
        elapsed = loop.time() - started
    # The client keeps waiting for a valid answer (a datagram that is none may be forged); at the
    # deadline it reports what it got instead: an invalid DNS answer (DESIGN §4), saying why.
    assert _classified(result, elapsed) == ("protocol_error", "invalid_dns_answer"), result.error
    assert "none valid" in result.error.message if result.error else False


@pytest.mark.parametrize("case", sorted(DNS_MISBEHAVIOUR))
async def test_a_hostile_dns_answer_to_an_http_probes_resolver_is_classified(case: str) -> None:
    async with _dns_server(DNS_MISBEHAVIOUR[case]) as port:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await probe_once(
            "http://www.lab.test:1/",
            timeout=f"{TIMEOUT_S}s",
            resolver={"server": f"127.0.0.1:{port}", "timeout": f"{DNS_TIMEOUT_S}s"},
        )
        elapsed = loop.time() - started
    # Only invalid datagrams until the resolver's timeout: the server answered, badly.
    assert _classified(result, elapsed) == ("dns_error", "invalid_answer"), result.error
    assert "none valid" in result.error.message if result.error else False


async def test_an_oversized_answer_is_read_whole_or_classified() -> None:
    async with _dns_server(oversized) as port:
        config = DNSProbeConfig.model_validate(
            {
                "name": "t",
                "server": f"127.0.0.1:{port}",
                "query_name": "www.lab.test",
                "timeout": f"{TIMEOUT_S}s",
            }
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        [result] = await DNSProbe(config, CTX).run()
        elapsed = loop.time() - started
    assert elapsed < TIMEOUT_S + SLACK_S
    if result.error is not None:
        assert result.error.error_type in ERROR_TYPES


# --- a TLS file that cannot be loaded ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http", "tls", "tcp", "grpc", "websocket", "dns"])
async def test_a_missing_ca_file_fails_each_attempt_as_tls_config_invalid(kind: str, tmp_path: Path) -> None:
    """The target is built (and scheduled); each attempt says which file, in its own telemetry."""
    from otelprobe.probes import PROBE_TYPES, config_type_for

    missing = str(tmp_path / "rotated-away.pem")
    async with RawFaultServer("hang") as server:
        address = f"127.0.0.1:{server.port}"
        fields: dict[str, object] = {
            "http": {"url": f"https://{address}/", "tls": {"ca_file": missing}},
            "tls": {"address": address, "tls": {"ca_file": missing}},
            "tcp": {"address": address, "tls": {"ca_file": missing}},
            "grpc": {"address": address, "tls": {"ca_file": missing}},
            "websocket": {"url": f"wss://{address}/", "tls": {"ca_file": missing}},
            "dns": {
                "server": address,
                "query_name": "www.lab.test",
                "transport": "tls",
                "tls": {"ca_file": missing},
            },
        }[kind]  # type: ignore[assignment]
        config = config_type_for(kind).model_validate({"name": "t", "kind": kind, "timeout": "2s", **fields})
        probe = PROBE_TYPES[kind](config, CTX)  # type: ignore[call-arg]
        try:
            [result] = await probe.run()
        finally:
            await probe.aclose()
    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("tls_error", "tls_config_invalid"), result.error
    assert "rotated-away.pem" in result.error.message and "No such file" in result.error.message


async def test_a_late_loop_at_the_deadline_keeps_the_invalid_answer_class() -> None:
    # The probe's own deadline (just before the attempt's) and the attempt's fire in one loop
    # iteration when the loop runs late, as on a loaded machine: the class must not change.
    async with _dns_server(not_dns) as port:
        config = DNSProbeConfig.model_validate(
            {
                "name": "t",
                "server": f"127.0.0.1:{port}",
                "query_name": "www.lab.test",
                "timeout": f"{DNS_TIMEOUT_S}s",
                "tcp_fallback": False,
            }
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Block the loop from 30 ms before the deadline to 30 ms after it.
        stall = loop.call_at(started + DNS_TIMEOUT_S - 0.03, time.sleep, 0.06)
        [result] = await DNSProbe(config, CTX).run()
        stall.cancel()
    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("protocol_error", "invalid_dns_answer")
    [lookup] = [p for p in result.phases if p.name == "dns.lookup"]
    assert (lookup.error_type, lookup.error_detail) == ("protocol_error", "invalid_dns_answer")
