"""The one error vocabulary of otelprobe: every failure a probe reports is a ProbeError.

Probe modules translate library exceptions into these classes at their boundary
(`map_exceptions`), so telemetry, the CLI and the sidecar see only DESIGN §4's eight classes.

    Exception
    ├── ProbeError                  error_type
    │   ├── DNSError                dns_error
    │   ├── ConnectRefused          connect_refused
    │   ├── ConnectTimeout          connect_timeout
    │   ├── TLSError                tls_error
    │   ├── ProbeTimeout            timeout
    │   ├── HTTPStatusError         http_status
    │   ├── AssertionFailed         assertion_failed
    │   └── ProtocolError           protocol_error
    ├── ConfigError                 (invalid configuration; carries every ConfigProblem)
    └── MissingDependencyError      (an optional extra is not installed)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar, Final


class ProbeError(Exception):
    """A target-side failure of one probe attempt, classified by `error_type`."""

    error_type: ClassVar[str] = "probe_error"

    def __init__(self, detail: str, message: str | None = None) -> None:
        super().__init__(message or detail)
        self.detail = detail

    @property
    def message(self) -> str:
        return str(self)


class DNSError(ProbeError):
    error_type = "dns_error"


class ConnectRefused(ProbeError):
    error_type = "connect_refused"


class ConnectTimeout(ProbeError):
    error_type = "connect_timeout"


class TLSError(ProbeError):
    error_type = "tls_error"


class ProbeTimeout(ProbeError):
    error_type = "timeout"


class HTTPStatusError(ProbeError):
    error_type = "http_status"


class AssertionFailed(ProbeError):
    error_type = "assertion_failed"


class ProtocolError(ProbeError):
    error_type = "protocol_error"


ERROR_CLASSES: Final[tuple[type[ProbeError], ...]] = (
    DNSError,
    ConnectRefused,
    ConnectTimeout,
    TLSError,
    ProbeTimeout,
    HTTPStatusError,
    AssertionFailed,
    ProtocolError,
)
ERROR_TYPES: Final[frozenset[str]] = frozenset(cls.error_type for cls in ERROR_CLASSES)


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a config file: where it is and what is wrong."""

    file: str
    line: int | None
    path: str
    message: str
    column: int | None = None  # 1-based; set for syntax errors, where the line alone is too coarse

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        if self.line is not None and self.column is not None:
            where += f":{self.column}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class ConfigError(Exception):
    """An invalid configuration; `problems` lists every problem found, not only the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class MissingDependencyError(Exception):
    """An optional dependency is missing; the message names the exact install command."""


@contextlib.contextmanager
def map_exceptions(
    mapping: Mapping[type[BaseException], tuple[type[ProbeError], str]],
) -> Iterator[None]:
    """Translate library exceptions into ProbeErrors; the most specific match wins.

    `mapping` maps an exception type to (ProbeError class, detail). ProbeErrors pass through;
    unmapped exceptions propagate unchanged, because an unknown exception is a bug to be seen.
    """
    try:
        yield
    except ProbeError:
        raise
    except Exception as exc:
        best: tuple[type[ProbeError], str] | None = None
        best_depth = -1
        for exc_type, target in mapping.items():
            if isinstance(exc, exc_type):
                depth = len(exc_type.__mro__)
                if depth > best_depth:
                    best, best_depth = target, depth
        if best is None:
            raise
        cls, detail = best
        raise cls(detail, f"{detail}: {exc}" if str(exc) else detail) from exc
