"""The whole collector-jaeger-sidecar.yaml topology: probers -> Collector -> Jaeger and the real
`otelprobe sidecar`; the sidecar exports its telemetry back to the Collector. A 5xx fault on one
target becomes a `slo.violation` span in Jaeger whose links open the failed probe spans that are
its evidence, themselves in Jaeger."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelprobe.lab.faults import HTTP5xx
from otelprobe.lab.servers.http import HTTPFaultServer
from tests.support.e2e_stack import (
    CONFIG_DIR,
    Binaries,
    Trace,
    endpoint,
    prober_config,
    start_collector,
    start_jaeger,
    start_prober,
    start_sidecar,
    wait_for,
)

pytestmark = pytest.mark.timeout(420)
SERVICE = "otelprobe-e2e-slo"
SIDECAR_SERVICE = "otelprobe-sidecar"


async def test_slo_violation_spans_reach_jaeger_linked_to_their_probe_spans(
    binaries: Binaries, tmp_path: Path
) -> None:
    jaeger = await start_jaeger(binaries, tmp_path)
    otlp_grpc, otlp_http = endpoint(), endpoint()
    sidecar = await start_sidecar(
        tmp_path,
        "sidecar",
        allowed_lateness="2s",
        export={"endpoint": f"http://{otlp_http}", "metric_interval": "1s"},
        output={"jsonl": str(tmp_path / "attributions.jsonl")},
    )
    overlay = {
        "extensions": {"health_check": {"endpoint": endpoint()}},
        "receivers": {
            "otlp": {"protocols": {"grpc": {"endpoint": otlp_grpc}, "http": {"endpoint": otlp_http}}}
        },
        "exporters": {
            "otlp/jaeger": {"endpoint": jaeger.otlp_grpc},
            "otlp/sidecar": {"endpoint": sidecar.grpc},
            "prometheus": {"endpoint": endpoint()},
        },
    }
    collector = await start_collector(
        binaries, tmp_path, "collector", CONFIG_DIR / "collector-jaeger-sidecar.yaml", overlay
    )
    prober = None
    try:
        async with HTTPFaultServer(seed=1) as payments, HTTPFaultServer(seed=2) as shop:
            targets = [
                {"name": "payments", "kind": "http", "url": payments.url},
                {"name": "shop", "kind": "http", "url": shop.url},
            ]
            config = prober_config(
                otlp_grpc, targets, vantage="e2e-slo", service=SERVICE, interval="500ms", timeout="400ms"
            )
            prober = await start_prober(tmp_path, "prober", config)

            async def warm() -> bool:
                health = await sidecar.get("/healthz")
                return bool(health["series"] >= 2 and health["warm_series"] == health["series"])

            await wait_for(warm, 90, "both series' baselines to warm up through the Collector", 1.0)
            payments.apply(HTTP5xx(rate=1.0, status=503))

            async def violations() -> list[Trace]:
                return await jaeger.find_traces(SIDECAR_SERVICE, operation="slo.violation")

            found = await wait_for(violations, 90, "a slo.violation span in Jaeger", 1.0)
    finally:
        if prober:
            await prober.stop()
        await collector.stop()
        await sidecar.stop()

    try:
        span = next(s for t in found for s in t.spans if s.name == "slo.violation")
        assert span.attributes["probe.target"] == "payments"
        assert span.attributes["otelprobe.vantage"] == "e2e-slo"
        assert span.attributes["otelprobe.slo.name"] in {"availability", "latency"}
        assert span.attributes["otelprobe.cause"] == "http_error"
        assert span.resource["service.name"] == SIDECAR_SERVICE
        assert 1 <= len(span.links) <= 5
        # Each link opens a probe span of payments in Jaeger: the violation's evidence.
        evidence = {t.trace_id: t for t in await jaeger.find_traces(SERVICE, limit=10000)}
        failed = 0
        for trace_id, span_id in span.links:
            assert trace_id in evidence, f"linked trace {trace_id} is not in Jaeger"
            linked = next(s for s in evidence[trace_id].spans if s.span_id == span_id)
            assert linked.name == "probe http" and linked.attributes["probe.target"] == "payments"
            failed += linked.attributes["probe.success"] is False
        assert failed >= 1, "failed probes come first among the links"
    finally:
        await jaeger.stop()
