"""A stapled OCSP response, read and judged: status, validity window, and whom it was signed by.

The tls probe's OCSP mode (probes/tls.py over net/tls/openssl.py) hands the DER bytes the server
stapled to `read_staple`; the report becomes `probe.tls.ocsp.*` attributes and feeds the
`expect.ocsp` assertion. OpenSSL does not check a stapled response at all, so this module does:
the response must be about the leaf, from its issuer, and signed by the issuer or by a responder
certificate the issuer delegated OCSP signing to (RFC 6960 §4.2.2.2).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from otelprobe import names
from otelprobe.errors import AssertionFailed
from otelprobe.timing import AttributeValue

OCSPExpectation = Literal["required", "good"]


@dataclass(frozen=True, slots=True)
class OCSPReport:
    """What a stapled response says about the leaf, and whether it can be believed."""

    response_status: str
    """`successful`, or why the responder did not answer (`try_later`, `unauthorized`, ...);
    `malformed` when the bytes are no OCSP response."""
    status: str | None = None
    """`good`, `revoked` or `unknown` (successful responses only)."""
    this_update: dt.datetime | None = None
    next_update: dt.datetime | None = None
    revocation_time: dt.datetime | None = None
    revocation_reason: str | None = None
    verified: bool = False
    """About this leaf, from its issuer, with a valid signature."""
    problem: str | None = None
    """Why the response is not verified."""

    def stale(self, now: dt.datetime) -> bool:
        """Past its nextUpdate (a response without one is never stale, RFC 6960 §4.2.2.1)."""
        return self.next_update is not None and self.next_update < now

    def attributes(self, now: dt.datetime) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {
            names.PROBE_TLS_OCSP_STAPLED: True,
            names.PROBE_TLS_OCSP_RESPONSE_STATUS: self.response_status,
        }
        if self.status is None:
            return attrs
        attrs[names.PROBE_TLS_OCSP_STATUS] = self.status
        attrs[names.PROBE_TLS_OCSP_VERIFIED] = self.verified
        attrs[names.PROBE_TLS_OCSP_STALE] = self.stale(now)
        for key, moment in (
            (names.PROBE_TLS_OCSP_THIS_UPDATE, self.this_update),
            (names.PROBE_TLS_OCSP_NEXT_UPDATE, self.next_update),
            (names.PROBE_TLS_OCSP_REVOCATION_TIME, self.revocation_time),
        ):
            if moment is not None:
                attrs[key] = moment.isoformat()
        if self.revocation_reason is not None:
            attrs[names.PROBE_TLS_OCSP_REVOCATION_REASON] = self.revocation_reason
        return attrs

    @property
    def revoked_and_verified(self) -> bool:
        return self.status == "revoked" and self.verified


def read_staple(der: bytes, chain: Sequence[x509.Certificate]) -> OCSPReport:
    """Parse and check a stapled response against the chain (leaf first) the server presented."""
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError:
        return OCSPReport("malformed", problem="not a DER OCSP response")
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return OCSPReport(response.response_status.name.lower(), problem="unsuccessful response")
    leaf = chain[0] if chain else None
    single = next(
        (s for s in response.responses if leaf is not None and s.serial_number == leaf.serial_number),
        None,
    )
    if leaf is None or single is None:
        first = next(iter(response.responses), None)
        if first is None:
            return OCSPReport("successful", problem="the response holds no certificate status")
        return _report(first, verified=False, problem="the response is about another certificate")
    issuer = next((c for c in chain[1:] if c.subject == leaf.issuer), None)
    if issuer is None:
        return _report(single, verified=False, problem="the leaf's issuer is not in the chain")
    if not _same_issuer(single, leaf, issuer):
        return _report(single, verified=False, problem="the response names another issuer")
    if not any(_signed_by(response, signer) for signer in _signers(response, issuer)):
        return _report(single, verified=False, problem="not signed by the issuer or its OCSP responder")
    return _report(single, verified=True, problem=None)


def check(expect: OCSPExpectation | None, report: OCSPReport | None, now: dt.datetime) -> None:
    """`expect.ocsp`: `required` = a verified, current staple; `good` = that, saying good.

    Raises:
        AssertionFailed: ocsp_not_stapled, ocsp_invalid, ocsp_stale, ocsp_revoked, ocsp_unknown.
    """
    if expect is None:
        return
    if report is None:
        raise AssertionFailed("ocsp_not_stapled", "the server stapled no OCSP response")
    if report.status is None or not report.verified:
        raise AssertionFailed(
            "ocsp_invalid", f"stapled OCSP response not usable: {report.problem or report.response_status}"
        )
    if report.stale(now):
        assert report.next_update is not None
        raise AssertionFailed(
            "ocsp_stale", f"stapled OCSP response expired at {report.next_update.isoformat()} (nextUpdate)"
        )
    if expect == "good" and report.status != "good":
        when = f" at {report.revocation_time.isoformat()}" if report.revocation_time else ""
        raise AssertionFailed(f"ocsp_{report.status}", f"stapled OCSP status is {report.status}{when}")


def _report(single: ocsp.OCSPSingleResponse, *, verified: bool, problem: str | None) -> OCSPReport:
    revoked = single.certificate_status == ocsp.OCSPCertStatus.REVOKED
    reason = single.revocation_reason if revoked else None
    return OCSPReport(
        "successful",
        status=single.certificate_status.name.lower(),
        this_update=single.this_update_utc,
        next_update=single.next_update_utc,
        revocation_time=single.revocation_time_utc if revoked else None,
        revocation_reason=reason.name if reason is not None else None,
        verified=verified,
        problem=problem,
    )


def _same_issuer(single: ocsp.OCSPSingleResponse, leaf: x509.Certificate, issuer: x509.Certificate) -> bool:
    """The CertID's issuer name and key hashes are those of `issuer` (RFC 6960 §4.1.1)."""
    expected = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, single.hash_algorithm).build()
    return (expected.issuer_name_hash, expected.issuer_key_hash) == (
        single.issuer_name_hash,
        single.issuer_key_hash,
    )


def _signers(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> list[x509.Certificate]:
    """The issuer, and any certificate in the response that the issuer made an OCSP responder."""
    signers = [issuer]
    for cert in response.certificates:
        try:
            cert.verify_directly_issued_by(issuer)
            usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in usage:
            signers.append(cert)
    return signers


def _signed_by(response: ocsp.OCSPResponse, signer: x509.Certificate) -> bool:
    key = signer.public_key()
    data, signature, digest = (
        response.tbs_response_bytes,
        response.signature,
        response.signature_hash_algorithm,
    )
    try:
        if isinstance(key, rsa.RSAPublicKey) and isinstance(digest, hashes.HashAlgorithm):
            key.verify(signature, data, padding.PKCS1v15(), digest)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(digest, hashes.HashAlgorithm):
            key.verify(signature, data, ec.ECDSA(digest))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        return False
    return True
