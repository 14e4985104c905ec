"""The probe seam: the Probe Protocol, the context probes run in, and the attempt runner.

A probe implements `run(attempt)`; the scheduler owns intervals, retries and cancellation.
`run_attempt` gives every kind the same deadline handling and error capture, so a misbehaving
target always becomes a classified failed `ProbeResult` within its deadline, never an exception.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from pydantic import Field, field_validator

from otelprobe import names
from otelprobe.errors import ProbeError
from otelprobe.net.dns.resolver import (
    LookupProgress,
    Resolution,
    Resolver,
    SystemResolver,
    is_ip_literal,
    is_stamped,
    resolver_from_config,
    split_host_port,
)
from otelprobe.net.dns.retransmit import record_tries
from otelprobe.results import ProbeResult
from otelprobe.settings.addresses import check_host_port
from otelprobe.settings.common import IPFamily, ProbeConfigBase
from otelprobe.timing import AttributeValue, PhaseClock

Attributes = dict[str, AttributeValue]
AttemptBody = Callable[[PhaseClock, Attributes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """What a probe gets from the process: its vantage and the default resolver."""

    vantage: str = field(default_factory=socket.gethostname)
    resolver: Resolver = field(default_factory=SystemResolver)

    def resolver_for(self, config: ProbeConfigBase) -> Resolver:
        return resolver_from_config(config.resolver, self.resolver)


class Probe(Protocol):
    """One probe kind bound to one target's config."""

    kind: ClassVar[str]

    async def run(self, attempt: int = 1) -> list[ProbeResult]:
        """One attempt; one result per probed address (one, unless `ip: all`).

        Never raises for target-side failures: they land in ProbeResult.error.
        """
        ...

    async def aclose(self) -> None: ...


class HostPortProbeConfig(ProbeConfigBase):
    """Config of a kind whose target is one `address: host:port` (tcp, tls)."""

    address: str = Field(description="host:port ([v6]:port)")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        check_host_port(value)
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.address, default_port=0)


async def run_attempt(
    kind: str,
    target: str,
    attempt: int,
    timeout_s: float,
    body: AttemptBody,
    *,
    clock: PhaseClock | None = None,
    attributes: Attributes | None = None,
) -> ProbeResult:
    """Run `body` under the deadline and turn its outcome into a ProbeResult.

    `body` marks phases on the clock, fills attributes and raises ProbeError on failure. A
    deadline expiring inside a phase becomes that phase's timeout class (timing.timeout_error_for),
    or the error the body said it fails with at the deadline (PhaseClock.fail_at_deadline_with).
    """
    clock = clock or PhaseClock()
    attrs: Attributes = attributes if attributes is not None else {}
    start_ns = clock.now_ns()
    error: ProbeError | None = None
    try:
        async with asyncio.timeout(timeout_s):
            await body(clock, attrs)
    except TimeoutError:
        # The phase that was open at the deadline has already recorded its timeout error.
        failed = next((p for p in reversed(clock.phases) if p.error_type), None)
        open_name = clock.open_phase
        error = clock.error_at_deadline(open_name or (failed.name if failed else None))
        clock.close_open(error)
    except ProbeError as exc:
        error = exc
        clock.close_open(exc)
    return ProbeResult.of_attempt(kind, target, attempt, clock, start_ns, error, attrs)


async def timed_resolve(
    clock: PhaseClock, resolver: Resolver, host: str, family: IPFamily, attrs: Attributes
) -> list[str]:
    """Resolve `host` as the `dns.lookup` phase; an IP literal needs no lookup and has no phase.

    A StampedResolver's phase runs from its first query's send() to the kernel arrival of the
    answer that ended the lookup, and carries its UDP tries (retransmits as events) and any
    family it went on without; any other resolver's (getaddrinfo) from the call to its return.
    """
    if is_ip_literal(host):
        return [host.strip("[]")]
    with clock.phase(names.SPAN_DNS_LOOKUP) as phase:
        phase.attributes[names.DNS_QUESTION_NAME] = host
        if is_stamped(resolver):
            progress = LookupProgress()
            try:
                resolution = await resolver.resolve_stamped(host, family, progress)
            except asyncio.CancelledError:
                # The attempt's deadline cut the lookup short: the span still shows its tries.
                phase.move_start(progress.sent_ns or None)
                record_tries(phase, progress.tries, None)
                raise
        else:
            resolution = Resolution(tuple(await resolver.resolve(host, family)))
        phase.move_start(resolution.sent_ns)
        if resolution.error is None:
            phase.attributes[names.DNS_ANSWERS] = resolution.addresses
        record_tries(phase, resolution.tries, resolution.answered_attempt)
        if resolution.missing_family is not None:
            phase.attributes[names.PROBE_DNS_MISSING_FAMILY] = resolution.missing_family
            phase.attributes[names.PROBE_DNS_MISSING_REASON] = resolution.missing_reason or ""
        phase.end(resolution.answered_ns, resolution.error)
    if resolution.error is not None:
        raise resolution.error
    attrs[names.DNS_QUESTION_NAME] = host
    return list(resolution.addresses)
