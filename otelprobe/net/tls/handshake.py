"""TLS client contexts from config, and what an SRE wants to know about the peer's certificates.

Shared by every kind that speaks TLS (http, tcp, tls, grpc, websocket). Verification is on unless
the config turns it off; certificate details are parsed with `cryptography`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from otelprobe import names
from otelprobe.net.tls.openssl import DeferredClientTLS, TLSSession
from otelprobe.settings.common import TLSClientConfig
from otelprobe.timing import AttributeValue

_PROTOCOL_VERSIONS: Final = {"TLSv1": "1.0", "TLSv1.1": "1.1", "TLSv1.2": "1.2", "TLSv1.3": "1.3"}


def client_context(config: TLSClientConfig, alpn: Sequence[str] = ()) -> DeferredClientTLS:
    """A probe's TLS client (net/tls/openssl.py): system trust (or ca_file), client cert, versions,
    ALPN; built at its first `get()`, inside an attempt."""
    return DeferredClientTLS(config, alpn)


def protocol_version(session: TLSSession) -> str | None:
    """'1.3' for TLSv1.3, as the `tls.protocol.version` convention writes it."""
    version = session.version()
    return _PROTOCOL_VERSIONS.get(version or "", version)


def handshake_attributes(session: TLSSession) -> dict[str, AttributeValue]:
    """`tls.*` semantic-convention attributes of a completed handshake, plus chain expiry."""
    attrs: dict[str, AttributeValue] = {names.TLS_PROTOCOL_NAME: "tls", names.TLS_ESTABLISHED: True}
    version = protocol_version(session)
    if version:
        attrs[names.TLS_PROTOCOL_VERSION] = version
    cipher = session.cipher()
    if cipher:
        attrs[names.TLS_CIPHER] = cipher[0]
    alpn = session.selected_alpn_protocol()
    if alpn:
        attrs[names.TLS_NEXT_PROTOCOL] = alpn
    chain = session.chain()
    if chain:
        attrs.update(leaf_attributes(chain[0]))
        earliest = min(cert.not_valid_after_utc for cert in chain)
        attrs[names.PROBE_TLS_CHAIN_NOT_AFTER] = earliest.isoformat()
        attrs[names.PROBE_TLS_CERT_REMAINING] = (earliest - dt.datetime.now(dt.UTC)).total_seconds()
    return attrs


def leaf_attributes(cert: x509.Certificate) -> dict[str, AttributeValue]:
    return {
        names.TLS_SERVER_SUBJECT: cert.subject.rfc4514_string(),
        names.TLS_SERVER_ISSUER: cert.issuer.rfc4514_string(),
        names.TLS_SERVER_NOT_BEFORE: cert.not_valid_before_utc.isoformat(),
        names.TLS_SERVER_NOT_AFTER: cert.not_valid_after_utc.isoformat(),
        names.TLS_SERVER_HASH_SHA256: hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest().upper(),
    }


def subject_alt_names(cert: x509.Certificate) -> list[str]:
    """DNS names and IP addresses the certificate is valid for."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        *san.get_values_for_type(x509.DNSName),
        *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
    ]
