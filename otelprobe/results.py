"""What a probe attempt returns: plain data, no OpenTelemetry.

The same `ProbeResult` feeds span and metric emission, the CLI waterfall, JSON output and tests.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from otelprobe import names
from otelprobe.errors import ProbeError
from otelprobe.timing import AttributeValue, Phase, PhaseClock


@dataclass(frozen=True, slots=True)
class TraceRef:
    """The root span of an exported attempt, so that a retry's trace can link to it."""

    trace_id: int
    span_id: int

    @classmethod
    def new(cls) -> TraceRef:
        """Random non-zero trace and span IDs (W3C trace context: all-zero IDs are invalid)."""
        return cls(random.getrandbits(128) or 1, random.getrandbits(64) or 1)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe attempt: its phases on one monotonic clock, its outcome and its attributes."""

    kind: str
    target: str
    attempt: int
    start_ns: int
    end_ns: int
    anchor_wall_ns: int
    anchor_mono_ns: int
    phases: tuple[Phase, ...]
    error: ProbeError | None = None
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    # IDs the root span must carry when the probe already sent them in a `traceparent` header,
    # so that the target's own server spans join the probe's trace.
    trace_ref: TraceRef | None = None

    @classmethod
    def of_attempt(
        cls,
        kind: str,
        target: str,
        attempt: int,
        clock: PhaseClock,
        start_ns: int,
        error: ProbeError | None,
        attributes: dict[str, AttributeValue],
    ) -> ProbeResult:
        """The result of an attempt timed on `clock` from `start_ns` to now, with its phases.

        A failure's class and detail are also set in `attributes` (`error.type`,
        `probe.error.detail`), which the caller may still hold: every failed result carries them.
        """
        end_ns = clock.now_ns()
        if error is not None:
            attributes[names.ERROR_TYPE] = error.error_type
            attributes[names.PROBE_ERROR_DETAIL] = error.detail
        return cls(
            kind=kind,
            target=target,
            attempt=attempt,
            start_ns=start_ns,
            end_ns=end_ns,
            anchor_wall_ns=clock.anchor_wall_ns,
            anchor_mono_ns=clock.anchor_mono_ns,
            phases=clock.sorted_phases(),
            error=error,
            attributes=attributes,
        )

    @property
    def success(self) -> bool:
        return self.error is None

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def to_epoch_ns(self, mono_ns: int) -> int:
        return self.anchor_wall_ns + (mono_ns - self.anchor_mono_ns)

    def phase(self, name: str) -> Phase | None:
        """The first phase called `name`, if it happened."""
        return next((p for p in self.phases if p.name == name), None)

    def to_json(self) -> dict[str, object]:
        """The `otelprobe probe --json` object (DESIGN §7); times in ms from the attempt's start."""
        return {
            "target": self.target,
            "kind": self.kind,
            "attempt": self.attempt,
            "success": self.success,
            "error_type": self.error.error_type if self.error else None,
            "error_detail": self.error.detail if self.error else None,
            "duration_ms": round((self.end_ns - self.start_ns) / 1e6, 3),
            "phases": [
                {
                    "name": p.name,
                    "start_ms": round((p.start_ns - self.start_ns) / 1e6, 3),
                    "duration_ms": round(p.duration_ns / 1e6, 3),
                    "error_type": p.error_type,
                    **({"attributes": dict(p.attributes)} if p.attributes else {}),
                    **(
                        {
                            "events": [
                                {
                                    "name": e.name,
                                    "at_ms": round((e.time_ns - self.start_ns) / 1e6, 3),
                                    **({"attributes": dict(e.attributes)} if e.attributes else {}),
                                }
                                for e in p.events
                            ]
                        }
                        if p.events
                        else {}
                    ),
                }
                for p in self.phases
            ],
            "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in self.attributes.items()},
        }
