"""Hosts, ports and URLs as a target gives them, checked when the config is built.

A host that no resolver could look up for reasons of syntax (an empty label, a space, a control
byte, a bracket left open) or a port outside 1-65535 is a config error with a message that names
it, not an exception from urlsplit, the `idna` codec or a socket at probe time. The rules follow
what the probes hand names to: getaddrinfo and the TLS stack encode them with Python's `idna` codec
(IDNA 2003), and a name for a DNS server of the target's own must also pass dnspython's IDNA 2008
rules. They stay lenient where real names bend the RFCs (underscores, a trailing dot).
"""

from __future__ import annotations

import ipaddress
import unicodedata
from collections.abc import Collection
from typing import Final
from urllib.parse import SplitResult, urlsplit

_MAX_NAME_LEN: Final = 253  # RFC 1035 2.3.4, in presentation form without the trailing dot
_ASCII_NAME_PUNCTUATION: Final = frozenset("-_.")


def check_host(host: str) -> str:
    """`host` unchanged if it is an IP address or a name that can be looked up.

    Raises:
        ValueError: naming what is wrong with it.
    """
    if not host:
        raise ValueError("the host is empty")
    if _is_ip_address(host):
        return host
    if ":" in host:
        raise ValueError(f"{host!r} is not a valid IPv6 address")
    for char in host:
        if char.isascii():
            allowed = char.isalnum() or char in _ASCII_NAME_PUNCTUATION
        else:  # letters of any script are fine (IDNA); separators, controls and unassigned are not
            allowed = unicodedata.category(char)[0] not in "CZ"
        if not allowed:
            raise ValueError(f"invalid character {char!r} in host name {host!r}")
    try:
        ascii_name = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        reason = exc.__cause__ or exc  # the codec wraps the label's own error
        raise ValueError(f"invalid host name {host!r}: {reason}") from None
    if not host.isascii():
        _check_idna_2008(host)
    bare = ascii_name.removesuffix(".")
    if len(bare) > _MAX_NAME_LEN:
        raise ValueError(f"host name {host[:40]!r}... is longer than {_MAX_NAME_LEN} characters")
    if bare.rpartition(".")[2].isdigit():  # WHATWG: a numeric last label makes it an IPv4 address
        raise ValueError(f"{host!r} is not a valid IPv4 address")
    return host


def check_port(port: int) -> int:
    """`port` if a connection can be made to it (1-65535); else ValueError."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    return port


def check_host_port(address: str) -> tuple[str, int]:
    """'host:port' or '[IPv6]:port' -> (host, port); ValueError naming what is wrong.

    Stricter than the probes' lenient splitter (which reads '::1' as a host without a port): this
    is the check a configured address passes once, so the splitter never sees a malformed one.
    """
    expected = f"expected host:port or [IPv6]:port, got {address!r}"
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(expected)
        if not _is_ip_address(host) or ":" not in host:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address")
        port_text = rest[1:]
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon:
            raise ValueError(expected)
        if ":" in host:
            raise ValueError(f"an IPv6 address needs brackets: [{host}]:{port_text}")
        check_host(host)
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"invalid port {port_text!r} in {address!r}")
    return host, check_port(int(port_text))


def check_server(server: str) -> str:
    """A DNS server as a target names it: 'host', 'host:53', '[::1]:53', '[::1]' or a bare '::1'.

    Raises:
        ValueError: naming what is wrong (the resolver's splitter would misread it, or fail late).
    """
    if _is_ip_address(server):
        return server
    if server.startswith("["):
        host, bracket, rest = server[1:].partition("]")
        if bracket and not rest:
            if not _is_ip_address(host) or ":" not in host:
                raise ValueError(f"{host!r} in brackets is not an IPv6 address")
            return server
        check_host_port(server)
    elif server.count(":") == 1:
        check_host_port(server)
    elif ":" in server:
        raise ValueError(f"{server!r} is not an IPv6 address (write [IPv6]:port)")
    else:
        check_host(server)
    return server


def parse_url(url: str, schemes: Collection[str], *, host_required: bool = True) -> SplitResult:
    """Split `url`, checking its scheme, host and port; ValueError naming the first problem.

    `host_required=False` allows an empty authority (`dns:///name`: the system resolver).

    Non-printable characters and whitespace are refused anywhere: urlsplit would silently drop some of
    them (tab, CR, LF), and the rest would reach a resolver or a request line.
    """
    for index, char in enumerate(url):
        if unicodedata.category(char)[0] == "C" or char.isspace():
            raise ValueError(
                f"the URL has {_describe_char(char)} at position {index}; percent-encode it (e.g. %20)"
            )
    try:
        parts = urlsplit(url)
        port = parts.port  # urlsplit checks the port only when it is read
    except ValueError as exc:
        reason = str(exc)
        if reason == "Invalid IPv6 URL":  # urlsplit's words for brackets that do not pair up
            reason = "the brackets around the host do not pair up"
        raise ValueError(f"invalid URL: {_lowercase_first(reason)}") from None
    if parts.scheme.lower() not in schemes:
        expected = ", ".join(f"{scheme}://" for scheme in sorted(schemes))
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}: expected {expected}")
    host = parts.hostname or ""
    if "%" in host:
        raise ValueError(f"percent-encoding is not allowed in the host ({host!r})")
    if host or host_required or parts.netloc:  # "dns://:53/name" names no server
        check_host(host)
    if port is not None:  # None also for "host:" (an empty port is the default, RFC 3986 3.2.3)
        check_port(port)
    return parts


def _check_idna_2008(host: str) -> None:
    """A name our own resolver can encode: dnspython applies IDNA 2008 (stricter than 2003)."""
    import dns.exception
    import dns.name

    try:
        dns.name.from_text(host)
    except dns.exception.DNSException as exc:
        raise ValueError(f"invalid host name {host!r}: {exc}") from None


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _describe_char(char: str) -> str:
    what = "whitespace" if char.isspace() else "a non-printable character"
    name = unicodedata.name(char, "")
    return f"{what} (U+{ord(char):04X}{' ' + name if name else ''})"


def _lowercase_first(text: str) -> str:
    return text[:1].lower() + text[1:]
