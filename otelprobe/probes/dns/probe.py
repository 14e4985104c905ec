"""The dns probe kind: one query of any type to a chosen server (or the system's), checked.

The query is the `dns.lookup` phase (DESIGN §3); over TCP, DoT and DoH the connection and
handshake before it are `tcp.connect` and `tls.handshake`. Wire work lives in net/dns/channel.py,
local DNSSEC validation in _dnssec.py, assertions in _checks.py.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any, ClassVar, Literal

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
from pydantic import Field, field_validator

from otelprobe import names
from otelprobe.errors import ConfigError, ConfigProblem, DNSError
from otelprobe.net.dns.channel import DEFAULT_PORTS, DNSChannel, DNSTransport
from otelprobe.net.dns.resolver import is_ip_literal, split_host_port
from otelprobe.net.dns.retransmit import RetransmitPolicy, record_tries
from otelprobe.net.tls.openssl import DeferredClientTLS
from otelprobe.probes.base import Attributes, ProbeContext, run_attempt, timed_resolve
from otelprobe.probes.dns import _checks as _dns_checks
from otelprobe.probes.dns._dnssec import validate_answer
from otelprobe.results import ProbeResult
from otelprobe.settings.addresses import check_server
from otelprobe.settings.common import (
    MAX_DNS_ATTEMPTS,
    ProbeConfigBase,
    StrictModel,
    TLSClientConfig,
    check_regex,
    check_try_timeout,
    settings_not_switch,
)
from otelprobe.settings.durations import Duration
from otelprobe.settings.secrets import redact_url
from otelprobe.timing import OpenPhase, PhaseClock

RESOLV_CONF = "/etc/resolv.conf"
_DEADLINE_MARGIN_S = 0.005


class EDNSConfig(StrictModel):
    """EDNS0 on the query: advertised UDP payload, client subnet (RFC 7871), DNSSEC OK bit."""

    payload: int = Field(1232, ge=512, le=65535)
    client_subnet: str | None = Field(None, description='e.g. "192.0.2.0/24"')
    dnssec_ok: bool = False

    @field_validator("client_subnet")
    @classmethod
    def _subnet(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                dns.edns.ECSOption.from_text(value)
            except (ValueError, dns.exception.DNSException) as exc:
                raise ValueError(f"invalid client subnet {value!r}") from exc
        return value


class DNSExpect(StrictModel):
    """What a good answer looks like; regexes match whole RR lines ("www. 60 IN A 192.0.2.1")."""

    rcodes: list[str] = Field(default_factory=lambda: ["NOERROR"])
    min_answers: int = Field(0, ge=0)
    answer_regex: list[str] = Field(default_factory=list, description="each must match some answer RR")
    answer_not_regex: list[str] = Field(default_factory=list, description="none may match any answer RR")
    authority_regex: list[str] = Field(default_factory=list)
    additional_regex: list[str] = Field(default_factory=list)
    authoritative: bool | None = None
    authenticated_data: bool = Field(False, description="require AD from a validating resolver")

    @field_validator("rcodes")
    @classmethod
    def _rcodes(cls, value: list[str]) -> list[str]:
        try:
            return [dns.rcode.to_text(dns.rcode.from_text(v.upper())) for v in value]
        except dns.exception.DNSException as exc:
            raise ValueError(f"unknown rcode in {value!r}") from exc

    @field_validator("answer_regex", "answer_not_regex", "authority_regex", "additional_regex")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            check_regex(pattern)
        return value


class DNSSECConfig(StrictModel):
    """Local validation of the answer's RRSIG against the signer's DNSKEYs (see _dnssec.py)."""

    validate_answer: bool = Field(False, alias="validate")
    trust_anchors: list[str] = Field(default_factory=list, description='"DS ..." or "DNSKEY ..." rdata')


class DNSProbeConfig(ProbeConfigBase):
    """A DNS query target: `query_name`/`query_type` asked of `server` over `transport`."""

    kind: Literal["dns"] = "dns"
    server: str | None = Field(None, description="host[:port]; none = first nameserver of resolv.conf")
    transport: DNSTransport = "udp"
    query_name: str = Field(min_length=1)
    query_type: str = "A"
    query_class: str = "IN"
    recursion_desired: bool = True
    edns: EDNSConfig | None = EDNSConfig()
    tcp_fallback: bool = Field(True, description="retry over TCP when a UDP answer is truncated")
    attempts: int = Field(
        2, ge=1, le=MAX_DNS_ATTEMPTS, description="UDP tries of the query (1 = no retransmit: see every loss)"
    )
    try_timeout_s: Duration | None = Field(
        None,
        alias="try_timeout",
        gt=0,
        description="wait for an answer before retransmitting; default timeout/attempts",
    )
    tls: TLSClientConfig = TLSClientConfig()
    doh_path: str = "/dns-query"
    expect: DNSExpect = DNSExpect()
    dnssec: DNSSECConfig = DNSSECConfig()

    _try_timeout = field_validator("try_timeout_s")(check_try_timeout)

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_settings(cls, value: object) -> object:
        return settings_not_switch(value, "`transport` (tls, https) decides whether this target speaks TLS")

    @field_validator("server")
    @classmethod
    def _server(cls, server: str | None) -> str | None:
        return None if server is None else check_server(server)

    @field_validator("query_name")
    @classmethod
    def _query_name(cls, name: str) -> str:
        try:
            dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise ValueError(f"invalid DNS name {name[:80]!r}: {exc}") from None
        return name

    @field_validator("query_type")
    @classmethod
    def _type(cls, value: str) -> str:
        try:
            return dns.rdatatype.to_text(dns.rdatatype.from_text(value.upper()))
        except dns.exception.DNSException as exc:
            raise ValueError(f"unknown record type {value!r}") from exc

    @field_validator("query_class")
    @classmethod
    def _class(cls, value: str) -> str:
        try:
            return dns.rdataclass.to_text(dns.rdataclass.from_text(value.upper()))
        except dns.exception.DNSException as exc:
            raise ValueError(f"unknown record class {value!r}") from exc

    def display_address(self) -> str:
        return (
            f"dns://{self.server or ''}/{self.query_name}?type={self.query_type}&transport={self.transport}"
        )

    @classmethod
    def from_url(cls, url: str, name: str | None = None, **overrides: Any) -> DNSProbeConfig:
        """`dns://[server[:port]]/name?type=AAAA&class=IN&transport=tcp|tls|https` (RFC 4501 style)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "dns" or not parts.path.strip("/"):
            raise ConfigError(
                [ConfigProblem("<url>", None, "", f"not a dns:// URL with a name: {redact_url(url)!r}")]
            )
        query = dict(urllib.parse.parse_qsl(parts.query))
        fields: dict[str, Any] = {
            "name": name or redact_url(url),
            "query_name": urllib.parse.unquote(parts.path.strip("/")),
        }
        if parts.netloc:
            fields["server"] = parts.netloc
        for key, field in (("type", "query_type"), ("class", "query_class"), ("transport", "transport")):
            if key in query:
                fields[field] = query[key]
        return cls.model_validate({**fields, **overrides})


def system_nameserver(resolv_conf: str = RESOLV_CONF) -> str:
    """The first nameserver of resolv.conf: the 'system resolver' a query can be addressed to."""
    try:
        resolver = dns.resolver.Resolver(filename=resolv_conf, configure=True)
    except (OSError, dns.resolver.NoResolverConfiguration) as exc:
        raise ValueError(f"no nameserver in {resolv_conf}: {exc}") from exc
    return str(resolver.nameservers[0])


class DNSProbe:
    """Asks one question and checks the answer; one result per attempt."""

    kind: ClassVar[str] = "dns"

    def __init__(self, config: DNSProbeConfig, ctx: ProbeContext) -> None:
        self.config = config
        self._ctx = ctx
        self._resolver = ctx.resolver_for(config)
        self._tls_context = (
            DeferredClientTLS(config.tls, ("http/1.1",) if config.transport == "https" else ("dot",))
            if config.transport in ("tls", "https")
            else None
        )
        self._retransmit = RetransmitPolicy.of(config.attempts, config.try_timeout_s, config.timeout_s)

    async def run(self, attempt: int = 1) -> list[ProbeResult]:
        return [await run_attempt(self.kind, self.config.name, attempt, self.config.timeout_s, self._attempt)]

    async def aclose(self) -> None:
        return None

    def build_query(self) -> dns.message.Message:
        cfg = self.config
        query = dns.message.make_query(
            cfg.query_name, cfg.query_type, cfg.query_class, use_edns=False, flags=0
        )
        if cfg.recursion_desired:
            query.flags |= dns.flags.RD
        if cfg.edns is not None:
            options = [dns.edns.ECSOption.from_text(cfg.edns.client_subnet)] if cfg.edns.client_subnet else []
            ednsflags = dns.flags.DO if cfg.edns.dnssec_ok or cfg.dnssec.validate_answer else 0
            query.use_edns(0, ednsflags, cfg.edns.payload, options=options)
        if cfg.expect.authenticated_data:
            query.flags |= dns.flags.AD  # RFC 6840 §5.7: ask for AD without needing DO
        return query

    async def _attempt(self, clock: PhaseClock, attrs: Attributes) -> None:
        cfg = self.config
        # Just before the attempt's deadline: an exchange that got only invalid datagrams by then
        # fails as what it got (invalid_dns_answer), not as a server that never answered.
        deadline = asyncio.get_running_loop().time() + cfg.timeout_s - _DEADLINE_MARGIN_S
        server = cfg.server or system_nameserver()
        host, port = split_host_port(server, DEFAULT_PORTS[cfg.transport])
        attrs[names.SERVER_ADDRESS] = host
        attrs[names.SERVER_PORT] = port
        attrs[names.PROBE_DNS_TRANSPORT] = cfg.transport
        attrs[names.DNS_QUESTION_NAME] = cfg.query_name
        attrs[names.PROBE_DNS_QUERY_TYPE] = cfg.query_type
        ip = host
        if not is_ip_literal(host):
            # The server's own name is resolved first (a bootstrap lookup, flagged as such).
            bootstrap = clock.mark()
            ip = (await timed_resolve(clock, self._resolver, host, cfg.ip, {}))[0]
            clock.annotate(bootstrap, {names.PROBE_DNS_BOOTSTRAP: True})
        attrs[names.NETWORK_PEER_ADDRESS] = ip.strip("[]")
        server_name = cfg.tls.server_name or host
        channel = await DNSChannel.open(
            clock,
            cfg.transport,
            ip.strip("[]"),
            port,
            tls_context=self._tls_context.get() if self._tls_context is not None else None,
            server_hostname=None if is_ip_literal(server_name) and not cfg.tls.server_name else server_name,
            doh_path=cfg.doh_path,
        )
        try:
            query = self.build_query()
            rcode_error: DNSError | None = None
            with clock.phase(names.SPAN_DNS_LOOKUP) as phase:
                phase.attributes[names.DNS_QUESTION_NAME] = cfg.query_name
                phase.attributes[names.PROBE_DNS_QUERY_TYPE] = cfg.query_type
                response = await _exchange(
                    phase, channel, query, cfg.tcp_fallback, self._retransmit, deadline
                )
                phase.attributes.update(_dns_checks.answer_attributes(response))
                if channel.fell_back_to_tcp:
                    phase.attributes[names.PROBE_DNS_TCP_FALLBACK] = True
                attrs.update(phase.attributes)
                attrs.update(_dns_checks.response_attributes(response))
                # A failing rcode fails the lookup phase itself, like a resolver error would.
                try:
                    _dns_checks.check_rcode(response, cfg.expect.rcodes, cfg.query_name)
                except DNSError as exc:
                    rcode_error = exc
                _end_at_wire(phase, channel, rcode_error)
            if rcode_error is not None:
                raise rcode_error
            if cfg.dnssec.validate_answer:
                await self._validate(clock, channel, response, attrs, deadline)
            _dns_checks.check_expectations(response, cfg.expect)
        finally:
            channel.close()

    async def _validate(
        self,
        clock: PhaseClock,
        channel: DNSChannel,
        response: dns.message.Message,
        attrs: Attributes,
        deadline: float,
    ) -> None:
        rdtype = dns.rdatatype.from_text(self.config.query_type)
        signer = _dns_checks.signer_or_fail(response, rdtype, attrs)
        key_query = dns.message.make_query(signer, dns.rdatatype.DNSKEY, want_dnssec=True)
        with clock.phase(names.SPAN_DNS_LOOKUP) as phase:
            phase.attributes[names.DNS_QUESTION_NAME] = signer.to_text()
            phase.attributes[names.PROBE_DNS_QUERY_TYPE] = "DNSKEY"
            keys = await _exchange(phase, channel, key_query, True, self._retransmit, deadline)
            _end_at_wire(phase, channel, None)
        try:
            result = validate_answer(response, rdtype, keys, self.config.dnssec.trust_anchors)
        except Exception:
            attrs[names.PROBE_DNS_DNSSEC_VALIDATED] = False
            raise
        attrs[names.PROBE_DNS_DNSSEC_VALIDATED] = True
        attrs[names.PROBE_DNS_DNSSEC_ANCHORED] = result.anchored


async def _exchange(
    phase: OpenPhase,
    channel: DNSChannel,
    query: dns.message.Message,
    tcp_fallback: bool,
    retransmit: RetransmitPolicy,
    deadline: float,
) -> dns.message.Message:
    """One exchange inside a lookup phase; its UDP tries land on the phase however it ends."""
    try:
        async with asyncio.timeout_at(deadline):
            return await channel.exchange(query, tcp_fallback=tcp_fallback, retransmit=retransmit)
    except TimeoutError:
        invalid = channel.invalid_answers
        if invalid is not None:
            raise invalid from None
        raise
    except asyncio.CancelledError:
        # The attempt's deadline, arriving with ours on a late loop: still what we got decides.
        invalid = channel.invalid_answers
        if invalid is not None:
            phase.fail_at_deadline_with(invalid)
        raise
    finally:
        tries = channel.tries
        if tries is not None:
            record_tries(phase, (tries,), tries.answered)


def _end_at_wire(phase: OpenPhase, channel: DNSChannel, error: DNSError | None) -> None:
    """End a lookup phase at the channel's wire edges: query sent -> answer's kernel arrival."""
    phase.move_start(channel.sent_ns or None)
    phase.end(channel.answered_ns or None, error)
