"""Client TLS on the OpenSSL that `cryptography` bundles, through pyOpenSSL, over memory buffers.

Why not the `ssl` module: it links the system's OpenSSL (3.0 on Debian 12), whose handshake
spends much of its CPU decoding keys and certificates through the 3.0 provider machinery; the
OpenSSL in cryptography's wheels (3.5+) does the same handshake in ~40 % less CPU (`bench/
README.md`, "TLS engine"). A prober pays one full handshake per probe, so this is most of what a
probe costs us. pyOpenSSL also gives what `ssl` cannot: key-exchange groups, stapled OCSP.

`ClientTLS` is built once per target from its `tls:` config; `ClientTLS.session` makes one
`TLSSession` per connection, which `TimedConnection.start_session` (net/connection.py) drives so that
`tls.handshake` is timed at the socket events, then carries the application data. The settings
mirror what `ssl.create_default_context` does: verification and host-name checking on (CPython's
check flags), CPython's TLS 1.2 cipher string, no compression; the groups offered by default are
OpenSSL 3.0's classic list (what the `ssl` path offered, and what Go clients offer), so a
hybrid post-quantum key share is opt-in via `tls.groups`.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import ssl
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Final

from cryptography import x509
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from otelprobe.errors import ProtocolError, TLSError
from otelprobe.net.tls import ocsp as _ocsp
from otelprobe.net.tls._errors import handshake_failure_detail, verify_detail
from otelprobe.settings.common import TLSClientConfig
from otelprobe.settings.tls_groups import set_groups as _set_groups

_READ_SIZE: Final = 65536
_MAX_KEY_FILE: Final = 1 << 20  # a PEM key is a few KiB; more is not a key file
DEFAULT_GROUPS: Final = ("X25519", "P-256", "X448", "P-521", "P-384")
"""OpenSSL 3.0's default list, i.e. what the `ssl` module offered; X25519 is the key share sent."""
# CPython's PY_SSL_DEFAULT_CIPHER_STRING (Modules/_ssl.c): TLS 1.2 suites as the ssl path had them.
_CPYTHON_CIPHERS: Final = (
    b"@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"
)
_VERSIONS: Final = {
    "1.0": SSL.TLS1_VERSION,
    "1.1": SSL.TLS1_1_VERSION,
    "1.2": SSL.TLS1_2_VERSION,
    "1.3": SSL.TLS1_3_VERSION,
}
# CPython's check_hostname: no partial wildcards, and never the subject CN (SANs only).
_HOST_FLAGS: Final = _lib.X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | _lib.X509_CHECK_FLAG_NEVER_CHECK_SUBJECT
_X509_V_OK: Final = 0


class ClientTLS:
    """A target's client TLS settings, compiled once: trust store, versions, groups, ALPN.

    Raises TLSError("tls_config_invalid", ...) when a file cannot be used (missing, not PEM, a key
    that needs a password or does not match the certificate).
    """

    def __init__(
        self,
        config: TLSClientConfig,
        alpn: Sequence[str] = (),
        *,
        ocsp: bool = False,
        reject_revoked: bool = False,
    ) -> None:
        self.verify = config.verify
        self.alpn = tuple(alpn)
        self.ocsp = ocsp
        self.reject_revoked = reject_revoked and config.verify
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_options(SSL.OP_NO_COMPRESSION)
        context.set_min_proto_version(_VERSIONS[config.min_version or "1.2"])
        if config.max_version:
            context.set_max_proto_version(_VERSIONS[config.max_version])
        context.set_cipher_list(_CPYTHON_CIPHERS)
        _set_groups(context, config.groups or DEFAULT_GROUPS)
        if config.verify:
            with _loading("ca_file", config.ca_file):
                _load_trust(context, config.ca_file)
            context.set_verify(SSL.VERIFY_PEER)
        else:
            context.set_verify(SSL.VERIFY_NONE)
        if config.client_cert:
            _load_client_identity(context, config)
        if alpn:
            context.set_alpn_protos([p.encode() for p in alpn])
        if ocsp:
            context.set_ocsp_client_callback(_staple_received)
        self._context = context

    @classmethod
    def shared(
        cls,
        config: TLSClientConfig,
        alpn: Sequence[str] = (),
        *,
        ocsp: bool = False,
        reject_revoked: bool = False,
    ) -> ClientTLS:
        """The ClientTLS of these settings, shared by every target that has them.

        A context holds its own copy of the trust store (the system's is ~150 certificates), so
        10,000 HTTPS targets with one context each would cost gigabytes. Shared while any probe
        holds it; the key includes the files' mtime and size, so an edited CA file or client
        certificate is read again on the next config reload. SNI and the name to verify are per
        session, so they are not part of the key.
        """
        key = (
            config.verify,
            config.min_version,
            config.max_version,
            config.groups,
            tuple(alpn),
            ocsp,
            reject_revoked,
            config.client_key_password,
            *(_file_key(path) for path in (config.ca_file, config.client_cert, config.client_key)),
            *(_system_trust_key() if config.verify and not config.ca_file else ()),
        )
        with _shared_lock:
            client = _shared.get(key)
            if client is None:
                client = cls(config, alpn, ocsp=ocsp, reject_revoked=reject_revoked)
                _shared[key] = client
            return client

    def session(self, server_name: str) -> TLSSession:
        """A client session for one connection; `server_name` is verified (and sent as SNI unless an IP)."""
        return TLSSession(self, self._context, server_name)


class DeferredClientTLS:
    """A target's ClientTLS, built on its first use and kept.

    Built inside a probe attempt, a CA file or client key that cannot be loaded (deleted, rotated
    to garbage, a wrong password) fails that attempt as tls_error `tls_config_invalid`, in the
    target's own telemetry, instead of the target's construction (which would leave it
    unscheduled, with only a log line to say why).
    """

    def __init__(
        self,
        config: TLSClientConfig,
        alpn: Sequence[str] = (),
        *,
        ocsp: bool = False,
        reject_revoked: bool = False,
    ) -> None:
        self._args = (config, tuple(alpn))
        self._ocsp, self._reject_revoked = ocsp, reject_revoked
        self._client: ClientTLS | None = None

    def get(self) -> ClientTLS:
        if self._client is None:
            config, alpn = self._args
            self._client = ClientTLS.shared(
                config, alpn, ocsp=self._ocsp, reject_revoked=self._reject_revoked
            )
        return self._client


class TLSSession:
    """One client TLS connection over memory buffers: the handshake `TimedConnection` drives, then
    the record layer.

    After the handshake, `version`, `cipher` and `selected_alpn_protocol` answer as
    `ssl.SSLObject`'s do; `leaf_der` and `chain` give the server's certificates.
    """

    __slots__ = ("__weakref__", "_client", "_conn", "_eof", "_rejected", "staple")

    def __init__(self, client: ClientTLS, context: SSL.Context, server_name: str) -> None:
        self._client = client
        self._eof = False
        self._rejected = False
        self.staple: _ocsp.OCSPReport | None = None
        """With `ocsp`: the stapled response, read during the handshake (None when none was stapled)."""
        conn = SSL.Connection(context, None)  # no socket: memory BIOs
        conn.set_connect_state()
        if client.ocsp:
            # A weak reference: a strong one would make a cycle that only the GC could free.
            conn.set_app_data(weakref.ref(self))
            conn.request_ocsp()
        ip = _ip_of(server_name)
        if ip is None:
            conn.set_tlsext_host_name(server_name.encode("idna"))
        self._conn = conn
        if client.verify:
            _check_identity(conn, server_name, ip)

    # -- handshake ----------------------------------------------------------------------------

    def step(self) -> bool:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return False
        except SSL.Error as exc:
            raise self._failure(exc) from exc
        return True

    def take_output(self) -> bytes:
        try:
            first = self._conn.bio_read(_READ_SIZE)
        except SSL.WantReadError:
            return b""
        if len(first) < _READ_SIZE:
            return first
        chunks = [first]
        while True:
            try:
                chunks.append(self._conn.bio_read(_READ_SIZE))
            except SSL.WantReadError:
                return b"".join(chunks)

    def feed(self, data: bytes) -> None:
        self._conn.bio_write(data)

    # -- application data -------------------------------------------------------------------

    def encrypt(self, data: bytes) -> bytes:
        """The TLS records carrying `data`, to be sent."""
        view = memoryview(data)
        while view:
            sent = self._conn.send(view)
            view = view[sent:]
        return self.take_output()

    def decrypt(self, max_bytes: int = _READ_SIZE) -> bytes | None:
        """Decrypted application data; None when more input is needed, b"" at the end of the stream.

        Post-handshake messages (TLS 1.3 session tickets) are consumed here and yield nothing.
        """
        try:
            return self._conn.recv(max_bytes)
        except SSL.WantReadError:
            return b"" if self._eof else None
        except SSL.ZeroReturnError:
            return b""  # close_notify
        except SSL.SysCallError:
            return b""  # EOF without close_notify: the HTTP framing says whether it mattered
        except SSL.Error as exc:
            if self._eof:
                return b""  # OpenSSL 3+: "unexpected eof while reading"
            reason = _reason(exc)
            if "alert" in reason:
                # A TLS 1.3 server judges our certificate after its Finished: its alert
                # (e.g. certificate_required) comes with the first read.
                raise TLSError(
                    handshake_failure_detail(reason), f"TLS alert from the server: {reason}"
                ) from exc
            raise ProtocolError("tls_record_error", f"TLS error while reading: {reason}") from exc

    def feed_eof(self) -> None:
        self._eof = True
        self._conn.bio_shutdown()

    # -- what the handshake established ------------------------------------------------------

    def version(self) -> str | None:
        """'TLSv1.3', as `ssl.SSLObject.version()` says it."""
        name = self._conn.get_protocol_version_name()
        return None if name == "Unknown" else name

    def cipher(self) -> tuple[str, str, int] | None:
        name = self._conn.get_cipher_name()
        if name is None:
            return None
        return name, self._conn.get_cipher_version() or "", self._conn.get_cipher_bits() or 0

    def selected_alpn_protocol(self) -> str | None:
        alpn = self._conn.get_alpn_proto_negotiated()
        return alpn.decode("ascii", "replace") if alpn else None

    def leaf_der(self) -> bytes | None:
        """The leaf certificate's DER."""
        # pyOpenSSL's own X509 (no warning when not constructed directly): DER straight from C,
        # without building a `cryptography` certificate on every probe.
        cert = self._conn.get_peer_certificate()
        return crypto.dump_certificate(crypto.FILETYPE_ASN1, cert) if cert is not None else None

    def chain(self) -> list[x509.Certificate]:
        """Leaf first: the verified chain when verification ran, else what the server sent."""
        verified = self._conn.get_verified_chain(as_cryptography=True) if self._client.verify else None
        return list(verified or self._conn.get_peer_cert_chain(as_cryptography=True) or [])

    # -- failures ------------------------------------------------------------------------------

    def _failure(self, exc: SSL.Error) -> TLSError:
        if self._rejected and self.staple is not None:
            when = self.staple.revocation_time
            return TLSError(
                "certificate_revoked",
                "the stapled OCSP response says the certificate is revoked"
                + (f" since {when.isoformat()}" if when else ""),
            )
        code = _lib.SSL_get_verify_result(self._conn._ssl)
        if code != _X509_V_OK and self._client.verify:
            message = _ffi.string(_lib.X509_verify_cert_error_string(code)).decode()
            return TLSError(verify_detail(code, message), f"certificate verify failed: {message}")
        reason = _reason(exc)
        return TLSError(handshake_failure_detail(reason), f"TLS handshake failed: {reason}")

    def _staple_received(self, der: bytes) -> bool:
        """OpenSSL's status callback, run after the chain and the name verified: keep the
        response; False aborts the handshake (a verified `revoked`, when the client rejects those)."""
        if not der:
            return True
        self.staple = _ocsp.read_staple(der, self.chain())
        if self._client.reject_revoked and self.staple.revoked_and_verified:
            self._rejected = True
            return False
        return True


def _staple_received(conn: SSL.Connection, der: bytes, data: object) -> bool:
    ref = conn.get_app_data()
    session = ref() if isinstance(ref, weakref.ref) else None
    return session._staple_received(der) if isinstance(session, TLSSession) else True


def _reason(exc: SSL.Error) -> str:
    """OpenSSL's last reason string (e.g. 'tlsv1 alert protocol version')."""
    entries = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    reasons = [str(entry[2]) for entry in entries if len(entry) > 2]
    return reasons[-1] if reasons else str(exc) or type(exc).__name__


_shared: weakref.WeakValueDictionary[tuple[object, ...], ClientTLS] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


def _file_key(path: str | None) -> tuple[str, int, int] | None:
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return (path, -1, -1)  # ClientTLS will report the file itself
    return (path, stat.st_mtime_ns, stat.st_size)


def _system_trust_key() -> tuple[object, ...]:
    """Where the system trust store is now (SSL_CERT_FILE / SSL_CERT_DIR may move it), and its age."""
    paths = ssl.get_default_verify_paths()
    return (_file_key(paths.cafile), _file_key(paths.capath))


@contextlib.contextmanager
def _loading(field: str, path: str | None) -> Iterator[None]:
    """OpenSSL's failure to read a configured file as TLSError("tls_config_invalid"), one line.

    OpenSSL's error queue says e.g. "BIO routines: no such file"; the message names the field
    and the file instead, so that `otelprobe probe --ca FILE` and a failed probe both read plainly.
    """
    try:
        yield
    except (SSL.Error, crypto.Error, OSError, ValueError) as exc:
        _lib.ERR_clear_error()
        reason = _file_problem(path) or _openssl_reason(exc)
        raise TLSError("tls_config_invalid", f"cannot load tls.{field} {path!r}: {reason}") from None


def _file_problem(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _openssl_reason(exc: BaseException) -> str:
    """The first reason in pyOpenSSL's error list ("no certificate or crl found"), else the text."""
    errors = exc.args[0] if exc.args else None
    if isinstance(errors, list):
        reasons = [str(e[-1]) for e in errors if isinstance(e, tuple) and e and e[-1]]
        if reasons:
            return "not a PEM file" if reasons[0] == "no start line" else reasons[0]
    return str(exc) or type(exc).__name__


def _load_client_identity(context: SSL.Context, config: TLSClientConfig) -> None:
    """The client certificate chain and its key, an encrypted key opened with `client_key_password`.

    The key is read by `cryptography`, never by OpenSSL's PEM reader, whose default for an
    encrypted key is to prompt on the terminal: a prober has none, and would hang.
    """
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    cert_path = config.client_cert or ""
    with _loading("client_cert", cert_path):
        context.use_certificate_chain_file(cert_path)
    key_field = "client_key" if config.client_key else "client_cert"
    key_path = config.client_key or cert_path
    password = config.client_key_password
    with _loading(key_field, key_path):
        with open(key_path, "rb") as file:
            pem = file.read(_MAX_KEY_FILE)
        try:
            key = load_pem_private_key(pem, password.encode() if password else None)
        except TypeError as exc:  # encrypted without a password, or a password for a plain key
            raise ValueError(str(exc).split(".")[0].lower()) from None
        except ValueError:
            raise ValueError("not a PEM private key, or the wrong client_key_password") from None
        context.use_privatekey(key)  # type: ignore[arg-type]
        context.check_privatekey()


def _load_trust(context: SSL.Context, ca_file: str | None) -> None:
    """The CA file, or the system trust store exactly where the `ssl` module finds it.

    cryptography's OpenSSL was built with its own default paths, so the system's (which honour
    SSL_CERT_FILE / SSL_CERT_DIR) are passed explicitly.
    """
    if ca_file:
        context.load_verify_locations(ca_file)
        return
    paths = ssl.get_default_verify_paths()
    if paths.cafile or paths.capath:
        context.load_verify_locations(paths.cafile, paths.capath)
    else:
        context.set_default_verify_paths()


def _check_identity(
    conn: SSL.Connection, server_name: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
) -> None:
    """Have OpenSSL check the name during verification, as ssl's check_hostname does.

    pyOpenSSL has no public call for it, so this sets the connection's X509_VERIFY_PARAM through
    the bindings pyOpenSSL itself uses, with CPython's flags (_ssl.c `_ssl_configure_hostname`).
    """
    param = _lib.SSL_get0_param(conn._ssl)
    _lib.X509_VERIFY_PARAM_set_hostflags(param, _HOST_FLAGS)
    if ip is not None:
        packed = ip.packed
        ok = _lib.X509_VERIFY_PARAM_set1_ip(param, packed, len(packed))
    else:
        name = server_name.encode("idna")
        ok = _lib.X509_VERIFY_PARAM_set1_host(param, name, len(name))
    if ok != 1:
        raise TLSError("handshake_failure", f"cannot set the name to verify: {server_name!r}")


@functools.lru_cache(maxsize=4096)
def _ip_of(server_name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address an IP-literal server name stands for, None for a host name; remembered per
    name, as every handshake asks (ipaddress parses in Python, a few µs each)."""
    try:
        return ipaddress.ip_address(server_name.strip("[]"))
    except ValueError:
        return None
