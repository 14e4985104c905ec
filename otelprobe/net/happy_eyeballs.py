"""Connecting to a name's addresses RFC 8305 style: staggered attempts, the first to connect wins.

A probe of a name with several addresses (IPv6 and IPv4, or several of one family) must not fail
because the first one refuses or is silent while another works. `connect_first` starts a
connect to the first address, starts the next at once when one fails and otherwise after the
connection attempt delay, keeps earlier attempts running, takes the first connection and
cancels the rest. Every attempt is its own `tcp.connect` phase (timed by `connection.timed_connect`):
a failed one carries its error, a cancelled loser `probe.connect.abandoned` and no error. The
connecting kinds (tcp, tls, grpc, websocket) run their attempts through `run_with_fallback`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from typing import Final

from otelprobe import names
from otelprobe.errors import ConnectRefused, ConnectTimeout, ProbeError
from otelprobe.net.connection import TimedConnection, timed_connect
from otelprobe.timing import AttributeValue, Phase, PhaseClock

Attributes = dict[str, AttributeValue]  # as probes.base names it; net does not import probes

CONNECTION_ATTEMPT_DELAY_S: Final = 0.25
"""RFC 8305 §5's recommended wait before the next address is tried alongside a silent one."""

PROBE_CONNECT_ABANDONED: Final = names.PROBE_CONNECT_ABANDONED


def connect_order(addresses: Iterable[str], source_address: str | None = None) -> list[str]:
    """The order to try `addresses` in: the resolver's, with families alternating (RFC 8305 §4).

    The first address's family leads (the resolver put the preferred one first). With a source
    address only its family can connect, so the others are dropped when any of that family exist.
    """
    unique = list(dict.fromkeys(addresses))
    if source_address:
        same = [a for a in unique if _is_v6(a) == _is_v6(source_address)]
        unique = same or unique
    if not unique:
        return unique
    lead_v6 = _is_v6(unique[0])
    lead = [a for a in unique if _is_v6(a) == lead_v6]
    other = [a for a in unique if _is_v6(a) != lead_v6]
    return [a for pair in itertools.zip_longest(lead, other) for a in pair if a is not None]


async def connect_first(
    clock: PhaseClock,
    addresses: Sequence[str],
    port: int,
    *,
    source_address: str | None = None,
    attempt_delay_s: float = CONNECTION_ATTEMPT_DELAY_S,
    attrs: Attributes | None = None,
) -> TimedConnection:
    """Connect to the first of `addresses` that answers, each attempt a `tcp.connect` phase.

    Args:
        clock: the attempt's clock; every connect attempt becomes one phase on it.
        addresses: IP literals in preference order (`connect_order` interleaves the families).
        port: the port on every address.
        source_address: local IP to connect from; only addresses of its family are tried.
        attempt_delay_s: how long an attempt runs alone before the next one starts beside it.
        attrs: the root attributes; `network.peer.address` is set to the address connected to,
            or when all fail to the one whose error is raised.

    Returns:
        The winning connection; every other attempt is cancelled or closed.

    Raises:
        ConnectRefused / ConnectTimeout: every address failed; the most telling error is raised
            (`most_telling`). The probe's deadline cancels the race like any single connect, and
            each attempt still open then ends with connect_timeout.
    """
    candidates = connect_order(addresses, source_address)
    if attrs is not None:
        attrs[names.NETWORK_PEER_ADDRESS] = candidates[0]
    if len(candidates) == 1:
        return await timed_connect(clock, candidates[0], port, source_address=source_address)
    race = _Race(clock, port, source_address)
    winner = await race.run(candidates, attempt_delay_s)
    if winner is not None:
        if attrs is not None:
            attrs[names.NETWORK_PEER_ADDRESS] = winner.address
        return winner.task.result()
    failures = sorted(race.failures, key=lambda failure: candidates.index(failure[0]))
    address, error = most_telling(failures)
    if attrs is not None:
        attrs[names.NETWORK_PEER_ADDRESS] = address
    tried = ", ".join(f"{a} {e.detail}" for a, e in failures)
    raise type(error)(error.detail, f"{error} (tried {len(failures)} addresses: {tried})") from error


def most_telling(failures: Sequence[tuple[str, ProbeError]]) -> tuple[str, ProbeError]:
    """The failure that says most about the target; among equals the first, the preferred address.

    A refusal is an answer from the target's host (the port is closed), so it outranks silence
    (connect_timeout), which outranks `unreachable`: a local "no route" most often means this
    prober lacks that family, and says nothing about the target.
    """

    def rank(failure: tuple[str, ProbeError]) -> int:
        error = failure[1]
        if isinstance(error, ConnectRefused):
            return 0
        if isinstance(error, ConnectTimeout) and error.detail != "unreachable":
            return 1
        return 2 if isinstance(error, ConnectTimeout) else 3

    return min(failures, key=rank)


class _Attempt:
    """One connect attempt on its own clock; its phase joins the probe's clock once it has ended."""

    __slots__ = ("address", "clock", "task")

    def __init__(self, address: str, port: int, source_address: str | None) -> None:
        self.address = address
        self.clock = PhaseClock()
        self.task = asyncio.create_task(
            timed_connect(self.clock, address, port, source_address=source_address)
        )

    def phases(self, abandoned: bool) -> Sequence[Phase]:
        if not abandoned:
            return self.clock.phases
        # A loser did not fail, it was cut short: drop the timeout its cancellation recorded.
        return [
            dataclasses.replace(
                p,
                error_type=None,
                error_detail=None,
                attributes={**p.attributes, PROBE_CONNECT_ABANDONED: True},
            )
            for p in self.clock.phases
        ]


class _Race:
    """Staggered connect attempts to one port: the first to connect wins, the rest are cancelled."""

    def __init__(self, clock: PhaseClock, port: int, source_address: str | None) -> None:
        self._clock = clock
        self._port = port
        self._source_address = source_address
        self._running: dict[asyncio.Task[TimedConnection], _Attempt] = {}
        self.failures: list[tuple[str, ProbeError]] = []
        """(address, error) of every failed attempt, in the order they failed."""
        self.winner: _Attempt | None = None

    async def run(self, candidates: Sequence[str], delay_s: float) -> _Attempt | None:
        """The winning attempt, or None when every address failed."""
        queue = collections.deque(candidates)
        try:
            try:
                while self.winner is None and (queue or self._running):
                    if queue:
                        attempt = _Attempt(queue.popleft(), self._port, self._source_address)
                        self._running[attempt.task] = attempt
                        # One loop step: the task's first step sends the SYN (and starts its phase)
                        # before the delay to the next attempt starts counting.
                        await asyncio.sleep(0)
                    # Wait for an outcome, but no longer than the delay while addresses remain.
                    done, _ = await asyncio.wait(
                        self._running, timeout=delay_s if queue else None, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in [t for t in self._running if t in done]:  # start order: preferred wins ties
                        self._settle(task)
            finally:
                await self._cancel_rest()
        except BaseException:
            # A bug, or the deadline while the losers were being cancelled: hand nothing out.
            if self.winner is not None:
                self.winner.task.result().close()
            raise
        return self.winner

    def _settle(self, task: asyncio.Task[TimedConnection]) -> None:
        """Record how a finished attempt ended; the first to connect becomes the winner."""
        attempt = self._running.pop(task)
        error = task.exception()
        if error is None and self.winner is None:
            self.winner = attempt
            self._clock.adopt(attempt.phases(abandoned=False))
        elif error is None:
            task.result().close()
            self._clock.adopt(attempt.phases(abandoned=True))
        elif isinstance(error, ProbeError):
            self.failures.append((attempt.address, error))
            self._clock.adopt(attempt.phases(abandoned=False))
        else:
            raise error  # not a connect failure: a bug, to be seen

    async def _cancel_rest(self) -> None:
        """Cancel the attempts still running and record how each ended.

        With a winner they are abandoned; at the probe's deadline they keep the connect_timeout
        their cancellation recorded, as a single connect would.
        """
        running, self._running = self._running, {}
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
        for task, attempt in running.items():
            if not task.cancelled() and task.exception() is None:
                task.result().close()  # it connected while being cancelled
                self._clock.adopt(attempt.phases(abandoned=True))
            elif not task.cancelled() and isinstance(task.exception(), ProbeError):
                self._clock.adopt(attempt.phases(abandoned=False))
            else:
                self._clock.adopt(attempt.phases(abandoned=self.winner is not None))


def _is_v6(address: str) -> bool:
    return ":" in address  # as connection.timed_connect picks the socket family
