"""The fault lab's one table of fault types: what each fault is, which server injects it, and the
DESIGN §5 root-cause class it produces (the vocabulary itself lives in otelprobe/causes.py).

Scenario YAML names faults by `kind` (toxiproxy's registry, STYLE §4); `parse_fault` validates one
entry into a frozen value object, and the servers (lab/servers/*, lab/emulation/link.py) act on those values.
Nothing registers itself on import: to add a fault, write its model here and add one member to
`Fault`; FAULT_TYPES is read off that union. tests/lab/test_faults.py checks the table.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Literal, Union, get_args

from pydantic import Field, TypeAdapter

from otelprobe.causes import ROOT_CAUSES as ROOT_CAUSES  # re-exported for existing callers
from otelprobe.causes import RootCause
from otelprobe.settings.common import StrictModel
from otelprobe.settings.durations import Duration, Size

if TYPE_CHECKING:
    from otelprobe.lab.servers.dns_zone import DNSFault as DNSServerFault


FaultServer = Literal["dns", "link", "tls", "http", "ports"]
"""Who injects a fault: lab/servers/dns.py, lab/emulation/link.py, lab/servers/tls.py, lab/servers/http.py
(and raw.py), lab/servers/ports.py."""

Direction = Literal["upstream", "downstream", "both"]
"""toxiproxy's stream direction: upstream = prober -> target, downstream = target -> prober."""

CertProblem = Literal["expired", "not_yet_valid", "wrong_host", "self_signed", "short_chain"]


class FaultBase(StrictModel):
    """Fields and class-level facts every fault has."""

    kind: str
    root_cause: ClassVar[RootCause]
    server: ClassVar[FaultServer]


class _Probabilistic(FaultBase):
    """A per-request fault that hits each query, connection or request with `probability`."""

    probability: float = Field(1.0, ge=0.0, le=1.0, description="share of requests affected")


DelayDistribution = Literal["uniform", "normal", "exponential"]


class _Delayed(_Probabilistic):
    """A per-request delay: `delay`, spread by `jitter` according to `distribution`."""

    delay_s: Duration = Field(alias="delay")
    jitter_s: Duration = Field(0.0, alias="jitter")
    distribution: DelayDistribution = Field(
        "uniform",
        description="uniform: delay ± jitter; normal: σ = jitter; exponential: delay + Exp(mean jitter)",
    )

    def sample_delay(self, rng: random.Random) -> float:
        """One delay in seconds, never negative."""
        if not self.jitter_s:
            return self.delay_s
        if self.distribution == "uniform":
            spread = rng.uniform(-self.jitter_s, self.jitter_s)
        elif self.distribution == "normal":
            spread = rng.gauss(0.0, self.jitter_s)
        else:  # a long right tail, as slow backends have
            spread = rng.expovariate(1.0 / self.jitter_s)
        return max(0.0, self.delay_s + spread)


# --- DNS (lab/servers/dns.py) -----------------------------------------------------------------


class DNSDelay(_Delayed):
    """Answers are held back by `delay`, spread by `jitter`."""

    kind: Literal["dns_delay"] = "dns_delay"
    root_cause: ClassVar[RootCause] = "dns_latency"
    server: ClassVar[FaultServer] = "dns"


class DNSServfail(_Probabilistic):
    kind: Literal["dns_servfail"] = "dns_servfail"
    root_cause: ClassVar[RootCause] = "dns_failure"
    server: ClassVar[FaultServer] = "dns"


class DNSNxdomain(_Probabilistic):
    kind: Literal["dns_nxdomain"] = "dns_nxdomain"
    root_cause: ClassVar[RootCause] = "dns_failure"
    server: ClassVar[FaultServer] = "dns"


class DNSTimeout(_Probabilistic):
    """Queries are dropped: the resolver times out."""

    kind: Literal["dns_timeout"] = "dns_timeout"
    root_cause: ClassVar[RootCause] = "dns_failure"
    server: ClassVar[FaultServer] = "dns"


class DNSTruncate(_Probabilistic):
    """UDP answers come back with TC set, forcing a retry over TCP: one extra round trip and a
    TCP connect, so the lookup is slow rather than failed."""

    kind: Literal["dns_truncate"] = "dns_truncate"
    root_cause: ClassVar[RootCause] = "dns_latency"
    server: ClassVar[FaultServer] = "dns"


class DNSWrongAnswer(_Probabilistic):
    """The name resolves to `answers` instead of the target. The cause is DNS even though the
    probe then fails at connect (or on content), so the label says dns_failure."""

    kind: Literal["dns_wrong_answer"] = "dns_wrong_answer"
    answers: tuple[str, ...] = Field(("127.0.0.2",), min_length=1, description="rdata handed out")
    root_cause: ClassVar[RootCause] = "dns_failure"
    server: ClassVar[FaultServer] = "dns"


# --- Link (lab/emulation/link.py) -----------------------------------------------------------------------


class NetworkLatency(FaultBase):
    """Every packet in `direction` is delayed by `delay` (± `jitter`, one standard deviation).
    The delay is one-way: with direction "both" the round trip grows by twice `delay`."""

    kind: Literal["network_latency"] = "network_latency"
    delay_s: Duration = Field(alias="delay")
    jitter_s: Duration = Field(0.0, alias="jitter")
    direction: Direction = "both"
    root_cause: ClassVar[RootCause] = "network_latency"
    server: ClassVar[FaultServer] = "link"


class PacketLoss(FaultBase):
    """Each packet in `direction` is dropped with probability `rate`."""

    kind: Literal["packet_loss"] = "packet_loss"
    rate: float = Field(gt=0.0, le=1.0, description="share of packets dropped")
    burst_packets: float = Field(1.0, alias="burst", ge=1.0, description="mean loss-burst length")
    direction: Direction = "both"
    root_cause: ClassVar[RootCause] = "packet_loss"
    server: ClassVar[FaultServer] = "link"


class BandwidthLimit(FaultBase):
    """The link carries at most `rate` bytes per second in `direction`."""

    kind: Literal["bandwidth_limit"] = "bandwidth_limit"
    rate_bytes_per_s: Size = Field(alias="rate", gt=0, description="bytes per second, e.g. '64KiB'")
    direction: Direction = "downstream"
    root_cause: ClassVar[RootCause] = "bandwidth_limit"
    server: ClassVar[FaultServer] = "link"


# --- TLS front (lab/servers/tls.py) -----------------------------------------------------------


class TLSDelay(_Delayed):
    """The server accepts, waits `delay` (spread by `jitter`), then handshakes: `tls.handshake` grows,
    `tcp.connect` does not."""

    kind: Literal["tls_delay"] = "tls_delay"
    root_cause: ClassVar[RootCause] = "tls_slow"
    server: ClassVar[FaultServer] = "tls"


class BadCertificate(FaultBase):
    """The server presents a certificate that fails verification against the lab CA."""

    kind: Literal["bad_certificate"] = "bad_certificate"
    problem: CertProblem
    root_cause: ClassVar[RootCause] = "certificate_invalid"
    server: ClassVar[FaultServer] = "tls"


# --- HTTP (lab/servers/http.py, lab/servers/raw.py) -------------------------------------------


class TTFBDelay(_Delayed):
    """The response starts `delay` (spread by `jitter`) after the request was read."""

    kind: Literal["ttfb_delay"] = "ttfb_delay"
    root_cause: ClassVar[RootCause] = "backend_slow"
    server: ClassVar[FaultServer] = "http"


class TrickleBody(_Probabilistic):
    """The body is written `chunk` bytes at a time at `rate` bytes per second. The server is the
    bottleneck, but the probe sees what a thin link shows: `http.transfer` grows with body size."""

    kind: Literal["trickle_body"] = "trickle_body"
    rate_bytes_per_s: Size = Field(alias="rate", gt=0)
    chunk_bytes: Size = Field(1024, alias="chunk", gt=0)
    root_cause: ClassVar[RootCause] = "bandwidth_limit"
    server: ClassVar[FaultServer] = "http"


class HTTP5xx(FaultBase):
    """A share `rate` of responses get `status` instead of the real answer."""

    kind: Literal["http_5xx"] = "http_5xx"
    rate: float = Field(1.0, ge=0.0, le=1.0)
    status: int = Field(503, ge=500, le=599)
    root_cause: ClassVar[RootCause] = "http_error"
    server: ClassVar[FaultServer] = "http"


class ResetMidBody(_Probabilistic):
    """The connection is reset (RST) after `after` body bytes of a longer announced body: a
    backend failure the probe sees as protocol_error, ranked with the HTTP errors."""

    kind: Literal["reset_mid_body"] = "reset_mid_body"
    after_bytes: Size = Field(512, alias="after")
    root_cause: ClassVar[RootCause] = "http_error"
    server: ClassVar[FaultServer] = "http"


class WrongContent(_Probabilistic):
    """A 200 response whose body lacks the content the probe expects."""

    kind: Literal["wrong_content"] = "wrong_content"
    body: str = "otelprobe-lab WRONG CONTENT\n"
    root_cause: ClassVar[RootCause] = "content_mismatch"
    server: ClassVar[FaultServer] = "http"


class RedirectChain(_Probabilistic):
    """`hops` redirects before the real answer, or an endless loop when `loop` is set."""

    kind: Literal["redirect_chain"] = "redirect_chain"
    hops: int = Field(3, ge=1, le=100)
    loop: bool = False
    status: Literal[301, 302, 303, 307, 308] = 302
    root_cause: ClassVar[RootCause] = "http_error"
    server: ClassVar[FaultServer] = "http"


class Hang(_Probabilistic):
    """The request is read and never answered: the probe's deadline fires in `http.ttfb`."""

    kind: Literal["hang"] = "hang"
    root_cause: ClassVar[RootCause] = "backend_slow"
    server: ClassVar[FaultServer] = "http"


# --- Ports (lab/servers/ports.py) -------------------------------------------------------------


class Refused(FaultBase):
    """Nothing listens: the SYN is answered by RST (ECONNREFUSED)."""

    kind: Literal["refused"] = "refused"
    root_cause: ClassVar[RootCause] = "target_unreachable"
    server: ClassVar[FaultServer] = "ports"


class Blackhole(FaultBase):
    """SYNs are dropped (full listen backlog): connect never completes."""

    kind: Literal["blackhole"] = "blackhole"
    root_cause: ClassVar[RootCause] = "target_unreachable"
    server: ClassVar[FaultServer] = "ports"


Fault = Annotated[
    Union[  # noqa: UP007  (kept as Union so one member per line reads as a table)
        DNSDelay,
        DNSServfail,
        DNSNxdomain,
        DNSTimeout,
        DNSTruncate,
        DNSWrongAnswer,
        NetworkLatency,
        PacketLoss,
        BandwidthLimit,
        TLSDelay,
        BadCertificate,
        TTFBDelay,
        TrickleBody,
        HTTP5xx,
        ResetMidBody,
        WrongContent,
        RedirectChain,
        Hang,
        Refused,
        Blackhole,
    ],
    Field(discriminator="kind"),
]
"""Any fault, validated from a scenario entry by its `kind`."""

FAULT_TYPES: Final[Mapping[str, type[FaultBase]]] = MappingProxyType(
    {member.model_fields["kind"].default: member for member in get_args(get_args(Fault)[0])}
)
"""Every fault kind the lab can inject, by the `kind` scenario files use (read off `Fault`, so
there is one list, not two)."""

_FAULT_ADAPTER: Final[TypeAdapter[Fault]] = TypeAdapter(Fault)


def parse_fault(data: Mapping[str, Any]) -> Fault:
    """Validate one scenario entry (`{"kind": "ttfb_delay", "delay": "200ms"}`) into a fault.

    Raises:
        pydantic.ValidationError: unknown kind, unknown key, or a bad value.
    """
    return _FAULT_ADAPTER.validate_python(dict(data))


LinkDirection = Literal["up", "down", "both"]
_LINK_DIRECTIONS: Final[Mapping[Direction, LinkDirection]] = {
    "upstream": "up",
    "downstream": "down",
    "both": "both",
}
LINK_CLEAR: Final[Mapping[str, Mapping[str, float | None]]] = MappingProxyType(
    {
        "network_latency": {"delay_s": 0.0, "jitter_s": 0.0},
        "packet_loss": {"loss": 0.0, "loss_burst": 1.0},
        "bandwidth_limit": {"rate_bps": None},
    }
)
"""The lab/emulation/link.py settings that turn each link fault off again."""


def link_settings(
    fault: NetworkLatency | PacketLoss | BandwidthLimit,
) -> tuple[LinkDirection, dict[str, float | None]]:
    """The `Link.set(direction, **changes)` call (lab/emulation/link.py) that injects a link fault."""
    direction = _LINK_DIRECTIONS[fault.direction]
    if isinstance(fault, NetworkLatency):
        return direction, {"delay_s": fault.delay_s, "jitter_s": fault.jitter_s}
    if isinstance(fault, PacketLoss):
        return direction, {"loss": fault.rate, "loss_burst": fault.burst_packets}
    # The emulator counts bits of IP packets per second; faults say bytes per second.
    return direction, {"rate_bps": 8.0 * fault.rate_bytes_per_s}


def dns_server_fault(
    fault: DNSDelay | DNSServfail | DNSNxdomain | DNSTimeout | DNSTruncate | DNSWrongAnswer,
) -> DNSServerFault:
    """The `DNSFault` that lab/servers/dns.py's `set_fault(pattern, ...)` takes for a DNS fault."""
    # Imported here: the table stays importable without the DNS server's dependencies loaded.
    import dns.rcode

    from otelprobe.lab.servers.dns_zone import DNSFault

    if isinstance(fault, DNSDelay):
        return DNSFault(delay=fault.sample_delay, probability=fault.probability)
    if isinstance(fault, DNSServfail):
        return DNSFault(rcode=dns.rcode.SERVFAIL, probability=fault.probability)
    if isinstance(fault, DNSNxdomain):
        return DNSFault(rcode=dns.rcode.NXDOMAIN, probability=fault.probability)
    if isinstance(fault, DNSTimeout):
        return DNSFault(drop=True, probability=fault.probability)
    if isinstance(fault, DNSTruncate):
        return DNSFault(truncate=True, probability=fault.probability)
    return DNSFault(answers=fault.answers, probability=fault.probability)


def faults_causing(cause: RootCause) -> tuple[str, ...]:
    """The fault kinds that produce root cause `cause`, for scenario generators."""
    return tuple(kind for kind, cls in FAULT_TYPES.items() if cls.root_cause == cause)
