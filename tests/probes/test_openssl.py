"""The TLS engine of net/tls/openssl.py, seen through the HTTP probe against real TLS servers.

The servers run on the `ssl` module (the system's OpenSSL), the probe on cryptography's OpenSSL:
trust store, key-exchange groups, versions, client certificates and post-handshake alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import trustme

from otelprobe.lab.servers.http import HTTPFaultServer
from otelprobe.net.tls.openssl import ClientTLS
from otelprobe.settings.common import TLSClientConfig
from tests.support.http_probing import probe_once
from tests.support.tls_servers import blocking_server, serve


@contextlib.contextmanager
def blocking_tls_server(context: ssl.SSLContext) -> Iterator[int]:
    """Answers one request per TLS connection; a failed handshake's alert is flushed, as real servers do."""

    def answer(raw: socket.socket) -> None:
        raw.settimeout(3)
        with context.wrap_socket(raw, server_side=True) as conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                request += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    with blocking_server(answer) as port:
        yield port


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(
    ca: trustme.CA, configure: Callable[[ssl.SSLContext], None] | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    if configure is not None:
        configure(context)
    return context


@pytest.fixture
async def https_port(ca: trustme.CA) -> AsyncIterator[int]:
    async with HTTPFaultServer(ssl_context=server_context(ca)) as server:
        yield server.port


async def test_system_trust_store_is_where_the_ssl_module_finds_it(
    https_port: int, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"https://localhost:{https_port}/"
    untrusted = await probe_once(url)
    assert untrusted.error is not None
    assert (untrusted.error.error_type, untrusted.error.detail) == ("tls_error", "untrusted_certificate")
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # honoured by ssl.get_default_verify_paths()
    trusted = await probe_once(url)
    assert trusted.success, trusted.error
    assert trusted.attributes["tls.protocol.version"] == "1.3"


async def test_an_ip_target_is_verified_against_ip_sans_without_sni(https_port: int, ca_file: str) -> None:
    result = await probe_once(f"https://127.0.0.1:{https_port}/", tls={"ca_file": ca_file})
    assert result.success, result.error


async def test_groups_decide_the_key_exchange(https_port: int, ca_file: str) -> None:
    url = f"https://localhost:{https_port}/"
    classic = await probe_once(url, tls={"ca_file": ca_file, "groups": ["P-256"]})
    assert classic.success, classic.error
    # The test server's OpenSSL 3.0 has no ML-KEM: offering only the hybrid group cannot agree.
    hybrid_only = await probe_once(url, tls={"ca_file": ca_file, "groups": ["X25519MLKEM768"]})
    assert hybrid_only.error is not None and hybrid_only.error.error_type == "tls_error"
    handshake = hybrid_only.phase("tls.handshake")
    assert handshake is not None and handshake.error_type == "tls_error"


def test_unknown_groups_are_config_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown TLS group.*brainpool-nope"):
        TLSClientConfig.model_validate({"groups": ["X25519", "brainpool-nope"]})


async def test_min_version_above_what_the_server_speaks_is_a_version_error(
    ca: trustme.CA, ca_file: str
) -> None:
    def tls12_only(context: ssl.SSLContext) -> None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2

    with blocking_tls_server(server_context(ca, tls12_only)) as port:
        url = f"https://localhost:{port}/"
        ok = await probe_once(url, tls={"ca_file": ca_file})
        refused = await probe_once(url, tls={"ca_file": ca_file, "min_version": "1.3"})
    assert ok.success, ok.error
    assert ok.attributes["tls.protocol.version"] == "1.2"
    assert refused.error is not None
    assert (refused.error.error_type, refused.error.detail) == ("tls_error", "protocol_version"), (
        refused.error
    )


async def test_client_certificate_required_by_the_server(
    ca: trustme.CA, ca_file: str, tmp_path: Path
) -> None:
    def require_client_cert(context: ssl.SSLContext) -> None:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)

    client = ca.issue_cert("probe.client.test")
    client_pem = tmp_path / "client.pem"
    client_pem.write_bytes(
        b"".join(blob.bytes() for blob in (client.private_key_pem, *client.cert_chain_pems))
    )
    with blocking_tls_server(server_context(ca, require_client_cert)) as port:
        url = f"https://localhost:{port}/"
        with_cert = await probe_once(url, tls={"ca_file": ca_file, "client_cert": str(client_pem)})
        without = await probe_once(url, tls={"ca_file": ca_file})
    assert with_cert.success, with_cert.error
    # TLS 1.3: the server rejects us after its Finished; its alert arrives with the first read.
    assert without.error is not None
    assert without.error.error_type == "tls_error", without.error
    assert "alert" in without.error.detail


async def test_server_closing_without_close_notify_after_the_body(ca: trustme.CA, ca_file: str) -> None:
    async def abrupt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody until close")
        await writer.drain()
        writer.transport.abort()  # TCP FIN/RST, no TLS close_notify

    async with serve(abrupt, server_context(ca)) as port:
        result = await probe_once(f"https://localhost:{port}/", tls={"ca_file": ca_file})
    assert result.success, result.error
    assert result.attributes["probe.http.body_bytes"] == len(b"body until close")


def test_targets_with_the_same_tls_settings_share_one_context(ca_file: str, tmp_path: Path) -> None:
    first = ClientTLS.shared(TLSClientConfig(ca_file=ca_file, sni="a.test"), ["http/1.1"])
    # SNI is per session: a different name still shares the trust store.
    assert ClientTLS.shared(TLSClientConfig(ca_file=ca_file, sni="b.test"), ["http/1.1"]) is first
    assert ClientTLS.shared(TLSClientConfig(ca_file=ca_file), ["h2"]) is not first
    assert ClientTLS.shared(TLSClientConfig(ca_file=ca_file, min_version="1.3"), ["http/1.1"]) is not first
    # An edited CA file is read again (next reload builds new probes, which ask again).
    path = Path(ca_file)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert ClientTLS.shared(TLSClientConfig(ca_file=ca_file), ["http/1.1"]) is not first
