"""What the tls probe reports about a handshake: every certificate of the chain, and trust.

Works on completed and on failed handshakes alike (a failed verification still holds the
certificates the server sent): a net/tls/openssl.py session becomes a `Handshake`. Used by
probes/tls.py on top of net/tls/handshake.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from otelprobe import names
from otelprobe.net.tls.handshake import leaf_attributes, protocol_version, subject_alt_names
from otelprobe.net.tls.openssl import TLSSession
from otelprobe.timing import AttributeValue

# Verification failures that are about the certificates (the handshake itself worked).
_CERT_DETAILS: Final = frozenset(
    {
        "certificate_expired",
        "certificate_not_yet_valid",
        "hostname_mismatch",
        "self_signed_certificate",
        "untrusted_certificate",
        "certificate_revoked",
        "certificate_verify_failed",
    }
)
# OpenSSL builds the chain to a trust anchor and checks the host name before it checks validity
# dates (x509_vfy.c verify_chain: build_chain, ..., check_id, then internal_verify), so these
# first errors mean the chain was trusted; the first two also mean the host name matched.
_TRUSTED_CHAIN_DETAILS: Final = frozenset(
    {"certificate_expired", "certificate_not_yet_valid", "hostname_mismatch"}
)
_UNTRUSTED_CHAIN_DETAILS: Final = frozenset({"self_signed_certificate", "untrusted_certificate"})


@dataclass(frozen=True, slots=True)
class Handshake:
    """A handshake as the tls probe reports it."""

    chain: Sequence[x509.Certificate]
    """Leaf first: the verified chain when verification ran, else what the server sent."""
    version: str | None = None
    """'1.3' (the `tls.protocol.version` spelling); None for a failed handshake."""
    cipher: str | None = None
    alpn: str | None = None


def from_session(session: TLSSession, *, completed: bool = True) -> Handshake:
    """What `session` showed; `completed=False` after a failed handshake (its chain only)."""
    if not completed:
        return Handshake(session.chain())
    cipher = session.cipher()
    return Handshake(
        session.chain(),
        protocol_version(session),
        cipher[0] if cipher else None,
        session.selected_alpn_protocol(),
    )


def is_certificate_detail(detail: str) -> bool:
    return detail in _CERT_DETAILS


def session_attributes(handshake: Handshake) -> dict[str, AttributeValue]:
    """tls.* of a completed handshake (version, cipher, ALPN), as `handshake_attributes` writes them."""
    attrs: dict[str, AttributeValue] = {names.TLS_PROTOCOL_NAME: "tls", names.TLS_ESTABLISHED: True}
    if handshake.version:
        attrs[names.TLS_PROTOCOL_VERSION] = handshake.version
    if handshake.cipher:
        attrs[names.TLS_CIPHER] = handshake.cipher
    if handshake.alpn:
        attrs[names.TLS_NEXT_PROTOCOL] = handshake.alpn
    return attrs


def chain_attributes(handshake: Handshake) -> dict[str, AttributeValue]:
    """Leaf and per-certificate details (leaf first) and the earliest expiry in the chain."""
    chain = handshake.chain
    if not chain:
        return {}
    attrs: dict[str, AttributeValue] = dict(leaf_attributes(chain[0]))
    attrs[names.PROBE_TLS_SERVER_SANS] = tuple(subject_alt_names(chain[0]))
    attrs[names.PROBE_TLS_CHAIN_LENGTH] = len(chain)
    attrs[names.PROBE_TLS_CHAIN_SUBJECTS] = tuple(c.subject.rfc4514_string() for c in chain)
    attrs[names.PROBE_TLS_CHAIN_ISSUERS] = tuple(c.issuer.rfc4514_string() for c in chain)
    attrs[names.PROBE_TLS_CHAIN_HASHES] = tuple(
        hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest().upper() for c in chain
    )
    attrs[names.PROBE_TLS_CHAIN_NOT_BEFORE] = tuple(c.not_valid_before_utc.isoformat() for c in chain)
    attrs[names.PROBE_TLS_CHAIN_NOT_AFTER_ALL] = tuple(c.not_valid_after_utc.isoformat() for c in chain)
    earliest = min(c.not_valid_after_utc for c in chain)
    attrs[names.PROBE_TLS_CHAIN_NOT_AFTER] = earliest.isoformat()
    attrs[names.PROBE_TLS_CERT_REMAINING] = (earliest - dt.datetime.now(dt.UTC)).total_seconds()
    return attrs


def trust_from_failure(detail: str, handshake: Handshake, server_name: str) -> dict[str, AttributeValue]:
    """hostname_verified / chain_trusted after a failed verification, from OpenSSL's first error."""
    attrs: dict[str, AttributeValue] = {}
    if detail in _TRUSTED_CHAIN_DETAILS:
        attrs[names.PROBE_TLS_CHAIN_TRUSTED] = True
    elif detail in _UNTRUSTED_CHAIN_DETAILS:
        attrs[names.PROBE_TLS_CHAIN_TRUSTED] = False
    if detail == "hostname_mismatch":
        attrs[names.PROBE_TLS_HOSTNAME_VERIFIED] = False
    elif detail in ("certificate_expired", "certificate_not_yet_valid"):
        attrs[names.PROBE_TLS_HOSTNAME_VERIFIED] = True
    elif detail in _CERT_DETAILS:
        # OpenSSL stopped before checking the name: check it ourselves on the leaf.
        attrs[names.PROBE_TLS_HOSTNAME_VERIFIED] = hostname_matches(handshake, server_name)
    return attrs


def hostname_matches(handshake: Handshake, server_name: str) -> bool:
    """RFC 6125 matching of `server_name` against the leaf's SANs (wildcard in the left label only)."""
    return bool(handshake.chain) and _matches(handshake.chain[0], server_name)


def _matches(cert: x509.Certificate, server_name: str) -> bool:
    try:
        ip = ipaddress.ip_address(server_name.strip("[]"))
    except ValueError:
        ip = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if ip is not None:
        return ip in san.get_values_for_type(x509.IPAddress)
    wanted = server_name.rstrip(".").lower().split(".")
    for pattern in san.get_values_for_type(x509.DNSName):
        labels = pattern.rstrip(".").lower().split(".")
        if len(labels) != len(wanted):
            continue
        head_ok = labels[0] == wanted[0] or (labels[0] == "*" and len(labels) > 2)
        if head_ok and labels[1:] == wanted[1:]:
            return True
    return False
