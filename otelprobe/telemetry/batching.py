"""A bounded batching span processor that counts every span it drops.

Sits between the tracer and each span exporter (`pipeline.Telemetry`). The SDK's
BatchSpanProcessor also bounds its queue, but it evicts silently from a deque and reports drops
only through opt-in internal metrics; probing must never wait on a dead or slow Collector, and
every span lost on the way must show up as `otelprobe.export.dropped`. So `on_end` is O(1) and
never blocks: a full queue drops the new span and counts it, and one worker thread exports.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

_logger = logging.getLogger(__name__)


class CountingBatchSpanProcessor(SpanProcessor):
    """Queues ended spans (at most `max_queue_size`) and exports them in batches on one thread."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        schedule_delay_s: float = 5.0,
        name: str = "exporter",
    ) -> None:
        self.exporter = exporter
        self.name = name
        self._max_queue_size = max_queue_size
        self._batch_size = min(max_export_batch_size, max_queue_size)
        self._delay_s = schedule_delay_s
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._flush_requests: list[threading.Event] = []
        self._shutdown = False
        self._dropped = 0
        self._exported = 0
        self._worker = threading.Thread(target=self._run, name=f"otelprobe-export-{name}", daemon=True)
        self._worker.start()

    @property
    def dropped(self) -> int:
        """Spans dropped so far (queue full, or ended after shutdown)."""
        return self._dropped

    @property
    def exported(self) -> int:
        """Spans handed to the exporter so far (whatever the exporter then did with them)."""
        return self._exported

    @property
    def queued(self) -> int:
        return len(self._queue)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and not span.context.trace_flags.sampled:
            return
        with self._lock:
            if self._shutdown or len(self._queue) >= self._max_queue_size:
                first = self._dropped == 0
                self._dropped += 1
                if first:
                    _logger.warning("span export queue of %s is full: dropping spans (counted)", self.name)
                return
            self._queue.append(span)
            if len(self._queue) >= self._batch_size:
                self._wake.set()

    def _take_batch(self) -> list[ReadableSpan]:
        with self._lock:
            count = min(self._batch_size, len(self._queue))
            return [self._queue.popleft() for _ in range(count)]

    def _export_all(self) -> None:
        while batch := self._take_batch():
            self._exported += len(batch)
            try:
                self.exporter.export(batch)
            except Exception:
                # An exporter bug must not kill the worker; the spans are lost, as on a failed export.
                _logger.exception("span exporter %s raised", self.name)

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

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export what is queued; False if that took longer than the timeout."""
        done = threading.Event()
        with self._lock:
            if self._shutdown:
                return False
            self._flush_requests.append(done)
        self._wake.set()
        return done.wait(timeout_millis / 1000)

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Export what is queued within the timeout, then shut the exporter down.

        If the exporter is stuck on a dead Collector, its shutdown interrupts the retries; the
        worker is a daemon thread, so it can never keep the process alive.
        """
        deadline = time.monotonic() + timeout_millis / 1000
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
        self._wake.set()
        self._worker.join(max(0.0, deadline - time.monotonic()))
        if self._worker.is_alive():
            _logger.warning("span exporter %s did not finish within the shutdown timeout", self.name)
        self.exporter.shutdown()
        self._worker.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            # Spans still queued now will never be exported.
            self._dropped += len(self._queue)
            self._queue.clear()
