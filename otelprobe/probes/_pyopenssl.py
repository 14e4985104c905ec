"""pyOpenSSL as a TLS engine: the tls probe's handshake when it asks for a stapled OCSP response.

Python's ssl module can neither request nor read a stapled response; pyOpenSSL can. probes/tls.py
drives `OCSPEngine` with `TimedConnection.handshake` (probes/_net.py), so its `tls.handshake`
phase is timed at the same socket events as the ssl path's. `ocsp_context` mirrors the ssl
context of `_tls.client_context` (trust, hostname check, versions, ciphers, ALPN, client
certificate), so both paths judge a server alike and report it through probes/_tls_report.py.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Sequence
from typing import Any, Final

from cryptography import x509

from otelprobe.config.common import TLSClientConfig
from otelprobe.errors import MissingDependencyError, TLSError
from otelprobe.probes import _ocsp
from otelprobe.probes._tls_errors import handshake_failure_detail, verify_detail
from otelprobe.probes._tls_report import Handshake

try:
    from OpenSSL import SSL
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib
except ImportError:  # the `ocsp` extra is not installed
    _AVAILABLE = False
else:
    _AVAILABLE = True

logger = logging.getLogger(__name__)

INSTALL_HINT: Final = 'OCSP stapling needs pyOpenSSL: pip install "otelprobe[ocsp]"'
_READ_SIZE: Final = 65536


def require() -> None:
    """Raises MissingDependencyError, naming the install command, when pyOpenSSL is missing."""
    if not _AVAILABLE:
        raise MissingDependencyError(INSTALL_HINT)


def ocsp_context(config: TLSClientConfig, alpn: Sequence[str], like: ssl.SSLContext) -> SSL.Context:
    """A pyOpenSSL client context with the settings of `like` (made by `_tls.client_context`).

    Versions and TLS 1.2 ciphers are copied from `like`; trust, client certificate and ALPN come
    from the same config. Verification records the first failure for `OCSPEngine` to report.
    """
    require()
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_options(SSL.OP_NO_COMPRESSION)
    if like.minimum_version > 0:
        context.set_min_proto_version(int(like.minimum_version))
    if like.maximum_version > 0:
        context.set_max_proto_version(int(like.maximum_version))
    tls12 = [c["name"] for c in like.get_ciphers() if c["protocol"] != "TLSv1.3"]
    if tls12:
        context.set_cipher_list(":".join(tls12).encode())
    if config.verify:
        if config.ca_file:
            context.load_verify_locations(config.ca_file)
        else:
            context.set_default_verify_paths()
        context.set_verify(SSL.VERIFY_PEER, _on_verify)
    else:
        context.set_verify(SSL.VERIFY_NONE)
    if config.client_cert:
        context.use_certificate_chain_file(config.client_cert)
        context.use_privatekey_file(config.client_key or config.client_cert)
    if alpn:
        context.set_alpn_protos([p.encode() for p in alpn])
    context.set_ocsp_client_callback(_on_ocsp)
    return context


class OCSPEngine:
    """One client handshake (a `_net.TLSEngine`) that asks for a stapled OCSP response.

    Args:
        context: from `ocsp_context`.
        server_name: the name (or IP literal) to verify; a name is also sent as SNI.
        verify: whether the context verifies (then the name is checked like ssl's check_hostname).
        check_hostname_flags_from: the ssl context whose hostname rules to copy.
        reject_revoked: abort the handshake, as `tls_error certificate_revoked`, when a verified
            staple says the certificate is revoked.
    """

    def __init__(
        self,
        context: SSL.Context,
        server_name: str,
        *,
        verify: bool,
        check_hostname_flags_from: ssl.SSLContext,
        reject_revoked: bool,
    ) -> None:
        self._conn = SSL.Connection(context, None)  # no socket: memory BIOs
        self._conn.set_app_data(self)
        self._conn.set_connect_state()
        self._conn.request_ocsp()
        self._verify = verify
        self._reject_revoked = reject_revoked
        self.staple: _ocsp.OCSPReport | None = None
        """The stapled response, read during the handshake; None when the server stapled none."""
        self._verify_error: int | None = None
        self._rejected = False
        try:
            ip = ipaddress.ip_address(server_name.strip("[]"))
        except ValueError:
            ip = None
            self._conn.set_tlsext_host_name(server_name.encode("idna"))
        if verify:
            _check_identity(self._conn, server_name, ip, check_hostname_flags_from)

    def step(self) -> bool:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return False
        except SSL.Error as exc:
            raise self._failure(exc) from exc
        return True

    def take_output(self) -> bytes:
        chunks = []
        while True:
            try:
                chunks.append(self._conn.bio_read(_READ_SIZE))
            except SSL.WantReadError:
                return b"".join(chunks)

    def feed(self, data: bytes) -> None:
        self._conn.bio_write(data)

    def result(self, *, completed: bool = True) -> Handshake:
        """The handshake for probes/_tls_report.py; `completed=False` after a failure (chain only)."""
        chain = self.chain()
        if not completed:
            return Handshake(chain)
        name = self._conn.get_protocol_version_name()
        alpn = self._conn.get_alpn_proto_negotiated()
        return Handshake(
            chain,
            {"TLSv1": "1.0"}.get(name, name.removeprefix("TLSv")),
            self._conn.get_cipher_name(),
            alpn.decode("ascii", "replace") if alpn else None,
        )

    def chain(self) -> list[x509.Certificate]:
        """Leaf first: the verified chain when verification ran (as `_tls.certificate_chain`)."""
        chain = self._conn.get_verified_chain(as_cryptography=True) if self._verify else None
        return list(chain or self._conn.get_peer_cert_chain(as_cryptography=True) or [])

    def _failure(self, exc: SSL.Error) -> TLSError:
        if self._rejected and self.staple is not None:
            when = self.staple.revocation_time
            return TLSError(
                "certificate_revoked",
                "the stapled OCSP response says the certificate is revoked"
                + (f" since {when.isoformat()}" if when else ""),
            )
        if self._verify_error is not None:
            message = _ffi.string(_lib.X509_verify_cert_error_string(self._verify_error)).decode()
            return TLSError(
                verify_detail(self._verify_error, message), f"certificate verify failed: {message}"
            )
        reasons = [str(entry[2]) for entry in exc.args[0] if len(entry) > 2] if exc.args else []
        reason = reasons[-1] if reasons else str(exc)
        return TLSError(handshake_failure_detail(reason), f"TLS handshake failed: {reason}")

    def _staple_received(self, der: bytes) -> bool:
        """OpenSSL's status callback: keep the response; False aborts the handshake."""
        if not der:
            return True
        self.staple = _ocsp.read_staple(der, self.chain())
        if self._reject_revoked and self.staple.revoked_and_verified:
            self._rejected = True
            return False
        return True

    def _verified(self, error: int, ok: bool) -> bool:
        # OpenSSL stops at the first failure (we return it), so this is what ssl reports too.
        if not ok and self._verify_error is None:
            self._verify_error = error
        return ok


def _on_verify(conn: SSL.Connection, cert: Any, error: int, depth: int, ok: int) -> bool:
    engine = conn.get_app_data()
    return engine._verified(error, bool(ok)) if isinstance(engine, OCSPEngine) else bool(ok)


def _on_ocsp(conn: SSL.Connection, der: bytes, data: object) -> bool:
    engine = conn.get_app_data()
    return engine._staple_received(der) if isinstance(engine, OCSPEngine) else True


def _check_identity(
    conn: SSL.Connection,
    server_name: str,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    like: ssl.SSLContext,
) -> None:
    """Have OpenSSL check the name during verification, as ssl's check_hostname does.

    pyOpenSSL has no public call for it, so this sets the connection's X509_VERIFY_PARAM through
    the bindings pyOpenSSL itself uses, with CPython's flags (_ssl.c `_ssl_configure_hostname`).
    """
    param = _lib.SSL_get0_param(conn._ssl)
    flags = _lib.X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS
    if not like.hostname_checks_common_name:
        flags |= _lib.X509_CHECK_FLAG_NEVER_CHECK_SUBJECT
    _lib.X509_VERIFY_PARAM_set_hostflags(param, flags)
    if ip is not None:
        packed = ip.packed
        ok = _lib.X509_VERIFY_PARAM_set1_ip(param, packed, len(packed))
    else:
        name = server_name.encode("idna")
        ok = _lib.X509_VERIFY_PARAM_set1_host(param, name, len(name))
    if ok != 1:
        raise TLSError("handshake_failure", f"cannot set the name to verify: {server_name!r}")
