"""A bounded span queue per exporter, drained in batches by one worker thread that counts drops.

Sits between `Telemetry.record` (which puts each attempt's serialized spans here) and a
`SpanSender` (senders.py). Probing must never wait on a dead or slow Collector, and every span
lost on the way must show up as `otelprobe.export.dropped`: `put` is O(1) and never blocks; when
an attempt's spans do not fit, all of them are dropped (a trace is useless without its root) and
counted. The worker writes one ExportTraceServiceRequest per batch (one ResourceSpans/ScopeSpans)
by concatenating the span bytes behind the resource and scope, serialized once, and hands the
bytes to senders that take them (`send_serialized`), or the parsed request to those that do not.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol, runtime_checkable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otelprobe.telemetry.protowire import length_delimited
from otelprobe.telemetry.senders import SpanSender

_logger = logging.getLogger(__name__)

# Wire tags of the request around the spans.
_RESOURCE_SPANS: Final = b"\x0a"  # ExportTraceServiceRequest.resource_spans (1)
_RESOURCE: Final = b"\x0a"  # ResourceSpans.resource (1)
_SCOPE_SPANS: Final = b"\x12"  # ResourceSpans.scope_spans (2)
_SCOPE: Final = b"\x0a"  # ScopeSpans.scope (1)
_SPAN: Final = b"\x12"  # ScopeSpans.spans (2)

# A span as `spans.SpanEncoder` writes it (serialized), or a `Span` message built by hand.
QueuedSpan = bytes | Span


@runtime_checkable
class SerializedSpanSender(Protocol):
    """A sender that takes a serialized ExportTraceServiceRequest (the OTLP senders do)."""

    def send_serialized(self, body: bytes, timeout_s: float, items: int = 0) -> bool:
        """Deliver `body`, a request of `items` spans (for the sender's failure log)."""
        ...


def request_bytes(spans: Iterable[QueuedSpan], resource: bytes, scope: bytes) -> bytes:
    """One serialized ExportTraceServiceRequest holding `spans` under one resource and one scope.

    Args:
        spans: the spans, in order.
        resource: the serialized Resource.
        scope: the serialized InstrumentationScope.
    """
    framed = [length_delimited(_SPAN, s if isinstance(s, bytes) else s.SerializeToString()) for s in spans]
    scope_spans = length_delimited(_SCOPE, scope) + b"".join(framed)
    resource_spans = length_delimited(_RESOURCE, resource) + length_delimited(_SCOPE_SPANS, scope_spans)
    return length_delimited(_RESOURCE_SPANS, resource_spans)


def build_request(
    spans: Iterable[QueuedSpan], resource: Resource, scope: InstrumentationScope
) -> ExportTraceServiceRequest:
    """`request_bytes` parsed: the request as a message (tests, tools)."""
    body = request_bytes(spans, resource.SerializeToString(), scope.SerializeToString())
    return ExportTraceServiceRequest.FromString(body)


class SpanBatcher:
    """Queues spans (at most `max_queue_size`) and sends them in batches from one thread.

    Args:
        sender: where batches go; `send` may block (the worker waits, never the caller of `put`).
        resource: the OTLP resource of every batch.
        scope: the instrumentation scope of every batch.
        max_queue_size: spans held at most; beyond it new attempts are dropped and counted.
        max_export_batch_size: spans per request at most.
        schedule_delay_s: the longest a span waits before its batch is sent.
        timeout_s: the time one send may take, retries included.
        name: the exporter's name in logs and in `otelprobe.export.dropped`.
    """

    def __init__(
        self,
        sender: SpanSender,
        resource: Resource,
        scope: InstrumentationScope,
        *,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        schedule_delay_s: float = 5.0,
        timeout_s: float = 10.0,
        name: str = "exporter",
    ) -> None:
        self.sender = sender
        self.name = name
        self._resource = resource.SerializeToString()
        self._scope = scope.SerializeToString()
        self._send: Callable[[bytes, float, int], bool] = (
            sender.send_serialized if isinstance(sender, SerializedSpanSender) else self._send_parsed
        )
        self._max_queue_size = max_queue_size
        self._batch_size = min(max_export_batch_size, max_queue_size)
        self._delay_s = schedule_delay_s
        self._timeout_s = timeout_s
        self._queue: collections.deque[QueuedSpan] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._flush_requests: list[threading.Event] = []
        self._shutdown = False
        self._dropped = 0
        self._exported = 0
        self._failed = 0
        self._worker = threading.Thread(target=self._run, name=f"otelprobe-export-{name}", daemon=True)
        self._worker.start()

    @property
    def dropped(self) -> int:
        """Spans dropped so far (queue full, or put after shutdown, or still queued at shutdown)."""
        return self._dropped

    @property
    def exported(self) -> int:
        """Spans handed to the sender so far (whatever the Collector then did with them)."""
        return self._exported

    @property
    def failed(self) -> int:
        """Spans in batches the sender gave up on (Collector down, rejected, timed out)."""
        return self._failed

    @property
    def queued(self) -> int:
        return len(self._queue)

    def put(self, spans: Sequence[QueuedSpan]) -> None:
        """Queue one attempt's spans, or drop and count all of them if they do not fit."""
        with self._lock:
            if self._shutdown or len(self._queue) + len(spans) > self._max_queue_size:
                first = self._dropped == 0
                self._dropped += len(spans)
                if first:
                    _logger.warning("span export queue of %s is full: dropping spans (counted)", self.name)
                return
            self._queue.extend(spans)
            if len(self._queue) >= self._batch_size:
                self._wake.set()

    def _take_batch(self) -> list[QueuedSpan]:
        with self._lock:
            count = min(self._batch_size, len(self._queue))
            return [self._queue.popleft() for _ in range(count)]

    def _export_all(self) -> None:
        while batch := self._take_batch():
            self._exported += len(batch)
            try:
                body = request_bytes(batch, self._resource, self._scope)
                sent = self._send(body, self._timeout_s, len(batch))
            except Exception:
                # A sender bug must not kill the worker; the spans are lost, as on a failed export.
                _logger.exception("span sender %s raised", self.name)
                sent = False
            if not sent:
                self._failed += len(batch)

    def _send_parsed(self, body: bytes, timeout_s: float, items: int) -> bool:
        return self.sender.send(ExportTraceServiceRequest.FromString(body), timeout_s)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            with self._lock:
                flushes, self._flush_requests = self._flush_requests, []
                stopping = self._shutdown
            self._export_all()
            for done in flushes:
                done.set()
            if stopping:
                return

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Send what is queued; False if that took longer than the timeout."""
        done = threading.Event()
        with self._lock:
            if self._shutdown:
                return False
            self._flush_requests.append(done)
        self._wake.set()
        return done.wait(timeout_s)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Send what is queued within the timeout, then close the sender.

        If the sender is stuck on a dead Collector, closing it interrupts its retries; the worker
        is a daemon thread, so it can never keep the process alive.
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
        self._wake.set()
        self._worker.join(max(0.0, deadline - time.monotonic()))
        if self._worker.is_alive():
            _logger.warning("span exporter %s did not finish within the shutdown timeout", self.name)
        self.sender.shutdown()
        self._worker.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            # Spans still queued now will never be sent.
            self._dropped += len(self._queue)
            self._queue.clear()
