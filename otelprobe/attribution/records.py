"""Probe spans -> one flat `ProbeRecord` per probe attempt: the only reader of probe traces.

Everything that reads probe telemetry goes through here (notes: RECORDS.md is the column contract):
the sidecar's receiver hands decoded requests to `records_from_request` or a `TraceAssembler`,
and recordings (OTLP JSON lines, plain or gzip) stream through `iter_records` / `read_records`.
Spans of one trace may arrive in different requests; the assembler joins them with bounded
memory. Bad input is counted in `ReaderStats` (with file:line), never raised; text values beyond
MAX_NAME_CHARS / MAX_DETAIL_CHARS are cut (counted). pandas is imported only by `records_frame`,
so the prober and the receiver never load it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, Final

from otelprobe import names
from otelprobe.attribution.otlp_decode import SpanView, views_from_request
from otelprobe.attribution.otlp_files import (
    DEFAULT_MAX_LINE_BYTES,
    PathsArg,
    ReaderStats,
    iter_span_batches,
)

__all__ = [
    "COLUMN_DTYPES",
    "MAX_DETAIL_CHARS",
    "MAX_DURATION_S",
    "MAX_NAME_CHARS",
    "RECORD_COLUMNS",
    "RECORD_KEYS",
    "JoinableRecord",
    "ProbeRecord",
    "ReaderStats",
    "TraceAssembler",
    "build_record",
    "iter_records",
    "read_records",
    "records_frame",
    "records_from_request",
]

if TYPE_CHECKING:
    import pandas as pd
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

NAN: Final = math.nan
MAX_DURATION_S: Final = 3600.0
"""A phase or probe longer than this (or negative) is a broken clock, not a measurement."""
DEFAULT_MAX_PENDING_TRACES: Final = 50_000
MAX_TIME_NS: Final = 2**63 - 1
"""Timestamps beyond int64 nanoseconds (the year 2262; OTLP allows up to 2^64 - 1) cannot be
windowed or put in a frame: such a probe is a bad span, not a record."""
MAX_ATTEMPT: Final = 1_000_000
MAX_NAME_CHARS: Final = 256
"""The longest target, vantage, kind, tenant, error type, failed phase, TLS version, peer address,
lab cause and scope a record keeps: they become span attributes, Prometheus labels and SQLite
keys. A longer value keeps its head and tail around CUT_MARK (counted in `long_values`)."""
MAX_DETAIL_CHARS: Final = 1024
"""The longest error detail (and lab cause list) a record keeps, cut the same way."""
CUT_MARK: Final = "…"


@dataclass(frozen=True, slots=True)
class ProbeRecord:
    """One probe attempt (one trace). Field order = RECORD_COLUMNS; meanings in RECORDS.md."""

    trace_id: str
    span_id: str
    target: str
    vantage: str
    kind: str
    start_ns: int
    end_ns: int
    total_s: float
    success: bool
    attempt: int
    error_type: str | None
    error_detail: str | None
    failed_phase: str | None
    status_code: float
    body_bytes: float
    cert_remaining_s: float
    tls_version: str | None
    dns_s: float
    connect_s: float
    tls_s: float
    request_s: float
    ttfb_s: float
    transfer_s: float
    other_s: float
    connect_attempts: int
    dns_attempts: float
    phases_ok: bool
    lab_cause: str | None
    lab_scope: str | None
    lab_incident: float
    lab_causes: str | None
    peer_address: str | None = None
    """The IP the probe connected to (`network.peer.address`), None when it never got one."""
    dns_answered_attempt: float = math.nan
    """Which of a configured resolver's UDP tries the answer used came for (1 = the first query;
    `probe.dns.answered_attempt`); NaN without one (system resolver, no answer, no DNS)."""
    tenant: str | None = None
    """The target's tenant (`otelprobe.tenant`), None when the prober has no `tenants:` section."""


RECORD_COLUMNS: Final[tuple[str, ...]] = tuple(f.name for f in fields(ProbeRecord))
_STR: Final = "str"
COLUMN_DTYPES: Final[Mapping[str, str]] = {
    column: (
        "int64"
        if column in ("start_ns", "end_ns", "attempt", "connect_attempts")
        else "bool"
        if column in ("success", "phases_ok")
        else _STR
        if column
        in (
            "trace_id",
            "span_id",
            "target",
            "vantage",
            "kind",
            "error_type",
            "error_detail",
            "failed_phase",
            "tls_version",
            "lab_cause",
            "lab_scope",
            "lab_causes",
            "peer_address",
            "tenant",
        )
        else "float64"
    )
    for column in RECORD_COLUMNS
}
"""The pandas dtype of each column ("str": pandas' string dtype, missing values NaN)."""


# --- one trace -> one record --------------------------------------------------------------------

_FIRST_PHASES: Final = frozenset(
    {
        names.SPAN_DNS_LOOKUP,
        names.SPAN_TLS_HANDSHAKE,
        names.SPAN_HTTP_REQUEST,
        names.SPAN_HTTP_TTFB,
        names.SPAN_HTTP_TRANSFER,
    }
)
_START: Final = itemgetter(4)  # SpanView.start_ns
_SPAN_ID: Final = itemgetter(1)  # SpanView.span_id
_PHASE_COLUMNS: Final = {
    names.SPAN_DNS_LOOKUP: "dns_s",
    names.SPAN_TLS_HANDSHAKE: "tls_s",
    names.SPAN_HTTP_REQUEST: "request_s",
    names.SPAN_HTTP_TTFB: "ttfb_s",
    names.SPAN_HTTP_TRANSFER: "transfer_s",
}
RECORD_KEYS: Final = frozenset(
    {
        names.PROBE_TARGET,
        names.PROBE_KIND,
        names.OTELPROBE_VANTAGE,
        names.OTELPROBE_TENANT,
        names.PROBE_SUCCESS,
        names.PROBE_ATTEMPT,
        names.ERROR_TYPE,
        names.PROBE_ERROR_DETAIL,
        names.HTTP_RESPONSE_STATUS_CODE,
        names.PROBE_BODY_BYTES,
        names.PROBE_TLS_CERT_REMAINING,
        names.TLS_PROTOCOL_VERSION,
        names.PROBE_HTTP_HOP,
        names.PROBE_CONNECT_ABANDONED,
        names.PROBE_DNS_ATTEMPTS,
        names.PROBE_DNS_ANSWERED_ATTEMPT,
        names.LAB_FAULT_CAUSE,
        names.LAB_FAULT_SCOPE,
        names.LAB_FAULT_INCIDENT,
        names.LAB_FAULT_CAUSES,
        names.NETWORK_PEER_ADDRESS,
    }
)
"""The span attributes a record reads (the JSON reader decodes only these)."""


def _seconds(start_ns: int, end_ns: int, stats: ReaderStats) -> float:
    seconds = (end_ns - start_ns) / 1e9
    if 0.0 <= seconds <= MAX_DURATION_S:
        return seconds
    stats.absurd_values += 1
    return NAN


def _number(attributes: Mapping[str, object], key: str, stats: ReaderStats, *, signed: bool = False) -> float:
    value = attributes.get(key)
    if value is None:
        return NAN
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and (signed or number >= 0.0):
            return number
    stats.absurd_values += 1
    return NAN


def _cut(text: str, limit: int, stats: ReaderStats) -> str:
    """`text` (longer than `limit`) as its head and tail around CUT_MARK, `limit` characters in all."""
    stats.long_values += 1
    tail = limit // 4
    return f"{text[: limit - 1 - tail]}{CUT_MARK}{text[-tail:]}"


def _capped(text: str, stats: ReaderStats, limit: int = MAX_NAME_CHARS) -> str:
    return text if len(text) <= limit else _cut(text, limit, stats)


def _text(value: object, stats: ReaderStats, limit: int = MAX_NAME_CHARS) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= limit else _cut(text, limit, stats)


def _address(stats: ReaderStats, *spans: SpanView | None) -> str | None:
    """The first `network.peer.address` among `spans` (an IP literal; anything else is ignored)."""
    for span in spans:
        if span is not None:
            value = span.attributes.get(names.NETWORK_PEER_ADDRESS)
            if isinstance(value, str) and value:
                return _capped(value, stats)
    return None


def build_record(
    root: SpanView,
    children: list[SpanView],
    stats: ReaderStats,
    *,
    joinable: list[JoinableRecord] | None = None,
) -> ProbeRecord:
    """The record of one probe attempt from its root span and its phase spans (any order).

    Text values longer than MAX_NAME_CHARS (MAX_DETAIL_CHARS for the error detail and the lab
    cause list) are cut to that length, head and tail kept, and counted in `stats.long_values`.
    With `joinable`, the record is also appended to it as a JoinableRecord.
    """
    children.sort(key=_START)
    first: dict[str, SpanView] = {}
    connect: SpanView | None = None
    connect_attempts = 0
    other_s = NAN
    failed_phase: str | None = None
    failed_ns: int | None = None
    for span in children:
        if span.error and failed_phase is None:
            failed_phase, failed_ns = span.name, span.start_ns
        hop = span.attributes.get(names.PROBE_HTTP_HOP)
        if hop:  # a redirect hop's phases count in the total only
            continue
        if span.name == names.SPAN_TCP_CONNECT:
            connect_attempts += 1
            if span.attributes.get(names.PROBE_CONNECT_ABANDONED) is not True:
                connect = span  # the last one carried the request
        elif span.name in _FIRST_PHASES:
            first.setdefault(span.name, span)
        else:
            seconds = _seconds(span.start_ns, span.end_ns, stats)
            if not math.isnan(seconds):
                other_s = seconds if math.isnan(other_s) else other_s + seconds

    def phase_s(span: SpanView | None) -> float:
        return NAN if span is None else _seconds(span.start_ns, span.end_ns, stats)

    attrs = root.attributes
    dns = first.get(names.SPAN_DNS_LOOKUP)
    tls = first.get(names.SPAN_TLS_HANDSHAKE)
    tls_version = attrs.get(names.TLS_PROTOCOL_VERSION)
    if tls_version is None and tls is not None:
        tls_version = tls.attributes.get(names.TLS_PROTOCOL_VERSION)
    attempt = _number(attrs, names.PROBE_ATTEMPT, stats)
    if attempt > MAX_ATTEMPT:
        stats.absurd_values += 1
        attempt = NAN
    causes = attrs.get(names.LAB_FAULT_CAUSES)
    kind = attrs.get(names.PROBE_KIND)
    vantage = attrs.get(names.OTELPROBE_VANTAGE) or root.resource.get(names.OTELPROBE_VANTAGE) or ""
    record = ProbeRecord(
        trace_id=root.trace_id,
        span_id=root.span_id,
        target=_capped(str(attrs.get(names.PROBE_TARGET, "")), stats),
        vantage=_capped(str(vantage), stats),
        kind=_capped(
            str(kind) if kind is not None else root.name.removeprefix(names.ROOT_SPAN_PREFIX), stats
        ),
        start_ns=root.start_ns,
        end_ns=root.end_ns,
        total_s=_seconds(root.start_ns, root.end_ns, stats),
        success=attrs.get(names.PROBE_SUCCESS) is True,
        attempt=1 if math.isnan(attempt) else int(attempt),
        error_type=_text(attrs.get(names.ERROR_TYPE), stats),
        error_detail=_text(attrs.get(names.PROBE_ERROR_DETAIL), stats, MAX_DETAIL_CHARS),
        failed_phase=_text(failed_phase, stats),
        status_code=_number(attrs, names.HTTP_RESPONSE_STATUS_CODE, stats),
        body_bytes=_number(attrs, names.PROBE_BODY_BYTES, stats),
        cert_remaining_s=_number(attrs, names.PROBE_TLS_CERT_REMAINING, stats, signed=True),
        tls_version=_text(tls_version, stats),
        dns_s=phase_s(dns),
        connect_s=phase_s(connect),
        tls_s=phase_s(tls),
        request_s=phase_s(first.get(names.SPAN_HTTP_REQUEST)),
        ttfb_s=phase_s(first.get(names.SPAN_HTTP_TTFB)),
        transfer_s=phase_s(first.get(names.SPAN_HTTP_TRANSFER)),
        other_s=other_s,
        connect_attempts=connect_attempts,
        dns_attempts=NAN if dns is None else _number(dns.attributes, names.PROBE_DNS_ATTEMPTS, stats),
        phases_ok=failed_phase is None,
        lab_cause=_text(attrs.get(names.LAB_FAULT_CAUSE), stats),
        lab_scope=_text(attrs.get(names.LAB_FAULT_SCOPE), stats),
        lab_incident=_number(attrs, names.LAB_FAULT_INCIDENT, stats),
        lab_causes=_text(
            ",".join(map(str, causes)) if isinstance(causes, tuple | list) else causes,
            stats,
            MAX_DETAIL_CHARS,
        ),
        # The root names the address the attempt used (DESIGN §3); the connection that carried
        # the request names it too, for senders that put it on the phase only.
        peer_address=_address(stats, root, connect),
        dns_answered_attempt=(
            NAN if dns is None else _number(dns.attributes, names.PROBE_DNS_ANSWERED_ATTEMPT, stats)
        ),
        tenant=_text(attrs.get(names.OTELPROBE_TENANT), stats),
    )
    if joinable is not None:
        peer = attrs.get(names.NETWORK_PEER_ADDRESS)
        joinable.append(
            JoinableRecord(
                record,
                root.span_id + "".join(map(_SPAN_ID, children)),
                {name: span.start_ns for name, span in first.items()},
                None if connect is None else connect.start_ns,
                failed_ns,
                attrs.get(names.TLS_PROTOCOL_VERSION) is not None,
                isinstance(peer, str) and peer != "",
            )
        )
    return record


class JoinableRecord:
    """A record that phase spans arriving after it was made can still join, without its spans:
    the record, the ids of the spans it was built from, and the start of each span it took a value
    from (which a later span must start before, or after for the connection, to replace it). The
    live sidecar keeps these while a record's window is open (sidecar/ingest.py).
    """

    __slots__ = ("connect_ns", "failed_ns", "first_ns", "record", "root_peer", "root_tls", "span_ids")

    def __init__(
        self,
        record: ProbeRecord,
        span_ids: str,
        first_ns: dict[str, int],
        connect_ns: int | None,
        failed_ns: int | None,
        root_tls: bool,
        root_peer: bool,
    ) -> None:
        self.record = record
        self.span_ids = span_ids
        """The ids of the spans joined so far, end to end (16 hex digits each)."""
        self.first_ns = first_ns
        """Phase name -> start of the span of that name the record took (the first to start)."""
        self.connect_ns = connect_ns
        """Start of the connection that carried the request (the last one not abandoned)."""
        self.failed_ns = failed_ns
        """Start of the span that named `failed_phase` (the first failed one)."""
        self.root_tls = root_tls
        """The root named the TLS version (a handshake span's does not count)."""
        self.root_peer = root_peer
        """The root named the peer address (the connection's does not count)."""

    def join(self, phases: Iterable[SpanView], stats: ReaderStats) -> ProbeRecord:
        """The record with `phases` (spans of its trace, not a root, not joined before) joined:
        what build_record makes from the root and all the phases (but for `other_s`, summed in
        the order the spans came), by the same rules. The record becomes that one."""
        record = self.record
        changes: dict[str, Any] = {}  # column -> value
        connect_attempts, other_s = record.connect_attempts, record.other_s
        for span in sorted(phases, key=_START):
            self.span_ids += span.span_id
            start_ns, attributes = span.start_ns, span.attributes
            if span.error and (self.failed_ns is None or start_ns < self.failed_ns):
                self.failed_ns = start_ns
                changes["failed_phase"] = _text(span.name, stats)
            if attributes.get(names.PROBE_HTTP_HOP):
                continue
            name = span.name
            if name == names.SPAN_TCP_CONNECT:
                connect_attempts += 1
                if attributes.get(names.PROBE_CONNECT_ABANDONED) is not True and (
                    self.connect_ns is None or start_ns >= self.connect_ns
                ):
                    self.connect_ns = start_ns
                    changes["connect_s"] = _seconds(start_ns, span.end_ns, stats)
                    if not self.root_peer:
                        changes["peer_address"] = _address(stats, span)
            elif name in _FIRST_PHASES:
                earlier_ns = self.first_ns.get(name)
                if earlier_ns is None or start_ns < earlier_ns:
                    self.first_ns[name] = start_ns
                    changes[_PHASE_COLUMNS[name]] = _seconds(start_ns, span.end_ns, stats)
                    if name == names.SPAN_DNS_LOOKUP:
                        changes["dns_attempts"] = _number(attributes, names.PROBE_DNS_ATTEMPTS, stats)
                        changes["dns_answered_attempt"] = _number(
                            attributes, names.PROBE_DNS_ANSWERED_ATTEMPT, stats
                        )
                    elif name == names.SPAN_TLS_HANDSHAKE and not self.root_tls:
                        changes["tls_version"] = _text(attributes.get(names.TLS_PROTOCOL_VERSION), stats)
            else:
                seconds = _seconds(start_ns, span.end_ns, stats)
                if not math.isnan(seconds):
                    other_s = seconds if math.isnan(other_s) else other_s + seconds
        failed_phase = changes.get("failed_phase", record.failed_phase)
        self.record = dataclasses.replace(
            record,
            **changes,
            connect_attempts=connect_attempts,
            other_s=other_s,
            phases_ok=failed_phase is None,
        )
        return self.record


# --- joining spans into traces ------------------------------------------------------------------


class _Pending:
    __slots__ = ("born_s", "children", "root")

    def __init__(self, born_s: float) -> None:
        self.born_s = born_s
        self.root: SpanView | None = None
        self.children: list[SpanView] = []


class TraceAssembler:
    """Joins the spans of each trace, across requests, and makes a record when the root is in.

    A probe's root span ends after all its phases, so senders (ours and the SDK's batch processor)
    export the phases in the same request as the root or earlier: a trace is recorded at the end of
    the batch that brings its root. Spans still waiting for a root are bounded by count (oldest
    evicted first) and by age; evicted ones count as orphans. Spans arriving after their trace was
    recorded count as late (a bounded memory of recent trace IDs tells them from orphans). A
    Collector (several sending consumers, a retry) can deliver a phase after its root all the same:
    the live sidecar's `sidecar/ingest.Ingest` takes those spans before they reach the assembler
    and rebuilds the record while its window is open; a recording is read as it is.

    Args:
        stats: where counts go (shared with a file reader).
        max_pending_traces: traces without a root kept at most.
        max_age_s: rootless traces older than this (by `clock`) are orphaned; None = no age limit.
        clock: seconds, monotonic.
    """

    def __init__(
        self,
        stats: ReaderStats | None = None,
        *,
        max_pending_traces: int = DEFAULT_MAX_PENDING_TRACES,
        max_age_s: float | None = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats if stats is not None else ReaderStats()
        self._max_pending = max_pending_traces
        self._max_age_s = max_age_s
        self._clock = clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._done: OrderedDict[str, None] = OrderedDict()

    @property
    def pending_traces(self) -> int:
        return len(self._pending)

    def add(
        self, spans: Iterable[SpanView], *, joinable: list[JoinableRecord] | None = None
    ) -> list[ProbeRecord]:
        """Take one batch (request) of spans; returns the records completed by it, which with
        `joinable` are also appended to it as JoinableRecords (see build_record)."""
        stats = self.stats
        now_s = self._clock()
        rooted: list[str] = []
        for span in spans:
            stats.spans += 1
            trace_id = span.trace_id
            if trace_id in self._done:
                stats.late_spans += 1
                continue
            pending = self._pending.get(trace_id)
            if pending is None:
                pending = self._pending[trace_id] = _Pending(now_s)
            if span.parent_span_id:
                pending.children.append(span)
            elif pending.root is None:
                pending.root = span
                rooted.append(trace_id)
            else:
                stats.late_spans += 1  # a second root: keep the first
        records: list[ProbeRecord] = []
        for trace_id in rooted:
            done = self._pending.pop(trace_id)
            self._remember(trace_id)
            assert done.root is not None
            if not done.root.name.startswith(names.ROOT_SPAN_PREFIX):
                stats.foreign_spans += 1 + len(done.children)
                continue
            if not (
                -MAX_TIME_NS <= done.root.start_ns <= MAX_TIME_NS
                and -MAX_TIME_NS <= done.root.end_ns <= MAX_TIME_NS
            ):
                stats.bad_spans += 1 + len(done.children)
                stats.problem(f"trace {trace_id}: root span times beyond int64 nanoseconds")
                continue
            records.append(build_record(done.root, done.children, stats, joinable=joinable))
        stats.records += len(records)
        self._evict(now_s)
        return records

    def close(self) -> None:
        """End of input: every trace still waiting for its root is an orphan."""
        while self._pending:
            self._orphan()

    def _remember(self, trace_id: str) -> None:
        self._done[trace_id] = None
        if len(self._done) > self._max_pending:
            self._done.popitem(last=False)

    def _orphan(self) -> None:
        _, pending = self._pending.popitem(last=False)
        self.stats.orphan_traces += 1
        self.stats.orphan_spans += len(pending.children)

    def _evict(self, now_s: float) -> None:
        while len(self._pending) > self._max_pending:
            self._orphan()
        if self._max_age_s is not None:
            while self._pending and now_s - next(iter(self._pending.values())).born_s > self._max_age_s:
                self._orphan()


def records_from_request(
    request: ExportTraceServiceRequest, stats: ReaderStats | None = None
) -> list[ProbeRecord]:
    """The records of the whole traces in one decoded request (the receiver's path); spans
    without their root in the request are counted as orphans. For traces split over requests,
    feed `otlp_decode.views_from_request(request)` to one long-lived TraceAssembler instead.

    Raises:
        otlp_decode.MalformedSpan: a span with ill-sized IDs (the receiver answers 400).
    """
    assembler = TraceAssembler(stats, max_age_s=None)
    records = assembler.add(list(views_from_request(request, RECORD_KEYS)))
    assembler.close()
    if stats is not None:
        stats.requests += 1
    return records


def iter_records(
    paths: PathsArg,
    stats: ReaderStats | None = None,
    *,
    max_pending_traces: int = DEFAULT_MAX_PENDING_TRACES,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[ProbeRecord]:
    """Stream the records of OTLP JSON-lines files (plain or gzip), one line in memory at a time.

    Bad lines and spans are counted in `stats` with file:line and skipped; metric and log lines
    are skipped. Traces split over lines (or files) are joined while at most `max_pending_traces`
    of them wait for their root.

    Raises:
        OSError: a file cannot be opened.
    """
    stats = stats if stats is not None else ReaderStats()
    assembler = TraceAssembler(stats, max_pending_traces=max_pending_traces, max_age_s=None)
    for views in iter_span_batches(paths, stats, keys=RECORD_KEYS, max_line_bytes=max_line_bytes):
        yield from assembler.add(views)
    assembler.close()


_ROW: Final = attrgetter(*RECORD_COLUMNS)


def records_frame(records: Iterable[ProbeRecord], columns: Sequence[str] = RECORD_COLUMNS) -> pd.DataFrame:
    """The records as a DataFrame with `columns` (default RECORD_COLUMNS) and COLUMN_DTYPES, one
    row per attempt. The sidecar asks for the columns features read only: turning ~20,000 unique
    trace and span IDs per slot into pandas strings costs more than the features."""
    import pandas as pd

    row_of = _ROW if columns is RECORD_COLUMNS else attrgetter(*columns)
    rows = [row_of(record) for record in records]
    if len(columns) == 1:
        rows = [(value,) for value in rows]
    values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    return pd.DataFrame(
        {
            name: pd.Series(column, dtype=COLUMN_DTYPES[name])
            for name, column in zip(columns, values, strict=True)
        }
    )


def read_records(paths: PathsArg) -> tuple[pd.DataFrame, ReaderStats]:
    """Every record of the files as a DataFrame, with what the reader skipped.

    Raises:
        OSError: a file cannot be opened.
    """
    stats = ReaderStats()
    frame = records_frame(iter_records(paths, stats))
    return frame, stats
