"""ProbeResult -> one OTLP trace: a root span `probe <kind>` and a child span per phase.

The one converter from plain probe data to spans (STYLE §5): probes measure on their monotonic
clock, and here each timestamp is mapped to epoch time once and each span is written straight
as OTLP protobuf wire bytes (a serialized `Span`), which `batching.py` queues and concatenates
into requests for the senders. There is no SDK tracer and no protobuf message in between: the
SDK's span objects and pure-Python encoder cost several times more, and even upb messages cost
a Python call per field and per attribute; here keys, names and the attributes every span of an
attempt shares are encoded once. A root can simply take the IDs the probe already sent in
`traceparent` (`ProbeResult.trace_ref`). `tests/telemetry/test_span_wire.py` checks the bytes
against the messages the protobuf classes build.
"""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Mapping, Sequence
from typing import Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue

from otelprobe import names
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.settings.secrets import redact
from otelprobe.telemetry.protowire import ONE_BYTE_LENGTHS, length_delimited, varint
from otelprobe.timing import AttributeValue, Phase, PhaseEvent

# Wire tags (field number << 3 | wire type) of the OTLP trace messages written here.
_TRACE_ID: Final = b"\x0a\x10"  # Span.trace_id (1), always 16 bytes
_SPAN_ID: Final = b"\x12\x08"  # Span.span_id (2), always 8 bytes
_PARENT_ID: Final = b"\x22\x08"  # Span.parent_span_id (4)
_NAME: Final = b"\x2a"  # Span.name (5)
_KIND_INTERNAL: Final = b"\x30\x01"  # Span.kind (6) = SPAN_KIND_INTERNAL
_KIND_CLIENT: Final = b"\x30\x03"  # SPAN_KIND_CLIENT
_TIMES: Final = struct.Struct("<BQBQ")  # start_time_unix_nano (7), end_time_unix_nano (8): fixed64
_ATTRIBUTE: Final = b"\x4a"  # Span.attributes (9)
_EVENT: Final = b"\x5a"  # Span.events (11)
_EVENT_TIME: Final = struct.Struct("<BQ")  # Event.time_unix_nano (1): fixed64
_EVENT_NAME: Final = b"\x12"  # Event.name (2)
_EVENT_ATTRIBUTE: Final = 0x1A  # Event.attributes (3): same KeyValue as Span.attributes, other tag
_LINK: Final = b"\x6a"  # Span.links (13)
_STATUS: Final = b"\x7a"  # Span.status (15)
# Span.flags (16, fixed32) and Link.flags (6): what the SDK's encoder writes for a parent (or
# link) known to be local, SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK (0x100).
_FLAGS: Final = b"\x85\x01\x00\x01\x00\x00"
_LINK_FLAGS: Final = b"\x35\x00\x01\x00\x00"
_STATUS_MESSAGE: Final = b"\x12"  # Status.message (2)
_STATUS_ERROR: Final = b"\x18\x02"  # Status.code (3) = STATUS_CODE_ERROR
_KEY: Final = b"\x0a"  # KeyValue.key (1)
_VALUE: Final = b"\x12"  # KeyValue.value (2)
_STRING: Final = b"\x0a"  # AnyValue.string_value (1); also ArrayValue.values (1)
_TRUE: Final = b"\x10\x01"  # AnyValue.bool_value (2)
_FALSE: Final = b"\x10\x00"
_INT: Final = b"\x18"  # AnyValue.int_value (3), varint
_DOUBLE: Final = struct.Struct("<Bd")  # AnyValue.double_value (4), fixed64
_ARRAY: Final = b"\x2a"  # AnyValue.array_value (5)
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
# `KeyValue.value` after its tag (length, AnyValue) for the common values, and the tag and length
# of a `Span.attributes` entry, by the entry's size.
_SHORT_STRINGS: Final = tuple(bytes((n + 2, 0x0A, n)) for n in range(126))  # + the UTF-8 bytes
_SMALL_INTS: Final = tuple(b"\x02" + _INT + bytes((n,)) for n in range(128))
_INT_HEADS: Final = tuple(bytes((n + 1,)) + _INT for n in range(11))  # + the varint
_BOOLS: Final = (b"\x02" + _FALSE, b"\x02" + _TRUE)
_ATTRIBUTE_HEADS: Final = tuple(_ATTRIBUTE + bytes((n,)) for n in range(128))
# Attribute keys and span names are code constants; the cap only guards against a caller that
# makes them up per attempt.
_CACHE_MAX: Final = 4096

_ERROR_KEYS: Final = frozenset({names.ERROR_TYPE, names.PROBE_ERROR_DETAIL})
_ROOT_KEYS: Final = frozenset(
    {names.PROBE_KIND, names.PROBE_TARGET, names.PROBE_SUCCESS, names.PROBE_ATTEMPT, names.OTELPROBE_VANTAGE}
)
_ROOT_ERROR_KEYS: Final = _ROOT_KEYS | _ERROR_KEYS
_PHASE_KEYS: Final = frozenset({names.PROBE_TARGET})
_PHASE_ERROR_KEYS: Final = frozenset({names.PROBE_TARGET, names.ERROR_TYPE})
_PHASE_ERROR_DETAIL_KEYS: Final = _PHASE_KEYS | _ERROR_KEYS


def any_value(value: AttributeValue) -> AnyValue:
    """One attribute value as an OTLP AnyValue message (bool before int: bool is an int in Python)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=redact(value))
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))


def _value_field(string: bytes) -> bytes:
    """Length and AnyValue of a long string value."""
    return length_delimited(b"", length_delimited(_STRING, string))


def _int64(value: int) -> bytes:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"attribute value {value} is out of the int64 range")
    # int64 varints carry negative values as their 64-bit two's complement (ten bytes).
    return _INT + varint(value if value >= 0 else value + (1 << 64))


def encode_any_value(value: AttributeValue) -> bytes:
    """One attribute value as serialized AnyValue (strings redacted, as in `any_value`)."""
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    if isinstance(value, str):
        return length_delimited(_STRING, redact(value).encode())
    if isinstance(value, int):
        return _int64(value)
    if isinstance(value, float):
        return _DOUBLE.pack(0x21, value)
    values = b"".join([length_delimited(_STRING, encode_any_value(v)) for v in value])
    return length_delimited(_ARRAY, values)


class SpanEncoder:
    """Turns results into serialized OTLP spans; one per Telemetry.

    Args:
        vantage: the vantage point name (`otelprobe.vantage` on every root).
    """

    def __init__(self, vantage: str) -> None:
        self._vantage = self._string_attribute(names.OTELPROBE_VANTAGE, vantage)
        self._keys: dict[str, bytes] = {}
        self._heads: dict[str, bytes] = {}
        self._success = self._attribute(names.PROBE_SUCCESS, True)
        self._failure = self._attribute(names.PROBE_SUCCESS, False)
        self._tenants: dict[str, bytes] = {}

    def set_target_tenants(self, tenants: Mapping[str, str]) -> None:
        """`otelprobe.tenant` on every span of these targets (target name -> tenant); {} for none."""
        encoded = {
            tenant: self._string_attribute(names.OTELPROBE_TENANT, tenant) for tenant in set(tenants.values())
        }
        self._tenants = {target: encoded[tenant] for target, tenant in tenants.items()}

    def _key(self, key: str) -> bytes:
        """`KeyValue.key` plus the tag of `KeyValue.value`, once per key."""
        head = length_delimited(_KEY, key.encode()) + _VALUE
        if len(self._keys) < _CACHE_MAX:
            self._keys[key] = head
        return head

    def _attribute(self, key: str, value: AttributeValue) -> bytes:
        """One `Span.attributes` entry: tag, length and the KeyValue (strings redacted)."""
        head = self._keys.get(key) or self._key(key)
        # The common shapes skip the general encoder: short strings, small ints, bools.
        if type(value) is str:
            data = redact(value).encode()
            size = len(data)
            tail = _SHORT_STRINGS[size] + data if size < len(_SHORT_STRINGS) else _value_field(data)
        elif type(value) is int and 0 <= value <= _INT64_MAX:
            if value < len(_SMALL_INTS):
                tail = _SMALL_INTS[value]
            else:
                encoded = varint(value)
                tail = _INT_HEADS[len(encoded)] + encoded
        elif type(value) is bool:
            tail = _BOOLS[value]
        else:
            any_value = encode_any_value(value)
            size = len(any_value)
            tail = (ONE_BYTE_LENGTHS[size] if size < 128 else varint(size)) + any_value
        size = len(head) + len(tail)
        return (_ATTRIBUTE_HEADS[size] if size < 128 else _ATTRIBUTE + varint(size)) + head + tail

    def _string_attribute(self, key: str, value: str) -> bytes:
        # Names the converter sets itself (kind, target, vantage) are not redacted, as before.
        value_bytes = length_delimited(_STRING, value.encode())
        kv = length_delimited(_KEY, key.encode()) + length_delimited(_VALUE, value_bytes)
        return length_delimited(_ATTRIBUTE, kv)

    def _attributes(self, attributes: Mapping[str, AttributeValue], reserved: frozenset[str]) -> list[bytes]:
        # Keys the converter sets itself win over a probe's attribute of the same name.
        attribute = self._attribute
        return [attribute(key, value) for key, value in attributes.items() if key not in reserved]

    def _head(self, name: str, kind: bytes) -> bytes:
        """`Span.name` and `Span.kind`, adjacent on the wire, once per span name."""
        head = self._heads.get(name)
        if head is None:
            head = length_delimited(_NAME, name.encode()) + kind
            if len(self._heads) < _CACHE_MAX:
                self._heads[name] = head
        return head

    def encode(self, result: ProbeResult, link: TraceRef | None = None) -> tuple[TraceRef, list[bytes]]:
        """The attempt's spans, root first, then one child per phase in start order.

        Args:
            result: one attempt.
            link: the first attempt's root when `result` is a retry.

        Returns:
            The root's IDs (`result.trace_ref` when set, else random) and each span serialized
            (`Span.FromString` reads one back).
        """
        ref = result.trace_ref or TraceRef.new()
        trace_id = _TRACE_ID + ref.trace_id.to_bytes(16, "big")
        root_id = ref.span_id.to_bytes(8, "big")
        offset = result.anchor_wall_ns - result.anchor_mono_ns
        error = result.error

        parts = [trace_id, _SPAN_ID, root_id, self._head(names.ROOT_SPAN_PREFIX + result.kind, _KIND_CLIENT)]
        parts.append(_TIMES.pack(0x39, result.start_ns + offset, 0x41, result.end_ns + offset))
        parts += self._attributes(result.attributes, _ROOT_KEYS if error is None else _ROOT_ERROR_KEYS)
        target = self._string_attribute(names.PROBE_TARGET, result.target)
        if self._tenants:
            # The tenant rides with the target attribute: on the root and on every phase span.
            target += self._tenants.get(result.target, b"")
        parts += (
            self._string_attribute(names.PROBE_KIND, result.kind),
            target,
            self._vantage,
            self._success if error is None else self._failure,
            self._attribute(names.PROBE_ATTEMPT, result.attempt),
        )
        if error is not None:
            parts.append(self._attribute(names.ERROR_TYPE, error.error_type))
            parts.append(self._attribute(names.PROBE_ERROR_DETAIL, error.detail))
        if link is not None:
            link_ids = (
                _TRACE_ID + link.trace_id.to_bytes(16, "big") + _SPAN_ID + link.span_id.to_bytes(8, "big")
            )
            parts.append(length_delimited(_LINK, link_ids + _LINK_FLAGS))
        if error is not None:
            # recording-errors.md: status description is the message; error.type is the class.
            parts.append(_status(error.message))
        parts.append(_FLAGS)
        spans = [b"".join(parts)]
        parent = _PARENT_ID + root_id
        for phase in _in_start_order(result.phases):
            spans.append(self._phase_span(phase, trace_id, parent, offset, target))
        return ref, spans

    def _phase_span(self, phase: Phase, trace_id: bytes, parent: bytes, offset: int, target: bytes) -> bytes:
        span_id = (random.getrandbits(64) or 1).to_bytes(8, "big")
        parts = [trace_id, _SPAN_ID, span_id, parent, self._head(phase.name, _KIND_INTERNAL)]
        parts.append(_TIMES.pack(0x39, phase.start_ns + offset, 0x41, phase.end_ns + offset))
        if phase.error_type is None:
            if phase.attributes:
                parts += self._attributes(phase.attributes, _PHASE_KEYS)
            # Every span of a probe trace names its target, so a Collector can route whole traces
            # to sidecar replicas by attribute (collector-config/collector-loadbalancing.yaml).
            parts.append(target)
            if phase.events:
                parts += self._events(phase.events, offset)
        else:
            detail = phase.error_detail
            parts += self._attributes(
                phase.attributes, _PHASE_ERROR_DETAIL_KEYS if detail else _PHASE_ERROR_KEYS
            )
            parts.append(target)
            parts.append(self._attribute(names.ERROR_TYPE, phase.error_type))
            if detail:
                parts.append(self._attribute(names.PROBE_ERROR_DETAIL, detail))
            if phase.events:
                parts += self._events(phase.events, offset)
            parts.append(_status(detail or phase.error_type))
        parts.append(_FLAGS)
        return b"".join(parts)

    def _events(self, events: Sequence[PhaseEvent], offset: int) -> list[bytes]:
        """`Span.events` entries (after the attributes and before the status, in field order)."""
        encoded = []
        for event in events:
            body = [
                _EVENT_TIME.pack(0x09, event.time_ns + offset),
                length_delimited(_EVENT_NAME, event.name.encode()),
            ]
            for key, value in event.attributes.items():
                entry = bytearray(self._attribute(key, value))
                entry[0] = _EVENT_ATTRIBUTE  # the entry's one-byte tag: Event.attributes, not Span's
                body.append(bytes(entry))
            encoded.append(length_delimited(_EVENT, b"".join(body)))
        return encoded


def _status(message: str) -> bytes:
    """An ERROR `Span.status` whose description is `message`, redacted."""
    text = redact(message).encode()
    body = length_delimited(_STATUS_MESSAGE, text) + _STATUS_ERROR if text else _STATUS_ERROR
    return length_delimited(_STATUS, body)


def _in_start_order(phases: Sequence[Phase]) -> Sequence[Phase]:
    # Probes usually record phases in order already; sort only when they did not.
    for before, after in itertools.pairwise(phases):
        if (after.start_ns, after.end_ns) < (before.start_ns, before.end_ns):
            return sorted(phases, key=lambda p: (p.start_ns, p.end_ns))
    return phases
