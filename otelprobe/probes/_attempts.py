"""One attempt per probed address: resolve once, then probe the address(es) each result is about.

Used by the kinds that resolve a host on top of `base.run_attempt`. `run_with_fallback` hands
the body every resolved address (kinds that connect race them with
`net/happy_eyeballs.connect_first`); `run_per_address` hands it the first one (icmp).

With `ip: all` each address gets a result of its own (`run_every_address`, also used by http):
the name is resolved once, then every address is probed at once, all within what the lookup
left of the one timeout, so two silent addresses cost one timeout, not two (the scheduler cuts
off a probe that is not back by timeout + 1 s). Every result holds the shared `dns.lookup`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from otelprobe.net.dns.resolver import Resolver, is_ip_literal
from otelprobe.probes.base import Attributes, run_attempt, timed_resolve
from otelprobe.results import ProbeResult
from otelprobe.settings.common import ProbeConfigBase
from otelprobe.timing import PhaseClock

AddressBody = Callable[[PhaseClock, Attributes, str], Awaitable[None]]
CandidatesBody = Callable[[PhaseClock, Attributes, Sequence[str]], Awaitable[None]]
AddressAttempt = Callable[[str, float, PhaseClock, Attributes], Awaitable[ProbeResult]]
"""Probe one address within `timeout_s` on `clock` (which already holds the lookup), with
`attributes` as the result's root attributes: (address, timeout_s, clock, attributes)."""

_MIN_TIMEOUT_S: Final = 1e-3  # a lookup that used the whole budget still leaves each address a try


async def run_with_fallback(
    config: ProbeConfigBase,
    kind: str,
    attempt: int,
    resolver: Resolver,
    host: str,
    body: CandidatesBody,
) -> list[ProbeResult]:
    """Resolve `host` as the attempt's `dns.lookup`, then run `body` on its candidates: every
    resolved address, or with `ip: all` one address per result (`run_every_address`)."""
    if config.ip == "all" and not is_ip_literal(host):

        async def one_address(
            address: str, timeout_s: float, clock: PhaseClock, attrs: Attributes
        ) -> ProbeResult:
            async def probe(clock: PhaseClock, attrs: Attributes) -> None:
                await body(clock, attrs, (address,))

            return await run_attempt(
                kind, config.name, attempt, timeout_s, probe, clock=clock, attributes=attrs
            )

        return await run_every_address(config, kind, attempt, resolver, host, one_address)

    async def resolve_then_probe(clock: PhaseClock, attrs: Attributes) -> None:
        await body(clock, attrs, await timed_resolve(clock, resolver, host, config.ip, attrs))

    return [await run_attempt(kind, config.name, attempt, config.timeout_s, resolve_then_probe)]


async def run_every_address(
    config: ProbeConfigBase,
    kind: str,
    attempt: int,
    resolver: Resolver,
    host: str,
    probe_address: AddressAttempt,
    attributes: Attributes | None = None,
) -> list[ProbeResult]:
    """`ip: all`: resolve `host` once, then probe every address concurrently, one result each,
    all within the remainder of `config.timeout_s`; a failed lookup is the only result.

    `attributes` are the root attributes every result starts from.
    """
    resolve_attrs: Attributes = dict(attributes or {})
    addresses: list[str] = []

    async def resolve(clock: PhaseClock, attrs: Attributes) -> None:
        addresses.extend(await timed_resolve(clock, resolver, host, "all", attrs))

    resolved = await run_attempt(
        kind, config.name, attempt, config.timeout_s, resolve, attributes=resolve_attrs
    )
    if not resolved.success:
        return [resolved]
    lookup = resolved.phases
    remaining_s = max(config.timeout_s - resolved.duration_s, _MIN_TIMEOUT_S)

    async def probe(address: str) -> ProbeResult:
        clock = PhaseClock()
        clock.adopt(lookup)  # the one lookup is part of every address's attempt
        result = await probe_address(address, remaining_s, clock, dict(resolve_attrs))
        return dataclasses.replace(result, start_ns=lookup[0].start_ns) if lookup else result

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(probe(address)) for address in addresses]
    return [task.result() for task in tasks]


async def run_per_address(
    config: ProbeConfigBase,
    kind: str,
    attempt: int,
    resolver: Resolver,
    host: str,
    body: AddressBody,
) -> list[ProbeResult]:
    """`run_with_fallback` for kinds that probe one address: the first resolved one."""

    async def first_address(clock: PhaseClock, attrs: Attributes, addresses: Sequence[str]) -> None:
        await body(clock, attrs, addresses[0])

    return await run_with_fallback(config, kind, attempt, resolver, host, first_address)
