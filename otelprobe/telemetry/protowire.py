"""The two pieces of the protobuf wire format that spans.py and metrics_otlp.py write by hand."""

from __future__ import annotations

from typing import Final

ONE_BYTE_LENGTHS: Final = tuple(bytes((n,)) for n in range(128))
"""The varint of every length below 128, prebuilt: almost every field is that short."""


def varint(value: int) -> bytes:
    """A non-negative int as a protobuf base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(tag: bytes, payload: bytes) -> bytes:
    """One length-delimited field (a string, bytes or embedded message) with its tag."""
    size = len(payload)
    return tag + (ONE_BYTE_LENGTHS[size] if size < 128 else varint(size)) + payload
