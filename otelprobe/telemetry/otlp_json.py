"""OTLP JSON lines: the Collector file exporter's format, as exporters write it.

Telemetry files (DESIGN §7) are one ExportTraceServiceRequest (or ExportMetricsServiceRequest) per
line, encoded per the OTLP/JSON spec: lowerCamelCase fields, trace and span IDs as hex strings
(not protobuf JSON's base64), enums as integers, int64 as strings. The lab records datasets with
the writer. `json_to_message` parses one line into protobuf (the receiver's OTLP/HTTP JSON bodies).
Files of spans are read by the one reader, attribution/otlp_files.py (records.py for probe
records), which streams big and gzip files and walks the JSON directly (about 10x faster than
json_format's ParseDict here).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from pathlib import Path
from typing import Final, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_logger = logging.getLogger(__name__)

# OTLP/JSON carries these bytes fields as hex, wherever they appear (spans, links, exemplars).
_ID_KEYS: Final = frozenset({"traceId", "spanId", "parentSpanId"})
_M = TypeVar("_M", bound=Message)


def _ids(value: object, convert: type[bytes] | type[str]) -> object:
    """Rewrite every ID field of a JSON tree: base64 -> hex (convert=str) or hex -> base64."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            if key in _ID_KEYS and isinstance(item, str):
                if convert is str:
                    out[key] = base64.b64decode(item).hex()
                else:
                    out[key] = base64.b64encode(bytes.fromhex(item)).decode("ascii")
            else:
                out[key] = _ids(item, convert)
        return out
    if isinstance(value, list):
        return [_ids(item, convert) for item in value]
    return value


def message_to_json(message: Message) -> str:
    """One OTLP/JSON line (no newline) for an Export*ServiceRequest."""
    tree = json_format.MessageToDict(message, use_integers_for_enums=True)
    return json.dumps(_ids(tree, str), separators=(",", ":"), ensure_ascii=False)


def json_to_message(line: str, message: _M) -> _M:
    """Parse one OTLP/JSON line into `message`; raises ValueError on malformed input."""
    try:
        tree = _ids(json.loads(line), bytes)
        if not isinstance(tree, dict):
            raise ValueError("not a JSON object")
        json_format.ParseDict(tree, message)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the interpreter's stack (a hostile body).
        raise ValueError(str(exc)) from exc
    return message


class JSONLinesWriter:
    """Appends lines to a file, rotating it to path.1 .. path.N when it would exceed the cap.

    Thread-safe: the span and metric exporters of one file share a writer.
    """

    def __init__(self, path: str | os.PathLike[str], max_size_bytes: int, max_backups: int = 3) -> None:
        self.path = Path(path)
        self._max_size = max_size_bytes
        self._max_backups = max_backups
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write_line(self, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        with self._lock:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(data) > self._max_size:
                self._rotate()
            with self.path.open("ab") as fh:
                fh.write(data)

    def _rotate(self) -> None:
        if self._max_backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for index in range(self._max_backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))


class OTLPJSONSpanSender:
    """Writes each batch as one ExportTraceServiceRequest line (a `senders.SpanSender`)."""

    def __init__(self, writer: JSONLinesWriter) -> None:
        self._writer = writer

    def send(self, request: ExportTraceServiceRequest, timeout_s: float) -> bool:
        try:
            self._writer.write_line(message_to_json(request))
        except OSError as exc:
            _logger.warning("cannot write spans to %s: %s", self._writer.path, exc)
            return False
        return True

    def shutdown(self) -> None:
        return None
