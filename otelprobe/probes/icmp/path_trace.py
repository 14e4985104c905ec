"""`traceroute_on_failure`: a path trace to the peer of an attempt that failed at the network level.

The HTTP and TCP probes pass their finished results through `attach_path_traces`; it runs
`traceroute.trace_path` towards the address the failed connection went to and adds the hops to
the same result as `traceroute.hop` phases, so they show in the attempt's own trace. The result's
outcome, error and end are left as they were: the trace runs after the attempt and does not
count towards its latency.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Final

from otelprobe import names
from otelprobe.probes.icmp._socket import ICMPNotPermittedError
from otelprobe.probes.icmp.traceroute import trace_path
from otelprobe.results import ProbeResult
from otelprobe.settings.common import ProbeConfigBase
from otelprobe.timing import AttributeValue, PhaseClock

logger = logging.getLogger(__name__)

MIN_BUDGET_S: Final = 0.5
"""A trace gets at least this long, even past the attempt's deadline: the attempts that most need
a trace (no SYN-ACK before the deadline) end with none of their deadline left. Well inside the
scheduler's 1 s safety margin (scheduler.SAFETY_MARGIN_S)."""
MAX_BUDGET_S: Final = 2.0
"""At most this long: every TTL is probed at once, so this bounds the wait for the slowest hop."""
MAX_HOPS: Final = 30

# Failures about reaching the peer, where the path may be the cause.
_NETWORK_CLASSES: Final = frozenset({"connect_refused", "connect_timeout", "timeout"})
_NETWORK_DETAILS: Final = frozenset(
    {
        "connection_reset",
        "reset_mid_body",
        "handshake_reset",
        "handshake_eof",
        "server_disconnected",
        "incomplete_body",
        "unexpected_eof",
        "read_error",
    }
)


def wants_path_trace(result: ProbeResult) -> bool:
    """The attempt failed in a way a path trace can explain."""
    error = result.error
    if error is None:
        return False
    return error.error_type in _NETWORK_CLASSES or error.detail in _NETWORK_DETAILS


def peer_address(result: ProbeResult) -> str | None:
    """The IP the attempt last connected (or tried to connect) to."""
    for phase in reversed(result.phases):
        if phase.name == names.SPAN_TCP_CONNECT:
            address = phase.attributes.get(names.NETWORK_PEER_ADDRESS)
            if isinstance(address, str):
                return address
    address = result.attributes.get(names.NETWORK_PEER_ADDRESS)
    return address if isinstance(address, str) else None


async def attach_path_traces(config: ProbeConfigBase, results: Sequence[ProbeResult]) -> list[ProbeResult]:
    """With `traceroute_on_failure`, each network-level failure gets its path trace; others pass.

    A trace waits for its hops until the attempt's deadline, but at least MIN_BUDGET_S and at most
    MAX_BUDGET_S. The traces of several failed addresses (`ip: all`) run concurrently. A trace
    that cannot run (no raw socket: ICMPNotPermittedError) is noted as `probe.traceroute.error`,
    never raised.
    """
    if not config.traceroute_on_failure or not any(wants_path_trace(r) for r in results):
        return list(results)
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_with_trace(config, result)) for result in results]
    return [task.result() for task in tasks]


async def _with_trace(config: ProbeConfigBase, result: ProbeResult) -> ProbeResult:
    destination = peer_address(result) if wants_path_trace(result) else None
    if destination is None:
        return result
    deadline_ns = result.start_ns + int(config.timeout_s * 1e9)
    left_s = (deadline_ns - PhaseClock.now_ns()) / 1e9
    budget_s = min(max(left_s, MIN_BUDGET_S), MAX_BUDGET_S)
    attrs: dict[str, AttributeValue] = {**result.attributes, names.PROBE_TRACEROUTE_DESTINATION: destination}
    clock = PhaseClock()
    try:
        hops = await trace_path(destination, max_hops=MAX_HOPS, timeout_s=budget_s, clock=clock)
    except (ICMPNotPermittedError, OSError) as exc:
        # No raw socket, or the kernel refused the probes themselves (e.g. no route at all).
        logger.debug("%s: no path trace to %s: %s", config.name, destination, exc)
        attrs[names.PROBE_TRACEROUTE_ERROR] = str(exc)
        return dataclasses.replace(result, attributes=attrs)
    attrs[names.PROBE_TRACEROUTE_HOPS] = len(hops)
    # Same monotonic clock (perf_counter) as the attempt's, so the hops sit on its timeline.
    phases = tuple(sorted((*result.phases, *hops), key=lambda p: (p.start_ns, p.end_ns)))
    return dataclasses.replace(result, phases=phases, attributes=attrs)
