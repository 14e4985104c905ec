"""The pyOpenSSL / cryptography internals the TLS engine relies on are still there and still work.

net/tls/openssl.py and settings/tls_groups.py call what pyOpenSSL has no public API for (host-name
checking as CPython's `ssl` does it, the verify result's reason, key-exchange groups) through
pyOpenSSL's private bindings: `OpenSSL._util.lib` / `ffi` (cryptography's cffi bindings),
`SSL.Connection._ssl` and `SSL.Context._context`. pyproject.toml pins the majors tested; when a new
release moves or drops one of these, a test here fails naming the internal and the versions
installed, instead of a probe failing in production with an AttributeError.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.metadata
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import trustme
from OpenSSL import SSL

from otelprobe.errors import TLSError
from otelprobe.net.tls.openssl import ClientTLS, TLSSession
from otelprobe.settings.common import TLSClientConfig
from otelprobe.settings.tls_groups import unknown_groups

PACKAGE: Final = Path(__file__).resolve().parents[2] / "otelprobe"
USERS: Final = (PACKAGE / "net" / "tls" / "openssl.py", PACKAGE / "settings" / "tls_groups.py")

# Every `_lib.<name>` the engine uses: functions, and the constants with OpenSSL's values (x509v3.h).
LIB_FUNCTIONS: Final = (
    "ERR_clear_error",
    "SSL_CTX_set1_curves_list",
    "SSL_get0_param",
    "SSL_get_verify_result",
    "X509_VERIFY_PARAM_set1_host",
    "X509_VERIFY_PARAM_set1_ip",
    "X509_VERIFY_PARAM_set_hostflags",
    "X509_verify_cert_error_string",
)
LIB_CONSTANTS: Final = {
    "X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS": 0x4,
    "X509_CHECK_FLAG_NEVER_CHECK_SUBJECT": 0x20,
}
IO_TIMEOUT_S: Final = 5.0
MAX_HANDSHAKE_ROUNDS: Final = 20


def _versions() -> str:
    return (
        f"pyOpenSSL {importlib.metadata.version('pyOpenSSL')}, "
        f"cryptography {importlib.metadata.version('cryptography')}, "
        f"{SSL.SSLeay_version(SSL.SSLEAY_VERSION).decode()}"
    )


def _broken(internal: str, problem: str) -> str:
    return (
        f"TLS engine contract broken: {internal} {problem} (installed: {_versions()}). "
        "net/tls/openssl.py and settings/tls_groups.py use it; see the pin in pyproject.toml."
    )


def _bindings() -> tuple[object, object]:
    try:
        util = importlib.import_module("OpenSSL._util")
    except ImportError as exc:
        pytest.fail(_broken("OpenSSL._util", f"cannot be imported ({exc})"))
    for name in ("lib", "ffi"):
        if not hasattr(util, name):
            pytest.fail(_broken(f"OpenSSL._util.{name}", "is gone"))
    return util.lib, util.ffi


def _used_lib_names() -> set[str]:
    """The `_lib.<name>` attributes the engine's modules read, from their source."""
    used: set[str] = set()
    for path in USERS:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "_lib":
                    used.add(node.attr)
    return used


def test_every_internal_the_engine_uses_is_covered_here() -> None:
    """A new `_lib.<name>` in the engine must be added to this contract."""
    assert _used_lib_names() == set(LIB_FUNCTIONS) | set(LIB_CONSTANTS)


def test_pyopenssl_bindings_are_cryptographys() -> None:
    """The engine calls OpenSSL through the bindings pyOpenSSL uses: cryptography's, the OpenSSL 3.5+
    it bundles (the reason for the engine, net/tls/openssl.py)."""
    from cryptography.hazmat.bindings.openssl.binding import Binding

    lib, _ = _bindings()
    assert lib is Binding.lib, _broken("OpenSSL._util.lib", "is no longer cryptography's Binding.lib")


@pytest.mark.parametrize("name", LIB_FUNCTIONS)
def test_lib_function_is_there(name: str) -> None:
    lib, _ = _bindings()
    function = getattr(lib, name, None)
    assert function is not None, _broken(f"OpenSSL._util.lib.{name}", "is gone")
    assert callable(function), _broken(f"OpenSSL._util.lib.{name}", f"is not callable: {function!r}")


@pytest.mark.parametrize(("name", "value"), LIB_CONSTANTS.items())
def test_lib_constant_has_openssls_value(name: str, value: int) -> None:
    lib, _ = _bindings()
    actual = getattr(lib, name, None)
    assert actual == value, _broken(f"OpenSSL._util.lib.{name}", f"is {actual!r}, not {value:#x}")


def test_ffi_string_reads_a_c_string() -> None:
    lib, ffi = _bindings()
    string = getattr(ffi, "string", None)
    assert callable(string), _broken("OpenSSL._util.ffi.string", "is gone")
    assert string(lib.X509_verify_cert_error_string(62)) == b"hostname mismatch", _broken(
        "OpenSSL._util.ffi.string(X509_verify_cert_error_string(62))", "no longer reads 'hostname mismatch'"
    )


def test_connection_and_context_expose_their_cffi_pointers() -> None:
    _, ffi = _bindings()
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    connection = SSL.Connection(context, None)
    for internal, owner, attr, ctype in (
        ("SSL.Context._context", context, "_context", "SSL_CTX *"),
        ("SSL.Connection._ssl", connection, "_ssl", "SSL *"),
    ):
        pointer = getattr(owner, attr, None)
        assert pointer is not None, _broken(internal, "is gone")
        try:
            cname = ffi.typeof(pointer).cname  # type: ignore[attr-defined]
        except TypeError:
            pytest.fail(_broken(internal, f"is not a cffi pointer: {pointer!r}"))
        assert cname == ctype, _broken(internal, f"is a {cname!r}, not {ctype!r}")


# -- real calls: handshakes on loopback with certificates made here ---------------------------------


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(authority: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("contract") / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def tls_server(authority: trustme.CA) -> Iterator[int]:
    """A TLS server (CPython's `ssl`) on 127.0.0.1 for localhost and 127.0.0.1; one handshake per
    connection, for up to a few connections; the port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(IO_TIMEOUT_S)
    stop = threading.Event()

    def serve() -> None:
        for _ in range(8):
            if stop.is_set():
                return
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.settimeout(IO_TIMEOUT_S)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"contract ok")
            except (OSError, ssl.SSLError):
                conn.close()  # the client refused our certificate: that is a case under test

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() waiting in the thread
        listener.close()
        thread.join(IO_TIMEOUT_S)


def _handshake(client: ClientTLS, server_name: str, port: int) -> TLSSession:
    """The engine's session, driven over a real loopback socket until its handshake completes."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as sock:
        session = client.session(server_name)
        for _ in range(MAX_HANDSHAKE_ROUNDS):
            done = session.step()
            output = session.take_output()
            if output:
                sock.sendall(output)
            if done:
                return session
            data = sock.recv(65536)
            if not data:
                raise EOFError("the server closed during the handshake")
            session.feed(data)
    raise AssertionError(f"no handshake after {MAX_HANDSHAKE_ROUNDS} rounds")


@pytest.mark.parametrize("server_name", ["localhost", "127.0.0.1"])
def test_verified_handshake_sets_the_name_to_check(ca_file: str, tls_server: int, server_name: str) -> None:
    """SSL_get0_param(Connection._ssl), X509_VERIFY_PARAM_set_hostflags and set1_host / set1_ip."""
    session = _handshake(ClientTLS(TLSClientConfig(ca_file=ca_file)), server_name, tls_server)
    assert session.version() == "TLSv1.3", _broken("the verified handshake", f"gave {session.version()}")


@pytest.mark.parametrize(
    ("server_name", "reason"), [("other.example", "hostname mismatch"), ("127.0.0.2", "IP address mismatch")]
)
def test_a_name_mismatch_is_reported_from_the_verify_result(
    ca_file: str, tls_server: int, server_name: str, reason: str
) -> None:
    """The name set through the bindings is checked; SSL_get_verify_result(Connection._ssl) and
    X509_verify_cert_error_string give the reason."""
    with pytest.raises(TLSError) as failure:
        _handshake(ClientTLS(TLSClientConfig(ca_file=ca_file)), server_name, tls_server)
    assert f"certificate verify failed: {reason}" in str(failure.value), _broken(
        "SSL_get_verify_result / X509_verify_cert_error_string", f"gave {failure.value}"
    )


def test_groups_are_set_on_the_context(ca_file: str, tls_server: int) -> None:
    """SSL_CTX_set1_curves_list(Context._context) accepts known groups, refuses unknown ones, and
    ERR_clear_error leaves no error behind for the next call."""
    lib, _ = _bindings()
    assert unknown_groups(["X25519", "P-256", "no-such-group"]) == ["no-such-group"]
    assert lib.ERR_peek_error() == 0, _broken("ERR_clear_error", "left an error in OpenSSL's queue")
    session = _handshake(
        ClientTLS(TLSClientConfig(ca_file=ca_file, groups=("P-256",))), "localhost", tls_server
    )
    assert session.version() == "TLSv1.3"
