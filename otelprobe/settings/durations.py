"""Durations and sizes as config files write them ("250ms", "5s", "1m30s", "64KiB").

After parsing, durations are float seconds (`_s` fields) and sizes are int bytes (`_bytes`).
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import BeforeValidator

_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_DURATION_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_SIZE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?", re.IGNORECASE)
_SIZE_UNITS: Final = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_duration(value: object) -> float:
    """Parse "250ms" / "1m30s" / a bare number of seconds into float seconds (>= 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '250ms' or '5s'")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int with hundreds of digits: a problem, not a traceback
            raise ValueError(f"duration {str(value)[:20]}... is too large") from None
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(f"invalid duration {value!r}: expected e.g. '250ms', '5s', '1m30s'")
    else:
        raise ValueError("expected a duration like '250ms' or '5s'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_size(value: object) -> int:
    """Parse "64KiB" / "1MB" / a bare number of bytes into int bytes (>= 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a size like '64KiB' or '1MB'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if not match:
            raise ValueError(f"invalid size {value!r}: expected e.g. '512', '64KiB', '1MB'")
        size = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])
    else:
        raise ValueError("expected a size like '64KiB' or '1MB'")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Float seconds, written in config as "250ms" / "5s"."""

Size = Annotated[int, BeforeValidator(parse_size)]
"""Int bytes, written in config as "64KiB" / "1MB"."""
