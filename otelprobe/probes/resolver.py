"""Name resolution for probes: the Resolver seam, the system resolver and a per-target DNS server.

Every probe kind resolves through a `Resolver`, timed as the `dns.lookup` phase by
`probes.base.timed_resolve`. Resolvers raise `DNSError` with a precise detail. A resolver that
sees its own packets (`DNSServerResolver`, on `probes/_dns_channel.py`) also implements
`StampedResolver`, whose `Resolution` carries when the first query left and when the last answer
arrived (kernel receive stamps), so the phase is as exact as `tcp.connect`. getaddrinfo runs in a
thread on sockets we never see, so `SystemResolver`'s phase stays user-space marks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Protocol, TypeGuard, runtime_checkable

import dns.message
import dns.rcode
import dns.rdatatype

from otelprobe.config.common import IPFamily, ResolverConfig, TLSClientConfig
from otelprobe.errors import DNSError, ProbeError
from otelprobe.probes._dns_channel import DEFAULT_PORTS, DNSChannel
from otelprobe.probes._openssl import ClientTLS
from otelprobe.timing import PhaseClock


class Resolver(Protocol):
    """Resolves a host name to IP address literals, in the order they should be tried."""

    async def resolve(self, host: str, family: IPFamily) -> list[str]:
        """Raises DNSError (nxdomain, servfail, resolver_timeout, no_address_for_family, ...)."""
        ...


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome of one resolution, with the wire edges of the lookup when they are known.

    Attributes:
        addresses: IP literals in the order to try them (empty when `error` is set).
        error: why the name did not resolve, or None.
        sent_ns: when the first query started out: its send() for UDP, the connect() for
            TCP / DoT / DoH (connecting is part of the lookup there); None when unknown.
        answered_ns: kernel arrival of the last answer the resolution needed; None when no
            answer arrived (timeout, unreachable) or it is unknown.
    """

    addresses: tuple[str, ...]
    error: DNSError | None = None
    sent_ns: int | None = None
    answered_ns: int | None = None


@runtime_checkable
class StampedResolver(Protocol):
    """A Resolver that knows when its queries left and its answers arrived."""

    async def resolve_stamped(self, host: str, family: IPFamily) -> Resolution:
        """Never raises for resolution failures: they land in Resolution.error."""
        ...


_STAMPED_CLASSES: dict[type, bool] = {}


def is_stamped(resolver: Resolver) -> TypeGuard[StampedResolver]:
    """Whether `resolver` is a StampedResolver; checked once per class (a protocol check costs ~10 µs)."""
    cls = type(resolver)
    known = _STAMPED_CLASSES.get(cls)
    if known is None:
        known = _STAMPED_CLASSES[cls] = isinstance(resolver, StampedResolver)
    return known


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def order_for_family(addresses: list[str], family: IPFamily) -> list[str]:
    """Filter and order addresses for an IP family; raise when none of the wanted family exist."""
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
    if family == "ip4":
        chosen = v4
    elif family == "ip6":
        chosen = v6
    elif family == "prefer_ip6":
        chosen = v6 + v4
    else:
        chosen = list(addresses)
    if not chosen:
        raise DNSError("no_address_for_family", f"no {family} address (resolved: {addresses or 'none'})")
    return chosen


class SystemResolver:
    """getaddrinfo through the event loop's thread pool (it never blocks the loop)."""

    async def resolve(self, host: str, family: IPFamily) -> list[str]:
        af = {"ip4": socket.AF_INET, "ip6": socket.AF_INET6}.get(family, socket.AF_UNSPEC)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, family=af, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise DNSError(_gai_detail(exc), f"{host}: {exc.strerror}") from exc
        seen: dict[str, None] = {}
        for info in infos:
            seen.setdefault(str(info[4][0]).split("%")[0], None)
        return order_for_family(list(seen), family)


def _gai_detail(exc: socket.gaierror) -> str:
    code = exc.errno
    if code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
        return "nxdomain"
    if code == socket.EAI_AGAIN:
        return "resolver_timeout"
    if code == socket.EAI_FAIL:
        return "servfail"
    if code == socket.EAI_FAMILY or code == getattr(socket, "EAI_ADDRFAMILY", -9):
        return "no_address_for_family"
    return "resolution_failed"


@dataclass(frozen=True, slots=True)
class _Answer:
    """One query's outcome: the response or the error, and its wire edges."""

    response: dns.message.Message | None
    error: DNSError | None
    sent_ns: int | None
    answered_ns: int | None


class DNSServerResolver:
    """Queries one DNS server directly over UDP (TCP fallback on TC), TCP, DoT or DoH.

    A and AAAA go out together, each on its own socket, as getaddrinfo does with AF_UNSPEC
    (LAB-NOTES 9): the lookup costs one round trip, not two. DoT / DoH verify the server's
    certificate against the system trust store (SSL_CERT_FILE applies) and its name or IP.
    """

    def __init__(self, config: ResolverConfig) -> None:
        if not config.server:
            raise ValueError("DNSServerResolver needs a server")
        self._host, self._port = split_host_port(config.server, default_port=DEFAULT_PORTS[config.transport])
        self._host = self._host.strip("[]")
        self._transport = config.transport
        self._timeout_s = config.timeout_s
        self._tls_context: ClientTLS | None = None
        if config.transport in ("tls", "https"):
            alpn = ("http/1.1",) if config.transport == "https" else ("dot",)
            self._tls_context = ClientTLS.shared(TLSClientConfig(), alpn)

    @property
    def server(self) -> str:
        return f"{_bracket(self._host)}:{self._port}"

    async def resolve(self, host: str, family: IPFamily) -> list[str]:
        resolution = await self.resolve_stamped(host, family)
        if resolution.error is not None:
            raise resolution.error
        return list(resolution.addresses)

    async def resolve_stamped(self, host: str, family: IPFamily) -> Resolution:
        wanted = {"ip4": ["A"], "ip6": ["AAAA"], "prefer_ip6": ["AAAA", "A"]}.get(family, ["A", "AAAA"])
        try:
            ip = await self._server_ip()
        except DNSError as exc:
            return Resolution((), exc)
        answers = await asyncio.gather(*(self._ask(ip, host, dns.rdatatype.from_text(t)) for t in wanted))
        sent = [a.sent_ns for a in answers if a.sent_ns is not None]
        arrived = [a.answered_ns for a in answers if a.answered_ns is not None]
        sent_ns = min(sent) if sent else None
        # The lookup ends when the last answer arrived, unless one never came (then: now).
        answered_ns = max(arrived) if len(arrived) == len(answers) else None
        addresses: list[str] = []
        try:
            for answer in answers:
                if answer.error is not None:
                    raise answer.error
                assert answer.response is not None
                addresses.extend(_addresses(answer.response, host))
            ordered = order_for_family(addresses, family)
        except DNSError as exc:
            return Resolution((), exc, sent_ns, answered_ns)
        return Resolution(tuple(ordered), None, sent_ns, answered_ns)

    async def _server_ip(self) -> str:
        if is_ip_literal(self._host):
            return self._host
        # A server given by name is looked up each time, outside the phase (it is not the target's).
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(self._host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise DNSError("resolver_unreachable", f"DNS server {self._host}: {exc.strerror}") from exc
        return str(infos[0][4][0]).split("%")[0]

    async def _ask(self, ip: str, name: str, rdtype: dns.rdatatype.RdataType) -> _Answer:
        query = dns.message.make_query(name, rdtype)
        # Connect and handshake phases of a stream transport belong to this lookup, not the
        # attempt: they are recorded on a scratch clock, whose first phase starts the lookup.
        scratch = PhaseClock()
        channel: DNSChannel | None = None

        def sent_ns() -> int | None:
            if scratch.phases:
                return scratch.phases[0].start_ns
            return channel.sent_ns if channel is not None and channel.sent_ns else None

        try:
            async with asyncio.timeout(self._timeout_s):
                channel = await DNSChannel.open(
                    scratch,
                    self._transport,
                    ip,
                    self._port,
                    tls_context=self._tls_context,
                    server_hostname=self._host if self._tls_context is not None else None,
                )
                response = await channel.exchange(query)
        except TimeoutError:
            return _Answer(
                None, DNSError("resolver_timeout", f"no answer from {self.server}"), sent_ns(), None
            )
        except DNSError as exc:  # port unreachable, TC fallback failed, DoH HTTP status
            return _Answer(None, exc, sent_ns(), None)
        except (ProbeError, OSError) as exc:  # refused, TLS failure, malformed answer
            detail = getattr(exc, "detail", None) or str(exc)
            error = DNSError("resolver_unreachable", f"{self.server}: {detail}")
            return _Answer(None, error, sent_ns(), None)
        finally:
            if channel is not None:
                channel.close()
        return _Answer(response, None, sent_ns(), channel.answered_ns or None)


def _addresses(response: dns.message.Message, host: str) -> list[str]:
    """The A / AAAA addresses of a NOERROR answer; DNSError for any other rcode."""
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        raise DNSError("nxdomain", f"{host}: NXDOMAIN")
    if rcode != dns.rcode.NOERROR:
        raise DNSError(dns.rcode.to_text(rcode).lower(), f"{host}: {dns.rcode.to_text(rcode)}")
    return [
        rdata.to_text()
        for rrset in response.answer
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
        for rdata in rrset
    ]


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def split_host_port(value: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:53', '[::1]:53' or '::1' -> (host, port)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, default_port


def resolver_from_config(config: ResolverConfig | None, default: Resolver) -> Resolver:
    """The resolver a target asked for, or the process default."""
    if config is None or config.server is None:
        return default
    return DNSServerResolver(config)
