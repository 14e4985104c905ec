"""The phase clock: one monotonic clock per probe attempt, marked at socket events.

Probes record plain `Phase` values here; telemetry converts them into spans afterwards, mapping
monotonic timestamps to epoch time once, through the anchor taken when the clock was created.
The record only grows through the clock's own operations (`start`/`phase`/`record`, `adopt`,
`annotate`); what it holds is read as a tuple.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Final

from otelprobe import names
from otelprobe.errors import ConnectTimeout, DNSError, ProbeError, ProbeTimeout

AttributeValue = str | bool | int | float | tuple[str, ...] | tuple[int, ...] | tuple[float, ...]


@dataclass(frozen=True, slots=True)
class PhaseEvent:
    """Something that happened at one instant inside a phase (a span event), e.g. a retransmit."""

    name: str
    time_ns: int
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase of an attempt: [start_ns, end_ns] on the attempt's monotonic clock."""

    name: str
    start_ns: int
    end_ns: int
    error_type: str | None = None
    error_detail: str | None = None
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    events: tuple[PhaseEvent, ...] = ()

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def duration_s(self) -> float:
        return self.duration_ns / 1e9

    @property
    def failed(self) -> bool:
        return self.error_type is not None


# A deadline that expires inside one of these phases is reported as that phase's failure class;
# anywhere else it is the generic `timeout` (DESIGN §4: deadline hit after connecting).
_TIMEOUT_CLASS: Final[Mapping[str, tuple[type[ProbeError], str]]] = {
    names.SPAN_DNS_LOOKUP: (DNSError, "resolver_timeout"),
    names.SPAN_TCP_CONNECT: (ConnectTimeout, "connect_timeout"),
}


def timeout_error_for(phase_name: str | None) -> ProbeError:
    """The ProbeError for a deadline that expired while `phase_name` was open."""
    cls, detail = _TIMEOUT_CLASS.get(phase_name or "", (ProbeTimeout, ""))
    if cls is ProbeTimeout:
        where = phase_name or "probe"
        return ProbeTimeout(
            f"deadline_exceeded_in_{where.replace('.', '_')}", f"deadline exceeded in {where}"
        )
    return cls(detail, f"deadline exceeded in {phase_name}")


class OpenPhase:
    """A phase that has started and not ended; attributes may be added before it ends."""

    __slots__ = ("_clock", "_start_ns", "attributes", "events", "name")

    def __init__(self, clock: PhaseClock, name: str, start_ns: int) -> None:
        self._clock = clock
        self.name = name
        self._start_ns = start_ns
        self.attributes: dict[str, AttributeValue] = {}
        self.events: list[PhaseEvent] = []

    @property
    def start_ns(self) -> int:
        return self._start_ns

    def move_start(self, start_ns: int | None) -> None:
        """The phase really began at `start_ns`, an edge known only once it was open (the first
        send, a query's send stamp); None keeps the start it has."""
        if start_ns is not None:
            self._start_ns = start_ns

    def add_event(
        self, name: str, time_ns: int, attributes: Mapping[str, AttributeValue] | None = None
    ) -> None:
        """Note an instant inside the phase (on the same monotonic clock), e.g. a retransmit."""
        self.events.append(PhaseEvent(name, time_ns, dict(attributes or {})))

    def fail_at_deadline_with(self, error: ProbeError) -> None:
        """See PhaseClock.fail_at_deadline_with: for code that holds the phase, not the clock."""
        self._clock.fail_at_deadline_with(error)

    def end(self, end_ns: int | None = None, error: ProbeError | None = None) -> Phase:
        return self._clock._close(self, end_ns if end_ns is not None else time.perf_counter_ns(), error)


class PhaseClock:
    """Records the phases of one attempt. Not thread-safe; one per attempt."""

    __slots__ = ("_deadline_error", "_open", "_phases", "anchor_mono_ns", "anchor_wall_ns")

    def __init__(self) -> None:
        # Take both anchors back to back; epoch = anchor_wall + (mono - anchor_mono).
        self.anchor_wall_ns = time.time_ns()
        self.anchor_mono_ns = time.perf_counter_ns()
        self._phases: list[Phase] = []
        self._open: list[OpenPhase] = []
        self._deadline_error: ProbeError | None = None

    @property
    def phases(self) -> tuple[Phase, ...]:
        """The phases recorded so far, in the order they ended (or were adopted)."""
        return tuple(self._phases)

    def mark(self) -> int:
        """Where the record stands: `annotate(mark, ...)` then reaches only the phases recorded since."""
        return len(self._phases)

    def adopt(self, phases: Iterable[Phase]) -> None:
        """Add phases measured on another clock of the same attempt (perf_counter is one clock per
        process): a racing connect attempt's, or the one lookup shared by `ip: all`'s addresses."""
        self._phases.extend(phases)

    def annotate(self, since: int, attributes: Mapping[str, AttributeValue]) -> None:
        """Give `attributes` to every phase recorded since `mark()` returned `since` (e.g. a hop
        number to the phases of the shared helpers, which do not know it)."""
        for index in range(since, len(self._phases)):
            phase = self._phases[index]
            if not attributes.items() <= phase.attributes.items():
                self._phases[index] = replace(phase, attributes={**phase.attributes, **attributes})

    def fail_at_deadline_with(self, error: ProbeError) -> None:
        """If the attempt's deadline cuts it from now on, it failed with `error`, not a timeout
        class: e.g. a DNS exchange that so far got only invalid answers. A probe's own earlier
        deadline would say so too, but when the loop runs late both deadlines fire together and
        the attempt's wins; this keeps the class independent of the loop's lateness."""
        self._deadline_error = error

    def error_at_deadline(self, phase_name: str | None) -> ProbeError:
        """What an attempt cut by its deadline inside `phase_name` failed with."""
        return self._deadline_error or timeout_error_for(phase_name)

    @staticmethod
    def now_ns() -> int:
        return time.perf_counter_ns()

    def to_epoch_ns(self, mono_ns: int) -> int:
        return self.anchor_wall_ns + (mono_ns - self.anchor_mono_ns)

    def start(self, name: str, start_ns: int | None = None) -> OpenPhase:
        """Open a phase whose end is marked elsewhere (e.g. the first read ends `http.ttfb`)."""
        opened = OpenPhase(self, name, start_ns if start_ns is not None else time.perf_counter_ns())
        self._open.append(opened)
        return opened

    @contextmanager
    def phase(self, name: str) -> Iterator[OpenPhase]:
        """Time a block as one phase; an escaping error is recorded on the phase, then re-raised.

        A deadline (cancellation) inside the block is recorded as that phase's timeout class.
        """
        opened = self.start(name)
        try:
            yield opened
        except ProbeError as exc:
            opened.end(error=exc)
            raise
        except (asyncio.CancelledError, TimeoutError):
            opened.end(error=self.error_at_deadline(name))
            raise
        except BaseException:
            # An unmapped exception is a bug; still close the phase so the record stays consistent.
            opened.end()
            raise
        else:
            if opened in self._open:
                opened.end()

    def record(
        self,
        name: str,
        start_ns: int,
        end_ns: int,
        error: ProbeError | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
        events: Sequence[PhaseEvent] = (),
    ) -> Phase:
        """Record a phase measured elsewhere (e.g. from kernel timestamps); events in time order."""
        phase = Phase(
            name,
            start_ns,
            end_ns,
            error.error_type if error else None,
            error.detail if error else None,
            dict(attributes or {}),
            tuple(sorted(events, key=lambda event: event.time_ns)) if events else (),
        )
        self._phases.append(phase)
        return phase

    @property
    def open_phase(self) -> str | None:
        """The innermost phase still open, if any."""
        return self._open[-1].name if self._open else None

    def close_open(self, error: ProbeError | None) -> None:
        """Close every phase still open (at a deadline or an error), innermost first."""
        now = time.perf_counter_ns()
        for opened in reversed(list(self._open)):
            opened.end(now, error)

    def _close(self, opened: OpenPhase, end_ns: int, error: ProbeError | None) -> Phase:
        if opened in self._open:
            self._open.remove(opened)
        return self.record(opened.name, opened.start_ns, end_ns, error, opened.attributes, opened.events)

    def sorted_phases(self) -> tuple[Phase, ...]:
        return tuple(sorted(self._phases, key=lambda p: (p.start_ns, p.end_ns)))
