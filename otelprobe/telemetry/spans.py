"""ProbeResult -> one OTLP trace: a root span `probe <kind>` and a child span per phase.

The one converter from plain probe data to spans (STYLE §5): probes measure on their monotonic
clock, and here each timestamp is mapped to epoch time once and written straight into OTLP
protobuf `Span` messages (the C-backed upb runtime), which `batching.py` queues and the senders
ship. There is no SDK tracer in between: building the messages directly costs a fraction of the
SDK's span objects plus its pure-Python OTLP encoder, and a root can simply take the IDs the probe
already sent in `traceparent` (`ProbeResult.trace_ref`).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from typing import Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, SpanFlags, Status

from otelprobe.config.secrets import redact
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.telemetry import names
from otelprobe.timing import AttributeValue, Phase

SPAN_KIND_INTERNAL: Final = Span.SpanKind.SPAN_KIND_INTERNAL
SPAN_KIND_CLIENT: Final = Span.SpanKind.SPAN_KIND_CLIENT
STATUS_ERROR: Final = Status.StatusCode.STATUS_CODE_ERROR
# What the SDK's encoder writes for a span whose parent (or link) is known to be local.
_LOCAL_FLAGS: Final = int(SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK)
# No KeyValue is cached across spans: upb fuses the arena of a message appended to another, so a
# cached KeyValue would keep every span it was ever copied into alive (measured: +40 MB at 10k
# targets, and slower frees), for a saving of ~20 us per attempt.
_ERROR_KEYS: Final = frozenset({names.ERROR_TYPE, names.PROBE_ERROR_DETAIL})
_ROOT_KEYS: Final = frozenset(
    {names.PROBE_KIND, names.PROBE_TARGET, names.PROBE_SUCCESS, names.PROBE_ATTEMPT, names.OTELPROBE_VANTAGE}
)
_ROOT_ERROR_KEYS: Final = _ROOT_KEYS | _ERROR_KEYS
_PHASE_KEYS: Final = frozenset({names.PROBE_TARGET})
_PHASE_ERROR_KEYS: Final = frozenset({names.PROBE_TARGET, names.ERROR_TYPE})
_PHASE_ERROR_DETAIL_KEYS: Final = _PHASE_KEYS | _ERROR_KEYS


def any_value(value: AttributeValue) -> AnyValue:
    """One attribute value as OTLP AnyValue (bool before int: bool is an int in Python)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=redact(value))
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))


def new_trace_ref() -> TraceRef:
    """Random non-zero trace and span IDs (W3C: all-zero IDs are invalid)."""
    return TraceRef(random.getrandbits(128) or 1, random.getrandbits(64) or 1)


class SpanEncoder:
    """Turns results into OTLP spans; one per Telemetry.

    Args:
        vantage: the vantage point name (`otelprobe.vantage` on every root).
    """

    def __init__(self, vantage: str) -> None:
        self._vantage = vantage

    @staticmethod
    def _key_value(key: str, value: AttributeValue) -> KeyValue:
        return KeyValue(key=key, value=any_value(value))

    def _key_values(
        self, attributes: Mapping[str, AttributeValue], reserved: frozenset[str]
    ) -> list[KeyValue]:
        # Keys the converter sets itself win over a probe's attribute of the same name.
        return [self._key_value(key, value) for key, value in attributes.items() if key not in reserved]

    def encode(self, result: ProbeResult, link: TraceRef | None = None) -> tuple[TraceRef, list[Span]]:
        """The attempt's spans, root first, then one child per phase in start order.

        Args:
            result: one attempt.
            link: the first attempt's root when `result` is a retry.

        Returns:
            The root's IDs (`result.trace_ref` when set, else random) and the spans.
        """
        ref = result.trace_ref or new_trace_ref()
        trace_id = ref.trace_id.to_bytes(16, "big")
        root_id = ref.span_id.to_bytes(8, "big")
        offset = result.anchor_wall_ns - result.anchor_mono_ns

        root_attrs = self._key_values(
            result.attributes, _ROOT_KEYS if result.error is None else _ROOT_ERROR_KEYS
        )
        root_attrs.append(KeyValue(key=names.PROBE_KIND, value=AnyValue(string_value=result.kind)))
        root_attrs.append(KeyValue(key=names.PROBE_TARGET, value=AnyValue(string_value=result.target)))
        root_attrs.append(KeyValue(key=names.OTELPROBE_VANTAGE, value=AnyValue(string_value=self._vantage)))
        root_attrs.append(self._key_value(names.PROBE_SUCCESS, result.error is None))
        root_attrs.append(self._key_value(names.PROBE_ATTEMPT, result.attempt))
        root = Span(
            trace_id=trace_id,
            span_id=root_id,
            name=names.ROOT_SPAN_PREFIX + result.kind,
            kind=SPAN_KIND_CLIENT,
            start_time_unix_nano=result.start_ns + offset,
            end_time_unix_nano=result.end_ns + offset,
            flags=_LOCAL_FLAGS,
        )
        if result.error is not None:
            root_attrs.append(self._key_value(names.ERROR_TYPE, result.error.error_type))
            root_attrs.append(self._key_value(names.PROBE_ERROR_DETAIL, result.error.detail))
            # recording-errors.md: status description is the message; error.type is the class.
            root.status.code = STATUS_ERROR
            root.status.message = redact(result.error.message)
        root.attributes.extend(root_attrs)
        if link is not None:
            root.links.add(
                trace_id=link.trace_id.to_bytes(16, "big"),
                span_id=link.span_id.to_bytes(8, "big"),
                flags=_LOCAL_FLAGS,
            )
        spans = [root]
        for phase in _in_start_order(result.phases):
            spans.append(self._phase_span(phase, trace_id, root_id, offset, result.target))
        return ref, spans

    def _phase_span(self, phase: Phase, trace_id: bytes, root_id: bytes, offset: int, target: str) -> Span:
        if phase.error_type is None:
            reserved = _PHASE_KEYS
        else:
            reserved = _PHASE_ERROR_DETAIL_KEYS if phase.error_detail else _PHASE_ERROR_KEYS
        attrs = self._key_values(phase.attributes, reserved) if phase.attributes else []
        # Every span of a probe trace names its target, so a Collector can route whole traces to
        # sidecar replicas by attribute (collector-config/collector-loadbalancing.yaml).
        attrs.append(KeyValue(key=names.PROBE_TARGET, value=AnyValue(string_value=target)))
        span = Span(
            trace_id=trace_id,
            span_id=(random.getrandbits(64) or 1).to_bytes(8, "big"),
            parent_span_id=root_id,
            name=phase.name,
            kind=SPAN_KIND_INTERNAL,
            start_time_unix_nano=phase.start_ns + offset,
            end_time_unix_nano=phase.end_ns + offset,
            flags=_LOCAL_FLAGS,
        )
        if phase.error_type is not None:
            attrs.append(self._key_value(names.ERROR_TYPE, phase.error_type))
            if phase.error_detail:
                attrs.append(self._key_value(names.PROBE_ERROR_DETAIL, phase.error_detail))
            span.status.code = STATUS_ERROR
            span.status.message = redact(phase.error_detail or phase.error_type)
        span.attributes.extend(attrs)
        return span


def _in_start_order(phases: Sequence[Phase]) -> Sequence[Phase]:
    # Probes usually record phases in order already; sort only when they did not.
    for before, after in itertools.pairwise(phases):
        if (after.start_ns, after.end_ns) < (before.start_ns, before.end_ns):
            return sorted(phases, key=lambda p: (p.start_ns, p.end_ns))
    return phases
