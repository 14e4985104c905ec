"""ProbeResult -> one OpenTelemetry trace: a root span `probe <kind>` and a child span per phase.

The one converter from plain probe data to spans (STYLE §5): probes measure on their monotonic
clock, and here each timestamp is mapped to epoch time once and given to the SDK explicitly.
`pipeline.Telemetry` owns the tracer; this module needs only a tracer whose provider uses
`ProbeIdGenerator`, so that a root can carry the IDs the probe already sent in `traceparent`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue as OTelAttributeValue

from otelprobe.config.secrets import redact
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.telemetry import names
from otelprobe.timing import AttributeValue, Phase

# The IDs the next root span must take; set only around the root's start_span call.
_forced_root_ids: contextvars.ContextVar[TraceRef | None] = contextvars.ContextVar(
    "otelprobe_forced_root_ids", default=None
)


class ProbeIdGenerator(RandomIdGenerator):
    """Random IDs, except for a root whose IDs were already sent on the wire in `traceparent`.

    The SDK asks for a trace ID and then a span ID when it starts a root span; while
    `_forced_root_ids` holds a TraceRef both come from it, so the exported root is exactly the
    span the target's server saw as its parent.
    """

    def generate_trace_id(self) -> int:
        forced = _forced_root_ids.get()
        return forced.trace_id if forced is not None else super().generate_trace_id()

    def generate_span_id(self) -> int:
        forced = _forced_root_ids.get()
        return forced.span_id if forced is not None else super().generate_span_id()


@contextmanager
def _root_ids(ref: TraceRef | None) -> Iterator[None]:
    token = _forced_root_ids.set(ref)
    try:
        yield
    finally:
        _forced_root_ids.reset(token)


def _otel_attributes(attributes: Mapping[str, AttributeValue]) -> dict[str, OTelAttributeValue]:
    # Tuples are valid OTel sequence attributes; strings may carry a secret that came from config.
    return {k: redact(v) if isinstance(v, str) else v for k, v in attributes.items()}


def root_attributes(result: ProbeResult, vantage: str) -> dict[str, OTelAttributeValue]:
    """The root span's attributes (DESIGN §3): the probe's own keys plus the protocol's semconv."""
    attrs = _otel_attributes(result.attributes)
    attrs.update(
        {
            names.PROBE_KIND: result.kind,
            names.PROBE_TARGET: result.target,
            names.PROBE_SUCCESS: result.success,
            names.PROBE_ATTEMPT: result.attempt,
            names.OTELPROBE_VANTAGE: vantage,
        }
    )
    if result.error is not None:
        attrs[names.ERROR_TYPE] = result.error.error_type
        attrs[names.PROBE_ERROR_DETAIL] = result.error.detail
    return attrs


def _phase_attributes(phase: Phase, target: str) -> dict[str, OTelAttributeValue]:
    attrs = _otel_attributes(phase.attributes)
    # Every span of a probe trace names its target, so a Collector can route whole traces to
    # sidecar replicas by attribute (collector-config/collector-loadbalancing.yaml).
    attrs[names.PROBE_TARGET] = target
    if phase.error_type is not None:
        attrs[names.ERROR_TYPE] = phase.error_type
        if phase.error_detail:
            attrs[names.PROBE_ERROR_DETAIL] = phase.error_detail
    return attrs


def emit_result_spans(
    tracer: trace.Tracer,
    result: ProbeResult,
    vantage: str,
    link: TraceRef | None = None,
) -> TraceRef:
    """Export `result` as one trace and return its root, for a retry's link.

    Args:
        tracer: from a TracerProvider built with `ProbeIdGenerator` (required if `result.trace_ref`).
        result: the attempt; its phases become child spans in start order.
        vantage: the vantage point name (`otelprobe.vantage`).
        link: the first attempt's root when this attempt is a retry.

    Returns:
        The root span's IDs (equal to `result.trace_ref` when that is set).

    Raises:
        RuntimeError: `result.trace_ref` is set but the tracer's provider cannot honour it.
    """
    links = []
    if link is not None:
        links.append(
            Link(
                SpanContext(
                    link.trace_id, link.span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
                )
            )
        )
    # An empty Context makes this a root whatever span is current in the caller.
    with _root_ids(result.trace_ref):
        root = tracer.start_span(
            names.ROOT_SPAN_PREFIX + result.kind,
            context=Context(),
            kind=SpanKind.CLIENT,
            attributes=root_attributes(result, vantage),
            links=links,
            start_time=result.to_epoch_ns(result.start_ns),
        )
    ctx = root.get_span_context()
    ref = TraceRef(ctx.trace_id, ctx.span_id)
    if result.trace_ref is not None and ref != result.trace_ref and ctx.is_valid:
        root.end(end_time=result.to_epoch_ns(result.end_ns))
        raise RuntimeError("the tracer provider must use ProbeIdGenerator to honour ProbeResult.trace_ref")
    parent = trace.set_span_in_context(root, Context())
    for phase in sorted(result.phases, key=lambda p: (p.start_ns, p.end_ns)):
        child = tracer.start_span(
            phase.name,
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=_phase_attributes(phase, result.target),
            start_time=result.to_epoch_ns(phase.start_ns),
        )
        if phase.error_type is not None:
            child.set_status(Status(StatusCode.ERROR, redact(phase.error_detail or phase.error_type)))
        child.end(end_time=result.to_epoch_ns(phase.end_ns))
    if result.error is not None:
        # recording-errors.md: status description is the message; error.type is the class.
        root.set_status(Status(StatusCode.ERROR, redact(result.error.message)))
    root.end(end_time=result.to_epoch_ns(result.end_ns))
    return ref
