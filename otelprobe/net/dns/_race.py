"""A and AAAA of one lookup through a DNS server: the state of each query, and their race.

`net/dns/resolver.py`'s DNSServerResolver asks each question as a `Query` (on its own
`DNSChannel`) and, for `ip: any` / `prefer_ip6`, waits for them with `race`, which follows RFC
8305 §3: a family that has its addresses waits `RESOLUTION_DELAY_S` for the other, then the
lookup goes on without it. Whether an answer came in time is decided by its kernel arrival
stamp, not by when a busy event loop got round to reading it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from otelprobe.errors import DNSError
from otelprobe.net.dns.channel import DNSChannel
from otelprobe.net.dns.retransmit import UDPTries
from otelprobe.settings.common import IPFamily
from otelprobe.timing import PhaseClock

RESOLUTION_DELAY_S: Final = 0.05
"""RFC 8305 §3's recommended Resolution Delay: how long one family's answer waits for the other's."""
_RESOLUTION_DELAY_NS: Final = int(RESOLUTION_DELAY_S * 1e9)


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    """One query's outcome: its addresses, or why it has none, and when its answer arrived."""

    addresses: tuple[str, ...]
    error: DNSError | None
    answered_ns: int | None


class Query:
    """One question (A or AAAA) of a resolution, with its channel's wire edges and tries."""

    def __init__(self, rdtype: str) -> None:
        self.rdtype = rdtype
        self.family: IPFamily = "ip6" if rdtype == "AAAA" else "ip4"
        # Connect and handshake phases of a stream transport belong to this lookup, not the
        # attempt: they are recorded on a scratch clock, whose first phase starts the lookup.
        self.scratch = PhaseClock()
        self.channel: DNSChannel | None = None
        self.answer: QueryAnswer | None = None
        """None while the query runs, and when it was given up (the other family sufficed)."""

    @property
    def sent_ns(self) -> int | None:
        if self.scratch.phases:
            return self.scratch.phases[0].start_ns
        return self.channel.sent_ns if self.channel is not None and self.channel.sent_ns else None

    @property
    def tries(self) -> UDPTries | None:
        return self.channel.tries if self.channel is not None else None

    @property
    def arrived_ns(self) -> int | None:
        """When this query's answer arrived, once read, even before `answer` is set."""
        return self.channel.arrived_ns if self.channel is not None else None

    @property
    def positive(self) -> bool:
        return self.answer is not None and bool(self.answer.addresses)


async def race(queries: list[Query], tasks: list[asyncio.Task[None]], deadline_ns: int) -> int | None:
    """Wait for A and AAAA as RFC 8305 §3 says; returns when the late family was given up, if it was.

    Once one family has addresses, the other gets the resolution delay from that answer's
    arrival (never past the resolver's deadline); a family without addresses (an error, or
    no data) waits for the other as long as it takes.
    """
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    first = next(query for query, task in zip(queries, tasks, strict=True) if task in done)
    others = [task for task in tasks if not task.done()]
    if not others:
        return None
    if not first.positive:
        await asyncio.wait(others)
        return None
    assert first.answer is not None
    arrived_ns = first.answer.answered_ns or PhaseClock.now_ns()
    give_up_ns = min(arrived_ns + _RESOLUTION_DELAY_NS, deadline_ns)
    wait_s = (give_up_ns - PhaseClock.now_ns()) / 1e9
    if wait_s > 0:
        await asyncio.wait(others, timeout=wait_s)
    # Late by the loop's clock is not late by the wire's: an answer that arrived before the
    # resolution delay ran out may still sit in its socket (one loop pass reads it) or in a
    # task that has yet to finish. Kernel arrival stamps decide.
    await asyncio.sleep(0)
    in_time = [
        task
        for query, task in zip(queries, tasks, strict=True)
        if not task.done() and query.arrived_ns is not None and query.arrived_ns <= give_up_ns
    ]
    if in_time:
        await asyncio.wait(in_time)
    return give_up_ns if any(not task.done() for task in others) else None
