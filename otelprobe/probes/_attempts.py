"""One attempt per probed address: resolve once, then probe the address(es) each result is about.

Used by the kinds that resolve a host on top of `base.run_attempt`: the first result carries the
`dns.lookup` phase. `run_with_fallback` hands the body every resolved address (kinds that connect
race them with `net/happy_eyeballs.connect_first`); `run_per_address` hands it the first one (icmp).
With `ip: all` each address gets a result of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from otelprobe.net.dns.resolver import Resolver
from otelprobe.probes.base import Attributes, run_attempt, timed_resolve
from otelprobe.results import ProbeResult
from otelprobe.settings.common import ProbeConfigBase
from otelprobe.timing import PhaseClock

AddressBody = Callable[[PhaseClock, Attributes, str], Awaitable[None]]
CandidatesBody = Callable[[PhaseClock, Attributes, Sequence[str]], Awaitable[None]]


async def run_with_fallback(
    config: ProbeConfigBase,
    kind: str,
    attempt: int,
    resolver: Resolver,
    host: str,
    body: CandidatesBody,
) -> list[ProbeResult]:
    """Resolve `host` as the first attempt's `dns.lookup`, then run `body` on its candidates:
    every resolved address, or with `ip: all` one address per result."""
    resolved: list[str] = []
    per_address = config.ip == "all"

    async def first(clock: PhaseClock, attrs: Attributes) -> None:
        resolved.extend(await timed_resolve(clock, resolver, host, config.ip, attrs))
        await body(clock, attrs, resolved[:1] if per_address else resolved)

    results = [await run_attempt(kind, config.name, attempt, config.timeout_s, first)]
    if per_address:
        for address in resolved[1:]:

            async def other(clock: PhaseClock, attrs: Attributes, address: str = address) -> None:
                await body(clock, attrs, (address,))

            results.append(await run_attempt(kind, config.name, attempt, config.timeout_s, other))
    return results


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
