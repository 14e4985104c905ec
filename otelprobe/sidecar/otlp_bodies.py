"""OTLP request bodies as the receiver takes them: inflated within a size cap, decoded from
protobuf or JSON, spans with ill-sized IDs dropped (reported through OTLP partial success), and
the errors that decide the answer (HTTP 400 / 413, gRPC INVALID_ARGUMENT / RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import zlib
from typing import Final, TypeVar

from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.message import DecodeError, Message

# googleapis-common-protos ships no type stubs.
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otelprobe.telemetry.otlp_json import json_to_message

_M = TypeVar("_M", bound=Message)
# Content-Encoding -> zlib wbits. The runner turns aiohttp's own inflating off: inflating here
# caps the inflated size (a small gzip bomb) and answers a broken stream with a clean 400.
WBITS: Final[dict[str, int | None]] = {"identity": None, "": None, "gzip": 16 + zlib.MAX_WBITS, "deflate": 0}


def trace_response(rejected: int, message: str) -> ExportTraceServiceResponse:
    if not rejected:
        return ExportTraceServiceResponse()
    # Partial success: the sender must not retry, and the loss is visible on its side too.
    return ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
    )


class MalformedRequest(ValueError):
    """The body is not a valid OTLP request (HTTP 400, gRPC INVALID_ARGUMENT). `field`: where the
    bad data is, as a BadRequest field violation names it ("" for the body as a whole)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


SPAN_IDS_FIELD: Final = "resource_spans.scope_spans.spans.trace_id"
"""The field a request whose every span has ill-sized IDs is refused for (span_id and
parent_span_id are checked too; the description says which)."""


def bad_request_status(exc: MalformedRequest) -> status_pb2.Status:
    """The google.rpc.Status of a refused request, with the BadRequest detail the OTLP spec asks a
    400 / INVALID_ARGUMENT to carry (what was wrong, and where)."""
    violation = error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=str(exc))
    detail = AnyMessage()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc), details=[detail])


class BodyTooLarge(ValueError):
    """The (decompressed) body exceeds the size cap (HTTP 413, gRPC RESOURCE_EXHAUSTED)."""


def drop_invalid_ids(request: ExportTraceServiceRequest) -> tuple[int, int, str]:
    """Remove the spans whose IDs have the wrong size, in place; (spans, removed, first bad name).

    Protobuf parsing is lenient and the sidecar keys everything on IDs, so their sizes are checked
    here. The common case (every span good) is one pass that copies nothing.
    """
    total = removed = 0
    first = ""
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            total += len(spans)
            bad = [
                i
                for i, span in enumerate(spans)
                if len(span.trace_id) != 16
                or len(span.span_id) != 8
                or len(span.parent_span_id) not in (0, 8)
            ]
            if not bad:
                continue
            if not removed:
                first = spans[bad[0]].name
            removed += len(bad)
            for index in reversed(bad):
                del spans[index]
    return total, removed, first


def invalid_ids_message(removed: int, total: int, first: str) -> str:
    return (
        f"{removed} of {total} spans dropped for invalid IDs (trace_id must be 16 bytes, span_id and"
        f" parent_span_id 8 bytes; the first: span {first[:60]!r})"
    )


def inflate(body: bytes, wbits: int, max_bytes: int) -> bytes:
    # wbits 0 takes the zlib header's window size (HTTP "deflate" is zlib-wrapped).
    decompressor = zlib.decompressobj(wbits=wbits or zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise MalformedRequest(f"invalid compressed body: {exc}") from exc
    if len(data) > max_bytes or decompressor.unconsumed_tail:
        raise BodyTooLarge(f"decompressed body exceeds {max_bytes} bytes")
    return data


def decode_protobuf(body: bytes, message: _M) -> _M:
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise MalformedRequest(f"invalid protobuf: {exc}") from exc
    return message


def decode_json(body: bytes, message: _M) -> _M:
    try:
        return json_to_message(body.decode("utf-8"), message)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRequest(f"invalid OTLP JSON: {exc}") from exc
