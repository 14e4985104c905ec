"""The ICMP probe: echo requests (ping) with per-packet spans, or a traceroute, to one host.

A probe attempt sends `count` echo requests `packet_interval` apart; each packet becomes one
`icmp.echo` phase from sendto() to its reply, and loss ratio and RTT statistics land in the
result's attributes (`probe.icmp.*`), which telemetry turns into metrics. With
`mode: traceroute` the attempt is a path trace instead (`traceroute.hop` phases).

Failure classes (DESIGN §4): every packet unanswered -> `connect_timeout` (`no_reply`), an ICMP
error in reply -> `connect_timeout` (`host_unreachable`, `ttl_exceeded`, ...) or `connect_refused`
(`admin_prohibited`), loss above `max_loss_ratio` -> `assertion_failed` (`loss_ratio_exceeded`).
When the kernel refuses the ICMP socket at probe time (it was permitted when the probe was
built) the attempt fails as `connect_refused` / `icmp_socket_not_permitted`: this vantage cannot
reach the target, and because every ICMP target of the vantage fails the same way, scope
analysis places it at the vantage. Building a probe where ICMP is not permitted at all raises
`ICMPNotPermittedError` (a `MissingDependencyError`) that names the sysctl / capability fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
import statistics
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from otelprobe import names
from otelprobe.errors import AssertionFailed, ConnectRefused, ConnectTimeout, ProbeError, ProtocolError
from otelprobe.net.connection import local_socket_error
from otelprobe.net.dns.resolver import is_ip_literal
from otelprobe.probes._attempts import run_per_address
from otelprobe.probes.base import Attributes, ProbeContext
from otelprobe.probes.icmp import _packet as packet
from otelprobe.probes.icmp._socket import (
    ICMPNotPermittedError,
    SocketMode,
    open_icmp_socket,
    set_dont_fragment,
    set_ttl,
)
from otelprobe.probes.icmp.traceroute import trace_path
from otelprobe.results import ProbeResult
from otelprobe.settings.addresses import check_host
from otelprobe.settings.common import ProbeConfigBase, StrictModel
from otelprobe.settings.durations import Duration
from otelprobe.settings.secrets import redact_url
from otelprobe.timing import AttributeValue, PhaseClock


class TracerouteOptions(StrictModel):
    """How a `mode: traceroute` attempt probes the path."""

    method: Literal["udp", "icmp"] = "udp"
    max_hops: int = Field(30, ge=1, le=64)


class ICMPProbeConfig(ProbeConfigBase):
    """An ICMP echo (or traceroute) target."""

    kind: Literal["icmp"] = "icmp"
    host: str = Field(min_length=1)
    mode: Literal["echo", "traceroute"] = "echo"
    count: int = Field(3, ge=1, le=100, description="echo requests per attempt")
    packet_interval_s: Duration = Field(0.2, alias="packet_interval", ge=0.001)
    packet_timeout_s: Duration = Field(1.0, alias="packet_timeout", gt=0, description="wait per reply")
    payload_size: int = Field(56, ge=0, le=65_000, description="ICMP payload bytes (ping -s)")
    ttl: int | None = Field(None, ge=1, le=255, description="TTL / hop limit of echo requests")
    dont_fragment: bool = False
    socket_mode: SocketMode = Field("auto", alias="socket", description="auto: datagram, else raw")
    max_loss_ratio: float | None = Field(
        None, ge=0.0, lt=1.0, description="fail above this loss; default: fail only when all are lost"
    )
    traceroute: TracerouteOptions = TracerouteOptions()

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value)

    @model_validator(mode="after")
    def _packets_fit_timeout(self) -> ICMPProbeConfig:
        needed = (self.count - 1) * self.packet_interval_s + self.packet_timeout_s
        if self.mode == "echo" and needed > self.timeout_s:
            raise ValueError(
                f"{self.count} packets {self.packet_interval_s:g}s apart plus a {self.packet_timeout_s:g}s "
                f"reply wait need {needed:g}s, longer than timeout ({self.timeout_s:g}s)"
            )
        return self

    @classmethod
    def from_url(cls, url: str, name: str | None = None, **overrides: Any) -> Self:
        """`icmp://host` (IPv4) or `icmp6://host` (IPv6); overrides are config fields."""
        parts = urlsplit(url)
        if parts.scheme not in ("icmp", "icmp6") or not parts.hostname:
            raise ValueError(f"expected icmp://host or icmp6://host, got {url!r}")
        fields: dict[str, Any] = {
            "name": name or redact_url(url),
            "host": parts.hostname,
            "ip": "ip6" if parts.scheme == "icmp6" else "ip4",
        }
        return cls.model_validate({**fields, **overrides})

    def display_address(self) -> str:
        return self.host


class ICMPProbe:
    """Pings (or traces the path to) one host per attempt."""

    kind: ClassVar[str] = "icmp"

    def __init__(self, config: ICMPProbeConfig, ctx: ProbeContext) -> None:
        self.config = config
        self._resolver = ctx.resolver_for(config)
        # A raw socket sees every ICMP message on the host: a random identifier keeps ours apart.
        self._ident = random.randrange(1, 0xFFFF)
        self._sequence = 0
        # Fail at build time, with the fix in the message, rather than on every attempt.
        v6 = config.ip == "ip6" or (is_ip_literal(config.host) and ":" in config.host)
        try:
            sock, _ = open_icmp_socket(v6, config.socket_mode)
        except ICMPNotPermittedError:
            raise
        except OSError:  # no descriptor left now, say: each attempt will say so, classified
            return
        sock.close()

    async def run(self, attempt: int = 1) -> list[ProbeResult]:
        return await run_per_address(
            self.config, self.kind, attempt, self._resolver, self.config.host.strip("[]"), self._probe
        )

    async def aclose(self) -> None:
        return None

    async def _probe(self, clock: PhaseClock, attrs: Attributes, address: str) -> None:
        v6 = ":" in address
        attrs[names.SERVER_ADDRESS] = self.config.host
        attrs[names.NETWORK_PEER_ADDRESS] = address
        attrs[names.NETWORK_TYPE] = "ipv6" if v6 else "ipv4"
        if self.config.mode == "traceroute":
            await self._trace(clock, attrs, address)
            return
        try:
            sock, sock_kind = open_icmp_socket(v6, self.config.socket_mode)
        except ICMPNotPermittedError as exc:
            raise ConnectRefused("icmp_socket_not_permitted", str(exc)) from exc
        except OSError as exc:
            raise local_socket_error(exc, "an ICMP socket") from exc
        try:
            if self.config.ttl is not None:
                set_ttl(sock, v6, self.config.ttl)
            if self.config.dont_fragment:
                set_dont_fragment(sock, v6)
            first_sequence = self._sequence
            self._sequence = (self._sequence + self.config.count) & 0xFFFF
            session = _EchoSession(sock, sock_kind == "raw", v6, address, self._ident, self.config)
            outcomes = await session.run(clock, first_sequence)
        finally:
            sock.close()
        _summarize(outcomes, attrs, self.config)

    async def _trace(self, clock: PhaseClock, attrs: Attributes, address: str) -> None:
        options = self.config.traceroute
        try:
            hops = await trace_path(
                address,
                max_hops=options.max_hops,
                timeout_s=self.config.timeout_s * 0.9,
                clock=clock,
                method=options.method,
            )
        except ICMPNotPermittedError as exc:
            raise ConnectRefused("icmp_socket_not_permitted", str(exc)) from exc
        except OSError as exc:
            raise local_socket_error(exc, "a traceroute socket") from exc
        attrs[names.PROBE_TRACEROUTE_HOPS] = len(hops)
        if not hops or not hops[-1].attributes.get(names.PROBE_TRACEROUTE_REACHED):
            raise ConnectTimeout(
                "destination_not_reached", f"{address} not reached in {options.max_hops} hops"
            )


_Outcome = tuple[int | None, ProbeError | None]  # (rtt_ns, error) of one packet


class _EchoSession:
    """One attempt's echo requests on one socket: a sender loop and a reply reader."""

    def __init__(
        self, sock: socket.socket, raw: bool, v6: bool, address: str, ident: int, config: ICMPProbeConfig
    ) -> None:
        self._sock = sock
        self._raw = raw
        self._v6 = v6
        self._address = address
        self._ident = ident
        self._config = config
        self._payload = packet.echo_payload(config.payload_size)
        self._waiting: dict[int, asyncio.Future[tuple[int, packet.ICMPMessage | ProbeError, str]]] = {}

    async def run(self, clock: PhaseClock, first_sequence: int) -> list[_Outcome]:
        """Send every packet and wait for its reply; returns (rtt_ns, error) per packet."""
        loop = asyncio.get_running_loop()
        sent: list[tuple[int, int, float]] = []  # (sequence, send perf ns, loop-time deadline)
        outcomes: list[_Outcome] = []
        reader = asyncio.create_task(self._read_replies())
        try:
            for index in range(self._config.count):
                if index:
                    await asyncio.sleep(self._config.packet_interval_s)
                sequence = (first_sequence + index) & 0xFFFF
                self._waiting[sequence] = loop.create_future()
                request = packet.encode_echo_request(self._ident, sequence, self._payload, v6=self._v6)
                send_ns = clock.now_ns()
                await self._send(loop, request)
                sent.append((sequence, send_ns, loop.time() + self._config.packet_timeout_s))
            for sequence, send_ns, deadline in sent:
                outcomes.append(await self._outcome(clock, loop, sequence, send_ns, deadline))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            # Packets still in flight at the probe's deadline keep their span, marked unanswered.
            for sequence, send_ns, _ in sent[len(outcomes) :]:
                clock.record(
                    names.SPAN_ICMP_ECHO,
                    send_ns,
                    clock.now_ns(),
                    ConnectTimeout("no_reply"),
                    {names.PROBE_ICMP_SEQUENCE: sequence},
                )
        return outcomes

    async def _send(self, loop: asyncio.AbstractEventLoop, request: bytes) -> None:
        try:
            await loop.sock_sendto(self._sock, request, (self._address, 0))
        except OSError as exc:
            raise _send_error(exc, self._address) from exc

    async def _outcome(
        self, clock: PhaseClock, loop: asyncio.AbstractEventLoop, sequence: int, send_ns: int, deadline: float
    ) -> _Outcome:
        waiter = self._waiting[sequence]
        attrs: dict[str, AttributeValue] = {names.PROBE_ICMP_SEQUENCE: sequence}
        try:
            async with asyncio.timeout_at(deadline):
                recv_ns, reply, responder = await asyncio.shield(waiter)
        except TimeoutError:
            end_ns = send_ns + int(self._config.packet_timeout_s * 1e9)
            lost = ConnectTimeout("no_reply")
            clock.record(names.SPAN_ICMP_ECHO, send_ns, end_ns, lost, attrs)
            return None, lost
        if isinstance(reply, ProbeError):
            clock.record(names.SPAN_ICMP_ECHO, send_ns, recv_ns, reply, attrs)
            return None, reply
        if reply.ttl is not None:
            attrs[names.PROBE_ICMP_REPLY_TTL] = reply.ttl
        if not reply.is_echo_reply:
            error = _icmp_error(reply)
            attrs[names.PROBE_ICMP_RESPONDER] = responder
            clock.record(names.SPAN_ICMP_ECHO, send_ns, recv_ns, error, attrs)
            return None, error
        if reply.payload != self._payload:
            error = ProtocolError("payload_mismatch", f"echo reply {sequence} carried a different payload")
            clock.record(names.SPAN_ICMP_ECHO, send_ns, recv_ns, error, attrs)
            return None, error
        clock.record(names.SPAN_ICMP_ECHO, send_ns, recv_ns, None, attrs)
        return recv_ns - send_ns, None

    async def _read_replies(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, source = await loop.sock_recvfrom(self._sock, 65535)
            except OSError as exc:
                # A datagram socket reports an ICMP error for its last packet as a socket error.
                self._resolve_oldest(ConnectTimeout(_errno_detail(exc), f"{self._address}: {exc.strerror}"))
                continue
            recv_ns = PhaseClock.now_ns()
            try:
                reply = packet.parse_icmp(data, v6=self._v6, has_ip_header=self._raw)
            except packet.PacketError:
                continue
            responder = str(source[0]).split("%")[0]
            sequence = self._match(reply, responder)
            waiter = self._waiting.get(sequence) if sequence is not None else None
            if waiter is not None and not waiter.done():
                waiter.set_result((recv_ns, reply, responder))

    def _match(self, reply: packet.ICMPMessage, source: str) -> int | None:
        """The sequence number a received message answers, or None when it is someone else's."""
        if reply.quoted is not None:
            quoted = reply.quoted
            is_ours = quoted.destination == self._address and (not self._raw or quoted.ident == self._ident)
            return quoted.sequence if is_ours else None
        if not reply.is_echo_reply or source != self._address:
            return None
        # Datagram sockets: the kernel rewrote our identifier and already filtered replies.
        if self._raw and reply.ident != self._ident:
            return None
        return reply.sequence

    def _resolve_oldest(self, error: ProbeError) -> None:
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_result((PhaseClock.now_ns(), error, self._address))
                return


def _summarize(outcomes: list[_Outcome], attrs: Attributes, config: ICMPProbeConfig) -> None:
    rtts = [rtt / 1e9 for rtt, _ in outcomes if rtt is not None]
    sent = len(outcomes)
    loss = 1.0 - len(rtts) / sent if sent else 1.0
    attrs[names.PROBE_ICMP_PACKETS_SENT] = sent
    attrs[names.PROBE_ICMP_PACKETS_RECEIVED] = len(rtts)
    attrs[names.PROBE_ICMP_LOSS_RATIO] = loss
    if rtts:
        attrs[names.PROBE_ICMP_RTT_MIN] = min(rtts)
        attrs[names.PROBE_ICMP_RTT_AVG] = statistics.fmean(rtts)
        attrs[names.PROBE_ICMP_RTT_MAX] = max(rtts)
        attrs[names.PROBE_ICMP_RTT_STDDEV] = statistics.pstdev(rtts)
    if not rtts:
        # An ICMP error (unreachable, TTL exceeded) says more than silence does.
        errors = [error for _, error in outcomes if error is not None]
        raise next((e for e in errors if e.detail != "no_reply"), None) or ConnectTimeout(
            "no_reply", f"no echo reply to {sent} packet(s)"
        )
    if config.max_loss_ratio is not None and loss > config.max_loss_ratio:
        raise AssertionFailed(
            "loss_ratio_exceeded", f"lost {loss:.0%} of {sent} packets (max {config.max_loss_ratio:.0%})"
        )


def _icmp_error(reply: packet.ICMPMessage) -> ProbeError:
    if reply.is_time_exceeded:
        return ConnectTimeout("ttl_exceeded", "time exceeded in transit (TTL / hop limit too small)")
    if reply.v6:
        if reply.type == packet.ICMP6_PACKET_TOO_BIG:
            return ConnectTimeout("fragmentation_needed", "packet too big for the path MTU")
        detail = {0: "net_unreachable", 1: "admin_prohibited", 3: "host_unreachable"}.get(reply.code)
    else:
        detail = {0: "net_unreachable", 1: "host_unreachable", 4: "fragmentation_needed"}.get(reply.code)
        if reply.code in (9, 10, 13):
            detail = "admin_prohibited"
    detail = detail or f"unreachable_code_{reply.code}"
    cls = ConnectRefused if detail == "admin_prohibited" else ConnectTimeout
    return cls(detail, f"destination unreachable ({detail})")


def _errno_detail(exc: OSError) -> str:
    return {
        errno.EHOSTUNREACH: "host_unreachable",
        errno.ENETUNREACH: "net_unreachable",
        errno.EMSGSIZE: "fragmentation_needed",
    }.get(exc.errno or 0, "icmp_error")


def _send_error(exc: OSError, address: str) -> ProbeError:
    if exc.errno == errno.EMSGSIZE:
        return ProtocolError("message_too_long", f"echo request larger than the local MTU: {exc.strerror}")
    if exc.errno in (errno.EPERM, errno.EACCES):
        return ConnectRefused("send_not_permitted", f"sending to {address} not permitted: {exc.strerror}")
    return ConnectTimeout(_errno_detail(exc), f"{address}: {exc.strerror}")
