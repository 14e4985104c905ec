"""bench/timing_error_workers.py compares spans that came over OTLP with the wire: what its sink
writes per span (bench/_span_log.py) must give back each probe's phases, exact, and the client
port that pairs it with its connection (no capture needed: the wire here is given)."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelprobe import names
from otelprobe.config.telemetry import TelemetryConfig
from otelprobe.lab.verification.verify import match
from otelprobe.lab.verification.wire import WireConnection, WirePhases
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.probes.http.probe import HTTPProbe
from otelprobe.results import ProbeResult
from otelprobe.sidecar.receiver import OTLPReceiver
from otelprobe.telemetry.pipeline import Telemetry

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _span_log import read_probes, span_lines


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


WIRE_PHASES = (
    names.SPAN_TCP_CONNECT,
    names.SPAN_TLS_HANDSHAKE,
    names.SPAN_HTTP_REQUEST,
    names.SPAN_HTTP_TTFB,
    names.SPAN_HTTP_TRANSFER,
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def probe(url: str) -> ProbeResult:
    config = HTTPProbeConfig.model_validate({"name": url, "url": url, "ip": "ip4", "timeout": "2s"})
    [result] = await HTTPProbe(config, ProbeContext(vantage="test")).run()
    return result


async def exported(results: list[ProbeResult]) -> list[ExportTraceServiceRequest]:
    """The results through the real pipeline into a real receiver, as the bench's sink gets them."""
    requests: list[ExportTraceServiceRequest] = []
    async with OTLPReceiver(grpc_port=None, on_traces=requests.append, on_metrics=lambda _r: None) as rcv:
        config = TelemetryConfig.model_validate(
            {
                "exporters": [{"type": "otlp_http", "endpoint": rcv.http_endpoint, "timeout": "2s"}],
                "queue": {"schedule_delay": "20ms"},
            }
        )
        telemetry = Telemetry(config, vantage="test", instance_id="w-1")
        for result in results:
            telemetry.record(result)
        assert await telemetry.flush(5.0)
        spans = sum(len(r.phases) + 1 for r in results)
        async with asyncio.timeout(10):
            while (
                sum(len(ss.spans) for q in requests for rs in q.resource_spans for ss in rs.scope_spans)
                < spans
            ):
                await asyncio.sleep(0.02)
        await telemetry.shutdown(2.0)
    return requests


async def test_exported_probes_read_back_with_their_phases_and_client_port(http_port: int) -> None:
    ok = await probe(f"http://127.0.0.1:{http_port}/")
    refused = await probe(f"http://127.0.0.1:{closed_port()}/")
    assert ok.success and not refused.success

    lines = [line for request in await exported([ok, refused]) for line in span_lines(request)]
    probes = {p.result.target: p for p in read_probes(lines)}

    back = probes[ok.target]
    assert not back.failed and back.instance == "w-1"
    assert [(p.name, p.duration_ns, p.failed) for p in back.result.phases] == [
        (p.name, p.duration_ns, p.failed) for p in ok.phases
    ]
    assert probes[refused.target].failed

    # The wire of the successful probe's connection, 5 µs longer per phase: paired as the
    # in-process result would be, by the client port tcp.connect recorded.
    [connect] = [p for p in ok.phases if p.name == names.SPAN_TCP_CONNECT]
    port = connect.attributes[names.NETWORK_LOCAL_PORT]
    assert isinstance(port, int)
    on_wire = {p.name: p.duration_ns + 5000 for p in ok.phases}
    phases = WirePhases(port, *(on_wire.get(n) for n in WIRE_PHASES))
    wire = {port: [WireConnection(connect.start_ns, phases)]}  # its SYN when tcp.connect began
    exported_clock = ok.anchor_wall_ns - ok.anchor_mono_ns  # exported spans are on epoch time
    pairs = match([p.result for p in probes.values()], wire, exported_clock)
    assert pairs == match([ok, refused], wire)
    assert pairs[names.SPAN_HTTP_TTFB]
    assert pairs[names.SPAN_TCP_CONNECT] == [(connect.duration_ns, connect.duration_ns + 5000)]
    assert set(pairs) == {p.name for p in ok.phases}
