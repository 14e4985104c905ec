"""Name resolution for probes: the Resolver seam, the system resolver and a per-target DNS server.

Every probe kind resolves through a `Resolver`, timed as the `dns.lookup` phase by
`probes.base.timed_resolve`. Resolvers raise `DNSError` with a precise detail.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Protocol

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.message
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver

from otelprobe.config.common import IPFamily, ResolverConfig
from otelprobe.errors import DNSError


class Resolver(Protocol):
    """Resolves a host name to IP address literals, in the order they should be tried."""

    async def resolve(self, host: str, family: IPFamily) -> list[str]:
        """Raises DNSError (nxdomain, servfail, resolver_timeout, no_address_for_family, ...)."""
        ...


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


class DNSServerResolver:
    """Queries one DNS server directly (dnspython), over UDP with TCP fallback, TCP, DoT or DoH."""

    def __init__(self, config: ResolverConfig) -> None:
        if not config.server:
            raise ValueError("DNSServerResolver needs a server")
        self._host, self._port = split_host_port(config.server, default_port=_default_port(config.transport))
        self._transport = config.transport
        self._timeout_s = config.timeout_s

    async def query(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        """One query to the configured server, raising DNSError on failure."""
        request = dns.message.make_query(name, rdtype)
        try:
            if self._transport == "tcp":
                return await dns.asyncquery.tcp(request, self._host, self._timeout_s, self._port)
            if self._transport == "tls":
                return await dns.asyncquery.tls(request, self._host, self._timeout_s, self._port)
            if self._transport == "https":
                url = f"https://{_bracket(self._host)}:{self._port}/dns-query"
                return await dns.asyncquery.https(request, url, timeout=self._timeout_s)
            response, _ = await dns.asyncquery.udp_with_fallback(
                request, self._host, self._timeout_s, self._port
            )
            return response
        except dns.exception.Timeout as exc:
            raise DNSError("resolver_timeout", f"no answer from {self._host}:{self._port}") from exc
        except (OSError, dns.exception.DNSException) as exc:
            raise DNSError("resolver_unreachable", f"{self._host}:{self._port}: {exc}") from exc

    async def resolve(self, host: str, family: IPFamily) -> list[str]:
        wanted = {"ip4": ["A"], "ip6": ["AAAA"], "prefer_ip6": ["AAAA", "A"]}.get(family, ["A", "AAAA"])
        # A and AAAA go out together, as getaddrinfo does with AF_UNSPEC (LAB-NOTES 9): the lookup
        # costs one round trip, not two.
        responses = await asyncio.gather(*(self.query(host, dns.rdatatype.from_text(t)) for t in wanted))
        addresses: list[str] = []
        for response in responses:
            rcode = response.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                raise DNSError("nxdomain", f"{host}: NXDOMAIN")
            if rcode != dns.rcode.NOERROR:
                raise DNSError(dns.rcode.to_text(rcode).lower(), f"{host}: {dns.rcode.to_text(rcode)}")
            for rrset in response.answer:
                if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    addresses.extend(r.to_text() for r in rrset)
        return order_for_family(addresses, family)


def _default_port(transport: str) -> int:
    return {"tls": 853, "https": 443}.get(transport, 53)


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
