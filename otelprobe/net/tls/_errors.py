"""DESIGN §4 details of TLS failures, from what OpenSSL says (either TLS library)."""

from __future__ import annotations


def verify_detail(code: int | None, message: str) -> str:
    """The detail of a certificate verification failure, from OpenSSL's X509_V_ERR code and text."""
    message = message.lower()
    if code == 10 or "expired" in message:
        return "certificate_expired"
    if code == 9 or "not yet valid" in message:
        return "certificate_not_yet_valid"
    if code == 62 or "hostname mismatch" in message or "ip address mismatch" in message:
        return "hostname_mismatch"
    if code in (18, 19) or "self-signed" in message or "self signed" in message:
        return "self_signed_certificate"
    if code in (2, 20, 21) or "unable to get" in message:
        return "untrusted_certificate"
    if code == 23 or "revoked" in message:
        return "certificate_revoked"
    return "certificate_verify_failed"


def handshake_failure_detail(reason: str) -> str:
    """The detail of any other handshake failure, from OpenSSL's reason (e.g. TLSV1_ALERT_...)."""
    reason = reason.lower().replace(" ", "_")
    if "version" in reason or "protocol" in reason:
        return "protocol_version"
    if "alert" in reason:
        return f"alert_{reason.split('alert_')[-1]}" if "alert_" in reason else "handshake_alert"
    return "handshake_failure"
