"""A dead or refusing Collector: a few log lines per outage, not one per batch (issue 11).

Real senders and a real span batcher against a loopback port with nothing listening and a real
aiohttp server answering 503 / 400 / 200; the summary interval is shortened to keep the test short.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Iterator

import pytest
from aiohttp import web
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otelprobe.config.telemetry import OTLPGRPCExporterConfig, OTLPHTTPExporterConfig
from otelprobe.telemetry.batching import SpanBatcher
from otelprobe.telemetry.senders import OTLPGRPCSender, OTLPHTTPSender

SPANS_PER_BATCH = 5
SUMMARY_INTERVAL_S = 0.4
LOGGER = "otelprobe.telemetry"


class StatusServer:
    """A loopback OTLP/HTTP endpoint on a given port whose answer can be changed (200 by default)."""

    def __init__(self, port: int, status: int = 200) -> None:
        self.port, self.status = port, status
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=self.status)

    async def __aenter__(self) -> StatusServer:
        app = web.Application()
        app.router.add_post("/v1/traces", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def unused_port() -> int:
    """A loopback port nothing listens on (bound and closed again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_sender(port: int) -> OTLPHTTPSender:
    config = OTLPHTTPExporterConfig.model_validate(
        {"type": "otlp_http", "endpoint": f"http://127.0.0.1:{port}"}
    )
    return OTLPHTTPSender(config, failure_summary_interval_s=SUMMARY_INTERVAL_S)


def batcher_for(sender: OTLPHTTPSender | OTLPGRPCSender) -> SpanBatcher:
    # A 50 ms send timeout: one try per batch (the first backoff is longer), so batches fail fast.
    return SpanBatcher(
        sender,
        Resource(),
        InstrumentationScope(name="otelprobe"),
        max_export_batch_size=SPANS_PER_BATCH,
        schedule_delay_s=10.0,
        timeout_s=0.05,
    )


def export_batches(batcher: SpanBatcher, count: int, pause_s: float = 0.0) -> None:
    for index in range(count):
        spans = [
            Span(name="s", trace_id=b"\1" * 16, span_id=bytes([index % 250 + 1, i + 1]) * 4) for i in range(5)
        ]
        batcher.put(spans)
        assert batcher.force_flush(5.0)
        time.sleep(pause_s)


@pytest.fixture
def export_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        yield caplog


def failure_lines(records: list[logging.LogRecord]) -> tuple[list[str], list[str], list[str]]:
    """(first-failure lines, summary lines, recovery lines) among the export failure log's records."""
    messages = [(r.levelno, r.getMessage()) for r in records if r.name.startswith(LOGGER)]
    first = [m for level, m in messages if level == logging.WARNING and " failed: " in m]
    summaries = [m for level, m in messages if level == logging.WARNING and "still failing" in m]
    recoveries = [m for level, m in messages if level == logging.INFO and " recovered after " in m]
    assert len(first) + len(summaries) + len(recoveries) == len(messages), messages
    return first, summaries, recoveries


def summarised(summaries: list[str]) -> tuple[int, int]:
    """Batches and spans the summary lines account for."""
    batches = spans = 0
    for line in summaries:
        found = re.search(r": (\d+) more failed batch\(es\) \((\d+) spans lost\)", line)
        assert found, line
        batches += int(found[1])
        spans += int(found[2])
    return batches, spans


async def test_dead_collector_logs_once_then_summaries_then_recovery(
    export_log: pytest.LogCaptureFixture,
) -> None:
    port = unused_port()
    sender = http_sender(port)
    batcher = batcher_for(sender)
    started = time.monotonic()
    await asyncio.to_thread(export_batches, batcher, 40, 0.03)
    elapsed_s = time.monotonic() - started
    assert batcher.failed == 40 * SPANS_PER_BATCH

    first, summaries, recoveries = failure_lines(export_log.records)
    assert len(first) == 1, first
    assert f"export of traces to OTLP/HTTP http://127.0.0.1:{port}/v1/traces failed" in first[0]
    assert "Connection refused" in first[0] or "NewConnectionError" in first[0]
    assert f"({SPANS_PER_BATCH} spans lost)" in first[0]
    # At most one summary per interval, and at least one over a run several intervals long.
    assert 1 <= len(summaries) <= elapsed_s / SUMMARY_INTERVAL_S + 1, summaries
    assert recoveries == []
    assert summarised(summaries)[0] <= 39

    async with StatusServer(port):  # the Collector is back
        await asyncio.to_thread(export_batches, batcher, 3)
    batcher.shutdown(5.0)
    first, summaries, recoveries = failure_lines(export_log.records)
    assert len(first) == 1
    (recovery,) = recoveries
    assert re.search(r"recovered after 40 failed batch\(es\) over \d+\.\ds \(200 spans lost\)", recovery), (
        recovery
    )
    assert batcher.failed == 40 * SPANS_PER_BATCH  # the batches after recovery got through


async def test_refusing_collector_is_one_outage_whatever_the_reason(
    export_log: pytest.LogCaptureFixture,
) -> None:
    port = unused_port()
    sender = http_sender(port)
    batcher = batcher_for(sender)
    async with StatusServer(port, status=503) as server:
        await asyncio.to_thread(export_batches, batcher, 10)
        server.status = 400  # a permanent rejection is the same outage, summarised with the rest
        await asyncio.to_thread(export_batches, batcher, 10, SUMMARY_INTERVAL_S / 5)
        first, summaries, _ = failure_lines(export_log.records)
        assert len(first) == 1 and "failed: HTTP 503" in first[0], first
        assert summaries and summaries[-1].endswith("last error: rejected (HTTP 400)"), summaries
        server.status = 200
        await asyncio.to_thread(export_batches, batcher, 5)
    batcher.shutdown(5.0)
    first, summaries, recoveries = failure_lines(export_log.records)
    assert len(first) + len(summaries) < 20 // 2
    assert len(recoveries) == 1 and "recovered after 20 failed batch(es)" in recoveries[0]


async def test_failures_no_line_told_of_are_reported_at_shutdown(
    export_log: pytest.LogCaptureFixture,
) -> None:
    sender = http_sender(unused_port())
    batcher = batcher_for(sender)
    await asyncio.to_thread(export_batches, batcher, 6)  # well within one summary interval
    batcher.shutdown(5.0)
    first, summaries, recoveries = failure_lines(export_log.records)
    assert len(first) == 1 and recoveries == []
    (at_shutdown,) = summaries
    assert "still failing at shutdown" in at_shutdown
    assert summarised(summaries) == (5, 5 * SPANS_PER_BATCH)


async def test_dead_grpc_collector_is_summarised_too(export_log: pytest.LogCaptureFixture) -> None:
    config = OTLPGRPCExporterConfig.model_validate(
        {"type": "otlp_grpc", "endpoint": f"127.0.0.1:{unused_port()}", "insecure": True}
    )
    batcher = batcher_for(OTLPGRPCSender(config, failure_summary_interval_s=SUMMARY_INTERVAL_S))
    await asyncio.to_thread(export_batches, batcher, 20, 0.02)
    batcher.shutdown(5.0)
    first, summaries, _ = failure_lines(export_log.records)
    assert len(first) == 1 and "export of traces to OTLP/gRPC 127.0.0.1:" in first[0], first
    assert 1 + summarised(summaries)[0] == 20  # every failed batch is in some line, none has its own
    assert len(summaries) < 10
