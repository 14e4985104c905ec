"""Certificates for the fault lab: a lab CA (root + intermediate) and leaf certificates that are
valid or broken in one precise way (the `bad_certificate` fault).

lab/servers/tls.py and lab/servers/http.py serve them through `server_context`; probes and tests
trust `LabCA.root_pem` (or `client_context`) and then see the expected verification error.
Keys are EC P-256, so a whole CA with every leaf takes a few milliseconds.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

LeafKind = Literal["valid", "expired", "not_yet_valid", "wrong_host", "self_signed", "short_chain"]
LEAF_KINDS: Final[tuple[LeafKind, ...]] = (
    "valid",
    "expired",
    "not_yet_valid",
    "wrong_host",
    "self_signed",
    "short_chain",
)
DEFAULT_HOSTS: Final[tuple[str, ...]] = ("localhost", "127.0.0.1", "::1")
WRONG_HOST: Final = "wrong-host.lab.invalid"
"""The only name a `wrong_host` certificate is valid for (.invalid never resolves, RFC 6761)."""

_DAY: Final = datetime.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class LeafCertificate:
    """One server identity: its key, its certificate, and the chain the server sends after it."""

    kind: LeafKind
    cert_pem: bytes
    key_pem: bytes
    chain_pem: bytes
    """Certificates sent after the leaf: the intermediate, or nothing (short_chain, self_signed)."""

    @property
    def served_pem(self) -> bytes:
        """Leaf followed by its chain: what `load_cert_chain` takes as certfile."""
        return self.cert_pem + self.chain_pem


@dataclass(frozen=True, slots=True)
class _Issuer:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _builder(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    signer: _Issuer,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.CertificateBuilder:
    """What every lab certificate sets: subject, issuer, public key, a random serial, validity."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def _ca_cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: _Issuer | None,
    path_length: int | None,
    now: datetime.datetime,
) -> x509.Certificate:
    signer = issuer or _Issuer(subject, key)
    return (
        _builder(subject, key, signer, now - _DAY, now + 3650 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(signer.key, hashes.SHA256())
    )


def _leaf_cert(
    hosts: Sequence[str],
    key: ec.EllipticCurvePrivateKey,
    issuer: _Issuer | None,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    signer = issuer or _Issuer(subject, key)
    return (
        _builder(subject, key, signer, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(signer.key, hashes.SHA256())
    )


class LabCA:
    """A root CA, an intermediate that signs the leaves, and one leaf per `LeafKind`.

    Args:
        hosts: names and IP addresses the valid leaves are issued for (first = subject CN).
        name: a label put in the CA subjects, to tell several labs apart.
    """

    def __init__(self, hosts: Sequence[str] = DEFAULT_HOSTS, name: str = "otelprobe lab") -> None:
        if not hosts:
            raise ValueError("a lab CA needs at least one host name")
        self.hosts: tuple[str, ...] = tuple(hosts)
        now = datetime.datetime.now(datetime.UTC)
        root_key, inter_key = _new_key(), _new_key()
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} root CA")])
        inter_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} intermediate CA")])
        root = _ca_cert(root_name, root_key, None, 1, now)
        intermediate = _ca_cert(inter_name, inter_key, _Issuer(root_name, root_key), 0, now)
        self.root_pem: bytes = _pem(root)
        """The one certificate clients trust."""
        self.intermediate_pem: bytes = _pem(intermediate)
        issuer = _Issuer(inter_name, inter_key)
        self._leaves: dict[LeafKind, LeafCertificate] = {
            kind: self._issue(kind, issuer, now) for kind in LEAF_KINDS
        }

    def _issue(self, kind: LeafKind, issuer: _Issuer, now: datetime.datetime) -> LeafCertificate:
        key = _new_key()
        hosts: Sequence[str] = self.hosts
        not_before, not_after = now - _DAY, now + 90 * _DAY
        signer: _Issuer | None = issuer
        chain = self.intermediate_pem
        if kind == "expired":
            not_before, not_after = now - 30 * _DAY, now - _DAY
        elif kind == "not_yet_valid":
            not_before, not_after = now + _DAY, now + 30 * _DAY
        elif kind == "wrong_host":
            hosts = (WRONG_HOST,)
        elif kind == "self_signed":
            signer, chain = None, b""
        elif kind == "short_chain":
            # Correctly issued by the intermediate, but the server forgets to send it.
            chain = b""
        cert = _leaf_cert(hosts, key, signer, not_before, not_after)
        return LeafCertificate(kind=kind, cert_pem=_pem(cert), key_pem=_key_pem(key), chain_pem=chain)

    def leaf(self, kind: LeafKind = "valid") -> LeafCertificate:
        return self._leaves[kind]

    def write_pem_files(self, directory: Path) -> dict[str, Path]:
        """Write `ca.pem`, `intermediate.pem` and `<kind>.crt` (leaf + served chain) /
        `<kind>.key` for every leaf kind into `directory` (created if missing).

        Returns:
            File name stem -> path, e.g. {"ca": .../ca.pem, "expired.crt": ..., "expired.key": ...}.
        """
        directory.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        files: list[tuple[str, str, bytes]] = [
            ("ca", "ca.pem", self.root_pem),
            ("intermediate", "intermediate.pem", self.intermediate_pem),
        ]
        for kind, leaf in self._leaves.items():
            files.append((f"{kind}.crt", f"{kind}.crt", leaf.served_pem))
            files.append((f"{kind}.key", f"{kind}.key", leaf.key_pem))
        for label, filename, data in files:
            path = directory / filename
            path.write_bytes(data)
            if filename.endswith(".key"):
                path.chmod(0o600)
            written[label] = path
        logger.debug("wrote lab CA files to %s", directory)
        return written

    def server_context(self, kind: LeafKind = "valid", alpn: Sequence[str] = ("http/1.1",)) -> ssl.SSLContext:
        """A server-side context presenting leaf `kind` (and its chain)."""
        return server_context(self.leaf(kind), alpn)

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this lab's root."""
        return ssl.create_default_context(cadata=self.root_pem.decode("ascii"))


def server_context(leaf: LeafCertificate, alpn: Sequence[str] = ("http/1.1",)) -> ssl.SSLContext:
    """A TLS server context for `leaf`.

    `load_cert_chain` only reads files, so the PEMs pass through a private temporary directory
    that is gone when this returns.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        context.set_alpn_protocols(list(alpn))
    with tempfile.TemporaryDirectory(prefix="otelprobe-lab-") as tmp:
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_file.write_bytes(leaf.served_pem)
        key_file.write_bytes(leaf.key_pem)
        context.load_cert_chain(cert_file, key_file)
    return context
