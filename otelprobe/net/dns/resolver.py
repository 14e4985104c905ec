"""Name resolution for probes: the Resolver seam, the system resolver and a per-target DNS server.

Every probe kind resolves through a `Resolver`, timed as the `dns.lookup` phase by
`probes.base.timed_resolve`. Resolvers raise `DNSError` with a precise detail. A resolver that
sees its own packets (`DNSServerResolver`, on `net/dns/channel.py`) also implements
`StampedResolver`, whose `Resolution` carries when the first query left and when the answer that
ended the lookup arrived (kernel receive stamps), so the phase is as exact as `tcp.connect`, and
how it went: UDP retransmits (net/dns/retransmit.py) and a family the A/AAAA race went on
without (net/dns/_race.py). getaddrinfo runs in a thread on sockets we never see, with the
system's own retry policy, so `SystemResolver`'s phase stays user-space marks.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from dataclasses import dataclass, replace
from typing import Final, Protocol, TypeGuard, runtime_checkable

import dns.message
import dns.rcode
import dns.rdatatype

from otelprobe.errors import DNSError, ProbeError, ProtocolError
from otelprobe.net.dns._race import Query, QueryAnswer, race
from otelprobe.net.dns.channel import DEFAULT_PORTS, DNSChannel
from otelprobe.net.dns.retransmit import ONE_TRY, RetransmitPolicy, UDPTries
from otelprobe.net.tls.openssl import ClientTLS
from otelprobe.settings.common import IPFamily, ResolverConfig, TLSClientConfig
from otelprobe.timing import PhaseClock

_QUERY_TYPES: Final[dict[str, tuple[str, ...]]] = {
    "ip4": ("A",),
    "ip6": ("AAAA",),
    "prefer_ip6": ("AAAA", "A"),
}
_RACED_FAMILIES: Final = frozenset({"any", "prefer_ip6"})
"""Families whose lookup goes on with one family's addresses; `all` wants every address."""


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
            answer arrived (timeout, unreachable) or it is unknown. When a raced family was
            given up as late, the end of its resolution delay.
        tries: each UDP query's tries (empty for other transports and unstamped resolvers).
        answered_attempt: the try whose answer ended the resolution, over UDP.
        missing_family: `ip4` / `ip6` when the resolution went on without that family's
            addresses (`ip: any` / `prefer_ip6`); `missing_reason` says why: `late` or the
            error detail of its query.
    """

    addresses: tuple[str, ...]
    error: DNSError | None = None
    sent_ns: int | None = None
    answered_ns: int | None = None
    tries: tuple[UDPTries, ...] = ()
    answered_attempt: int | None = None
    missing_family: IPFamily | None = None
    missing_reason: str | None = None


class LookupProgress:
    """What a stamped lookup has done so far: filled in however it ends, also when the caller's
    deadline cancels it (there is no Resolution then, but the span should still show the tries)."""

    __slots__ = ("sent_ns", "tries")

    def __init__(self) -> None:
        self.sent_ns: int | None = None
        self.tries: tuple[UDPTries, ...] = ()


@runtime_checkable
class StampedResolver(Protocol):
    """A Resolver that knows when its queries left and its answers arrived."""

    async def resolve_stamped(
        self, host: str, family: IPFamily, progress: LookupProgress | None = None
    ) -> Resolution:
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


@functools.lru_cache(maxsize=4096)
def is_ip_literal(host: str) -> bool:
    """Whether `host` is an IP address (IPv6 with or without brackets); remembered per host, as
    every attempt of every probe kind asks (ipaddress parses in Python, a few µs each)."""
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
    """Queries one DNS server directly over UDP (TCP fallback on TC), TCP, DoT or DoH.

    A and AAAA go out together, each on its own socket, as getaddrinfo does with AF_UNSPEC
    (LAB-NOTES 9): the lookup costs one round trip, not two. Over UDP each query is retransmitted
    as a stub resolver does (`RetransmitPolicy`: `attempts` tries of `try_timeout` each, same ID
    and question). With `ip: any` / `prefer_ip6` the two families race as RFC 8305 §3 says: once
    one family's addresses are in, the other gets `RESOLUTION_DELAY_S` more, then the lookup goes
    on without it (`Resolution.missing_family`). DoT / DoH verify the server's certificate
    against the system trust store (SSL_CERT_FILE applies) and its name or IP.
    """

    def __init__(self, config: ResolverConfig) -> None:
        if not config.server:
            raise ValueError("DNSServerResolver needs a server")
        self._host, self._port = split_host_port(config.server, default_port=DEFAULT_PORTS[config.transport])
        self._host = self._host.strip("[]")
        self._transport = config.transport
        self._timeout_s = config.timeout_s
        self._retransmit = (
            RetransmitPolicy.of(config.attempts, config.try_timeout_s, config.timeout_s)
            if config.transport == "udp"
            else ONE_TRY
        )
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

    async def resolve_stamped(
        self, host: str, family: IPFamily, progress: LookupProgress | None = None
    ) -> Resolution:
        try:
            ip = await self._server_ip()
        except DNSError as exc:
            return Resolution((), exc)
        deadline_ns = PhaseClock.now_ns() + int(self._timeout_s * 1e9)
        queries = [Query(rdtype) for rdtype in _QUERY_TYPES.get(family, ("A", "AAAA"))]
        tasks = [asyncio.create_task(self._ask(query, ip, host, deadline_ns)) for query in queries]
        gave_up_ns: int | None = None
        try:
            if family in _RACED_FAMILIES:
                gave_up_ns = await race(queries, tasks, deadline_ns)
            else:
                await asyncio.wait(tasks)
        finally:
            # A query given up (or the caller's deadline) is cancelled; its channel closes itself.
            pending = [task for task in tasks if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            if progress is not None:
                sent = [q.sent_ns for q in queries if q.sent_ns is not None]
                progress.sent_ns = min(sent) if sent else None
                progress.tries = tuple(t for q in queries if (t := q.tries) is not None)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]  # a bug in _ask: to be seen
        return _resolution(host, family, queries, gave_up_ns)

    async def _server_ip(self) -> str:
        if is_ip_literal(self._host):
            return self._host
        # A server given by name is looked up each time, outside the phase (it is not the target's).
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(self._host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise DNSError("resolver_unreachable", f"DNS server {self._host}: {exc.strerror}") from exc
        return str(infos[0][4][0]).split("%")[0]

    async def _ask(self, query: Query, ip: str, name: str, deadline_ns: int) -> None:
        """Ask one question; its outcome lands in `query.answer` (never raises for DNS failures)."""
        message = dns.message.make_query(name, dns.rdatatype.from_text(query.rdtype))
        try:
            async with asyncio.timeout((deadline_ns - PhaseClock.now_ns()) / 1e9):
                query.channel = await DNSChannel.open(
                    query.scratch,
                    self._transport,
                    ip,
                    self._port,
                    tls_context=self._tls_context,
                    server_hostname=self._host if self._tls_context is not None else None,
                )
                response = await query.channel.exchange(message, retransmit=self._retransmit)
        except TimeoutError:
            invalid = query.channel.invalid_answers if query.channel is not None else None
            if invalid is not None:  # the server did answer, with datagrams that were no answer
                query.answer = QueryAnswer((), DNSError("invalid_answer", invalid.message), None)
            else:
                query.answer = QueryAnswer(
                    (), DNSError("resolver_timeout", f"no answer from {self.server}"), None
                )
            return
        except DNSError as exc:  # no answer to any try, port unreachable, TC fallback failed, DoH status
            query.answer = QueryAnswer((), exc, None)
            return
        except ProtocolError as exc:  # a malformed answer, or one to another question
            query.answer = QueryAnswer((), DNSError("invalid_answer", f"{self.server}: {exc.message}"), None)
            return
        except (ProbeError, OSError) as exc:  # refused, TLS failure
            detail = getattr(exc, "detail", None) or str(exc)
            query.answer = QueryAnswer((), DNSError("resolver_unreachable", f"{self.server}: {detail}"), None)
            return
        finally:
            if query.channel is not None:
                query.channel.close()
        answered_ns = query.channel.answered_ns or None
        try:
            query.answer = QueryAnswer(tuple(_addresses(response, name)), None, answered_ns)
        except DNSError as exc:  # an rcode other than NOERROR: an answer, but no addresses
            query.answer = QueryAnswer((), exc, answered_ns)


def _resolution(host: str, family: IPFamily, queries: list[Query], gave_up_ns: int | None) -> Resolution:
    """The outcome of a resolution's queries (in the family's preference order)."""
    sent = [q.sent_ns for q in queries if q.sent_ns is not None]
    tries = tuple(t for q in queries if (t := q.tries) is not None)
    answered = [(q, q.answer) for q in queries if q.answer is not None]
    # The lookup ends at the arrival of the last answer it waited for (or when it gave up).
    arrivals = [(a.answered_ns, q) for q, a in answered if a.answered_ns is not None]
    last_ns, last = max(arrivals, key=lambda arrival: arrival[0], default=(None, None))
    attempt = last.tries.answered if last is not None and last.tries is not None else None
    base = Resolution((), None, min(sent) if sent else None, None, tries, attempt)
    positive = [a for _, a in answered if a.addresses]
    if family in _RACED_FAMILIES and positive and len(positive) < len(queries):
        missing = next(q for q in queries if q.answer is None or not q.answer.addresses)
        error = missing.answer.error if missing.answer is not None else None
        if missing.answer is None or error is not None:
            # One family's addresses are enough to go on (RFC 8305): the other is noted, not fatal.
            return replace(
                base,
                addresses=tuple(order_for_family([x for a in positive for x in a.addresses], family)),
                answered_ns=last_ns if error is not None else gave_up_ns,
                missing_family=missing.family,
                missing_reason=error.detail if error is not None else "late",
            )
    # Only when every query was answered does the lookup end at an arrival (else: when it failed).
    answered_ns = last_ns if len(arrivals) == len(queries) else None
    addresses: list[str] = []
    try:
        for _, answer in answered:
            if answer.error is not None:
                raise answer.error
            addresses.extend(answer.addresses)
        ordered = order_for_family(addresses, family)
    except DNSError as exc:
        return replace(base, error=exc, answered_ns=answered_ns)
    return replace(base, addresses=tuple(ordered), answered_ns=answered_ns)


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
