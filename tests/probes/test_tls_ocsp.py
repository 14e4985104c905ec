"""The tls probe's `ocsp: true` mode against a loopback pyOpenSSL server that staples OCSP.

The test CA (made here: the lab CA keeps its keys private) signs the leaves and the stapled
responses: good, revoked, stale, signed by a stranger, or none at all. The same servers are
probed with `ocsp: false` too, so the two handshake paths are checked to report alike.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from otelprobe.probes.base import ProbeContext
from otelprobe.probes.tls import TLSProbe, TLSProbeConfig
from otelprobe.results import ProbeResult
from tests.support.tls_servers import blocking_server

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def _leaf(ca: Issued, hosts: tuple[str, ...] = ("localhost",), expired: bool = False) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    not_after = NOW - DAY if expired else NOW + 30 * DAY
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 10 * DAY)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def _staple(
    leaf: Issued,
    ca: Issued,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    *,
    next_update: dt.datetime | None = None,
    signer: Issued | None = None,
) -> bytes:
    revoked = status == ocsp.OCSPCertStatus.REVOKED
    signer = signer or ca
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf.cert,
            issuer=ca.cert,
            algorithm=hashes.SHA256(),
            cert_status=status,
            this_update=NOW - DAY,
            next_update=next_update or NOW + 6 * DAY,
            revocation_time=NOW - 2 * DAY if revoked else None,
            revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
        .sign(signer.key, hashes.SHA256())
    )
    return response.public_bytes(serialization.Encoding.DER)


@contextlib.contextmanager
def stapling_server(leaf: Issued, ca: Issued, staple: bytes) -> Iterator[int]:
    """A pyOpenSSL TLS server on 127.0.0.1 that staples `staple` (b"" = none) when asked."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.use_certificate(leaf.cert)
    context.use_privatekey(leaf.key)
    context.add_extra_chain_cert(ca.cert)
    context.set_ocsp_server_callback(lambda conn, data: staple)

    def handshake(raw: socket.socket) -> None:
        raw.setblocking(True)  # pyOpenSSL works on the fd: a timeout would make it non-blocking
        conn = SSL.Connection(context, raw)
        conn.set_accept_state()
        with contextlib.suppress(SSL.Error):
            conn.do_handshake()
            conn.recv(1024)

    with blocking_server(handshake) as port:
        yield port


@pytest.fixture(scope="module")
def ca() -> Issued:
    return _ca("ocsp test CA")


@pytest.fixture(scope="module")
def leaf(ca: Issued) -> Issued:
    return _leaf(ca)


@pytest.fixture
def ca_file(ca: Issued, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


async def probe(port: int, ca_file: str, *, ocsp_on: bool = True, **fields: Any) -> ProbeResult:
    tls = {"ca_file": ca_file, "sni": "localhost", **fields.pop("tls", {})}
    config = TLSProbeConfig.model_validate(
        {"name": "t", "address": f"127.0.0.1:{port}", "timeout": "3s", "tls": tls, "ocsp": ocsp_on, **fields}
    )
    [result] = await TLSProbe(config, ProbeContext(vantage="test")).run()
    return result


async def test_good_staple_is_reported(ca: Issued, leaf: Issued, ca_file: str) -> None:
    with stapling_server(leaf, ca, _staple(leaf, ca)) as port:
        result = await probe(port, ca_file, expect={"ocsp": "good"})
    assert result.success, result.error
    assert [p.name for p in result.phases] == ["tcp.connect", "tls.handshake"]
    handshake = result.phase("tls.handshake")
    assert handshake is not None and 0 < handshake.duration_s < 1.0
    attrs = result.attributes
    assert attrs["probe.tls.ocsp.stapled"] is True
    assert attrs["probe.tls.ocsp.status"] == "good"
    assert attrs["probe.tls.ocsp.verified"] is True and attrs["probe.tls.ocsp.stale"] is False
    this_update = dt.datetime.fromisoformat(str(attrs["probe.tls.ocsp.this_update"]))
    next_update = dt.datetime.fromisoformat(str(attrs["probe.tls.ocsp.next_update"]))
    assert this_update < NOW < next_update
    assert attrs["probe.tls.chain_trusted"] is True and attrs["probe.tls.hostname_verified"] is True


async def test_both_paths_report_the_same_handshake(ca: Issued, leaf: Issued, ca_file: str) -> None:
    with stapling_server(leaf, ca, _staple(leaf, ca)) as port:
        plain = await probe(port, ca_file, ocsp_on=False, alpn=["h2", "http/1.1"])
        stapled = await probe(port, ca_file, alpn=["h2", "http/1.1"])
        by_ip = await probe(port, ca_file, tls={"sni": None})
    assert plain.success and stapled.success and by_ip.success, (plain.error, stapled.error, by_ip.error)
    assert not any(key.startswith("probe.tls.ocsp") for key in plain.attributes)
    varying = {"probe.tls.cert.remaining"}
    ocsp_keys = {k for k in stapled.attributes if k.startswith("probe.tls.ocsp")}
    assert {k: v for k, v in plain.attributes.items() if k not in varying} == {
        k: v for k, v in stapled.attributes.items() if k not in varying | ocsp_keys
    }
    assert stapled.attributes["tls.protocol.version"] == "1.3"
    assert by_ip.attributes["probe.tls.hostname_verified"] is True


@pytest.mark.parametrize("broken", ["expired", "wrong_host", "untrusted"])
async def test_verification_failures_match_the_ssl_path(ca: Issued, ca_file: str, broken: str) -> None:
    issuer = _ca("stranger CA") if broken == "untrusted" else ca
    bad = _leaf(
        issuer,
        hosts=("other.test",) if broken == "wrong_host" else ("localhost",),
        expired=broken == "expired",
    )
    with stapling_server(bad, issuer, b"") as port:
        plain = await probe(port, ca_file, ocsp_on=False)
        stapled = await probe(port, ca_file)
    assert plain.error is not None and stapled.error is not None
    assert (stapled.error.error_type, stapled.error.detail) == (plain.error.error_type, plain.error.detail)
    for key in ("probe.tls.chain_trusted", "probe.tls.hostname_verified", "tls.server.subject"):
        assert stapled.attributes.get(key) == plain.attributes.get(key), key
    handshake = stapled.phase("tls.handshake")
    assert handshake is not None and handshake.error_type == "tls_error"


async def test_revoked_staple_fails_the_handshake(ca: Issued, leaf: Issued, ca_file: str) -> None:
    with stapling_server(leaf, ca, _staple(leaf, ca, ocsp.OCSPCertStatus.REVOKED)) as port:
        result = await probe(port, ca_file)
        accepted = await probe(port, ca_file, expect={"chain_trusted": False})
        asserted = await probe(port, ca_file, expect={"chain_trusted": False, "ocsp": "good"})
    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("tls_error", "certificate_revoked")
    handshake = result.phase("tls.handshake")
    assert handshake is not None and handshake.error_type == "tls_error"
    attrs = result.attributes
    assert attrs["probe.tls.ocsp.status"] == "revoked"
    assert attrs["probe.tls.ocsp.revocation_reason"] == "key_compromise"
    assert attrs["probe.tls.chain_trusted"] is True and attrs["tls.server.subject"] == "CN=localhost"
    # Accepting certificate problems turns it into a report, unless the staple is asserted.
    assert accepted.success and accepted.attributes["probe.tls.ocsp.status"] == "revoked"
    assert asserted.error is not None
    assert (asserted.error.error_type, asserted.error.detail) == ("assertion_failed", "ocsp_revoked")


async def test_no_staple(ca: Issued, leaf: Issued, ca_file: str) -> None:
    with stapling_server(leaf, ca, b"") as port:
        reported = await probe(port, ca_file)
        required = await probe(port, ca_file, expect={"ocsp": "required"})
    assert reported.success and reported.attributes["probe.tls.ocsp.stapled"] is False
    assert "probe.tls.ocsp.status" not in reported.attributes
    assert required.error is not None
    assert (required.error.error_type, required.error.detail) == ("assertion_failed", "ocsp_not_stapled")


async def test_stale_staple(ca: Issued, leaf: Issued, ca_file: str) -> None:
    with stapling_server(leaf, ca, _staple(leaf, ca, next_update=NOW - dt.timedelta(hours=1))) as port:
        reported = await probe(port, ca_file)
        required = await probe(port, ca_file, expect={"ocsp": "required"})
    assert reported.success and reported.attributes["probe.tls.ocsp.stale"] is True
    assert required.error is not None and required.error.detail == "ocsp_stale"


async def test_staple_signed_by_a_stranger_is_not_believed(ca: Issued, leaf: Issued, ca_file: str) -> None:
    forged = _staple(leaf, ca, ocsp.OCSPCertStatus.REVOKED, signer=_ca("forger"))
    with stapling_server(leaf, ca, forged) as port:
        reported = await probe(port, ca_file)
        required = await probe(port, ca_file, expect={"ocsp": "required"})
    # An unverifiable "revoked" must not take a healthy site down.
    assert reported.success, reported.error
    assert reported.attributes["probe.tls.ocsp.verified"] is False
    assert required.error is not None and required.error.detail == "ocsp_invalid"


def test_expect_ocsp_needs_ocsp() -> None:
    with pytest.raises(ValueError, match=r"expect\.ocsp needs ocsp: true"):
        TLSProbeConfig.model_validate({"name": "x", "address": "h:1", "expect": {"ocsp": "good"}})
