"""A busy Collector's back-off hint is honoured: HTTP 503 + Retry-After and gRPC UNAVAILABLE +
RetryInfo make the sender wait as long as it was told (not its own, much shorter, backoff), still
within its timeout. The peer is the sidecar's real OTLP receiver with a one-request queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from otelprobe.config.telemetry import OTLPGRPCExporterConfig, OTLPHTTPExporterConfig
from otelprobe.results import ProbeResult
from otelprobe.sidecar.receiver import OTLPReceiver
from otelprobe.telemetry.senders import OTLPGRPCSender, OTLPHTTPSender, retry_after_s
from tests.support.otlp_requests import a_request

ResultFactory = Callable[..., ProbeResult]


@pytest.mark.parametrize("transport", ["otlp_http", "otlp_grpc"])
async def test_sender_waits_as_long_as_the_busy_receiver_asks(
    transport: str, result_factory: ResultFactory
) -> None:
    request = a_request(result_factory())
    async with OTLPReceiver(max_queue=1, when_full="retry", retry_after_s=1.0) as receiver:
        sender: OTLPHTTPSender | OTLPGRPCSender
        if transport == "otlp_http":
            sender = OTLPHTTPSender(OTLPHTTPExporterConfig(type="otlp_http", endpoint=receiver.http_endpoint))
        else:
            sender = OTLPGRPCSender(
                OTLPGRPCExporterConfig(type="otlp_grpc", endpoint=receiver.grpc_endpoint, insecure=True)
            )
        assert await asyncio.to_thread(sender.send, request, 5.0)  # fills the queue
        started = time.monotonic()
        second = asyncio.create_task(asyncio.to_thread(sender.send, request, 5.0))
        await asyncio.sleep(0.3)  # refused by now; room again long before the hint runs out
        receiver.queue.get_nowait()
        assert await second
        waited = time.monotonic() - started
        sender.shutdown()
    assert receiver.stats.retry_answers >= 1
    # Its own backoff (0.05-0.2 s steps) would have retried within ~0.7 s of the room appearing.
    assert 0.9 <= waited < 3.0, f"second export took {waited:.2f}s"


async def test_grpc_resource_exhausted_without_a_retry_hint_is_not_retried(
    result_factory: ResultFactory,
) -> None:
    # A message over the receiver's size limit: RESOURCE_EXHAUSTED and no RetryInfo, a condition
    # no retry recovers from (the OTLP spec: retryable only when the server signals it can).
    request = a_request(result_factory())
    # one byte over the cap: refused by the receiver's own check (gRPC core's limit is twice that)
    async with OTLPReceiver(max_body_bytes=request.ByteSize() - 1) as receiver:
        sender = OTLPGRPCSender(
            OTLPGRPCExporterConfig(type="otlp_grpc", endpoint=receiver.grpc_endpoint, insecure=True)
        )
        started = time.monotonic()
        delivered = await asyncio.to_thread(sender.send, request, 5.0)
        took = time.monotonic() - started
        sender.shutdown()
    assert not delivered
    assert receiver.stats.rejected == {"too_large": 1}  # asked once, not until the timeout
    assert took < 2.0, f"gave up after {took:.2f}s"


def test_retry_after_values() -> None:
    assert retry_after_s("120") == 120.0
    assert retry_after_s(" 3 ") == 3.0
    soon = datetime.now(UTC) + timedelta(seconds=30)
    assert retry_after_s(format_datetime(soon, usegmt=True)) == pytest.approx(30, abs=2)
    past = datetime.now(UTC) - timedelta(hours=1)
    assert retry_after_s(format_datetime(past, usegmt=True)) == 0.0
    for bad in (None, "", "soon", "-5", "1.5e9x", "Mon, 99 Foo 2026 25:61:61 GMT"):
        assert retry_after_s(bad) is None, bad
