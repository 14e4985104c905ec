"""One attempt per probed address: resolve once, probe the first address, and with `ip: all` the rest.

Used by the icmp, grpc and websocket kinds on top of `base.run_attempt`: the first result carries
the `dns.lookup` phase, each further address of an `ip: all` target gets its own result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from otelprobe.config.common import ProbeConfigBase
from otelprobe.probes.base import Attributes, run_attempt, timed_resolve
from otelprobe.probes.resolver import Resolver
from otelprobe.results import ProbeResult
from otelprobe.timing import PhaseClock

AddressBody = Callable[[PhaseClock, Attributes, str], Awaitable[None]]


async def run_per_address(
    config: ProbeConfigBase,
    kind: str,
    attempt: int,
    resolver: Resolver,
    host: str,
    body: AddressBody,
) -> list[ProbeResult]:
    """Resolve `host` as the first attempt's `dns.lookup` phase, then run `body` per address."""
    resolved: list[str] = []

    async def first(clock: PhaseClock, attrs: Attributes) -> None:
        resolved.extend(await timed_resolve(clock, resolver, host, config.ip, attrs))
        await body(clock, attrs, resolved[0])

    results = [await run_attempt(kind, config.name, attempt, config.timeout_s, first)]
    if config.ip == "all":
        for address in resolved[1:]:

            async def other(clock: PhaseClock, attrs: Attributes, address: str = address) -> None:
                await body(clock, attrs, address)

            results.append(await run_attempt(kind, config.name, attempt, config.timeout_s, other))
    return results
