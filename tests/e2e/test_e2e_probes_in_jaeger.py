"""Real `otelprobe run` -> the committed collector-jaeger-sidecar.yaml Collector -> Jaeger v2: probe
traces of every kind arrive whole, with the phase spans, attributes, status and error class that
DESIGN §3/§4 and docs/spans.md promise, and Jaeger finds them by service, by `probe.target` and by
`error.type`."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from tests.support.e2e_stack import (
    CONFIG_DIR,
    Binaries,
    Trace,
    collector_overlay,
    endpoint,
    has_root,
    prober_config,
    start_collector,
    start_jaeger,
    start_prober,
    traces_of_target,
    wait_for,
)
from tests.support.e2e_targets import HOST, loopback_targets

pytestmark = pytest.mark.timeout(300)

SERVICE = "otelprobe-e2e-kinds"
VANTAGE = "e2e-vantage-a"
WEB = ["dns.lookup", "tcp.connect", "tls.handshake", "http.request", "http.ttfb", "http.transfer"]
# suffix -> (probe.kind, phase spans under the root (sorted), error.type or None)
EXPECTED: dict[str, tuple[str, list[str], str | None]] = {
    "https": ("http", sorted(WEB), None),
    "dns": ("dns", ["dns.lookup"], None),
    "tcp": ("tcp", ["tcp.connect"], None),
    "tls": ("tls", sorted(["dns.lookup", "tcp.connect", "tls.handshake"]), None),
    "icmp": ("icmp", ["icmp.echo", "icmp.echo"], None),
    "grpc": ("grpc", sorted(["tcp.connect", "rpc.call"]), None),
    "wss": ("websocket", sorted(WEB[:-1]), None),
    "http503": ("http", sorted(WEB), "http_status"),
    "refused": ("tcp", ["tcp.connect"], "connect_refused"),
}


def _check_trace(trace: Trace, target: str, expected: tuple[str, list[str], str | None]) -> None:
    kind, phases, error_type = expected
    root = trace.root
    where = f"{target} trace {trace.trace_id}"
    assert root.name == f"probe {kind}", where
    assert root.kind == "CLIENT", where
    assert sorted(s.name for s in trace.spans if s is not root) == phases, f"{where}: {trace.names()}"
    # Every span carries the target (the load-balancing exporter routes by it) and one resource.
    for span in trace.spans:
        assert span.attributes.get("probe.target") == target, f"{where}: {span.name}"
        assert span.resource["service.name"] == SERVICE
        assert span.resource["otelprobe.vantage"] == VANTAGE
        assert span.resource.get("service.instance.id")
        assert root.start_ns <= span.start_ns <= span.end_ns <= root.end_ns, f"{where}: {span.name}"
    if kind != "icmp":  # ICMP echoes are siblings under the root, the others hang off the root too
        assert all(s.parent_span_id == root.span_id for s in trace.spans if s is not root), where
    attrs = root.attributes
    assert attrs["probe.kind"] == kind and attrs["probe.attempt"] == 1, where
    assert attrs["otelprobe.vantage"] == VANTAGE, where
    if error_type is None:
        assert attrs["probe.success"] is True, f"{where}: {attrs}"
        assert "error.type" not in attrs and root.status_code != "ERROR", f"{where}: {attrs}"
        assert all(s.status_code != "ERROR" for s in trace.spans), where
    else:
        assert attrs["probe.success"] is False, where
        assert attrs["error.type"] == error_type, f"{where}: {attrs}"
        assert attrs.get("probe.error.detail"), where
        assert root.status_code == "ERROR", where


def _check_kind_attributes(traces: dict[str, Trace], ports: dict[str, int]) -> None:
    https = traces["https"].root.attributes
    assert https["http.request.method"] == "GET"
    assert https["url.full"] == f"https://{HOST}:{ports['https']}/health"
    assert https["server.address"] == HOST and https["server.port"] == ports["https"]
    assert https["http.response.status_code"] == 200
    assert https["network.protocol.version"] in {"1.1", "2"}
    assert https["network.peer.address"] == "127.0.0.1"
    assert https["user_agent.synthetic.type"] == "test"
    for key in ("tls.protocol.version", "tls.cipher", "tls.server.not_after", "tls.server.subject"):
        assert https.get(key), key
    assert traces["http503"].root.attributes["http.response.status_code"] == 503

    tls = traces["tls"].root.attributes
    for key in ("tls.protocol.version", "tls.cipher", "tls.server.not_after", "tls.server.issuer"):
        assert tls.get(key), key
    assert len(tls["tls.server.hash.sha256"]) == 64
    assert traces["tls"].phase("tls.handshake").status_code != "ERROR"

    dns = traces["dns"]
    assert dns.root.attributes["dns.question.name"].rstrip(".") == HOST
    assert "127.0.0.1" in dns.root.attributes["dns.answers"]

    grpc_root = traces["grpc"].root.attributes
    assert grpc_root["rpc.system"] == "grpc" and grpc_root["rpc.grpc.status_code"] == 0

    icmp = traces["icmp"]
    assert icmp.root.attributes["probe.icmp.packets_received"] == 2
    assert sorted(s.attributes["probe.icmp.sequence"] for s in icmp.spans if s.name == "icmp.echo") == [
        0,
        1,
    ] or (len({s.attributes["probe.icmp.sequence"] for s in icmp.spans if s.name == "icmp.echo"}) == 2)

    refused = traces["refused"].phase("tcp.connect")
    assert refused.status_code == "ERROR" and refused.attributes["error.type"] == "connect_refused"


async def test_every_probe_kind_reaches_jaeger_whole(
    binaries: Binaries, tmp_path: Path, cert_authority: trustme.CA
) -> None:
    if not has_root():
        pytest.skip("ICMP echo to 127.0.0.1 needs root here")
    jaeger = await start_jaeger(binaries, tmp_path)
    otlp_grpc = endpoint()
    collector = await start_collector(
        binaries,
        tmp_path,
        "collector",
        CONFIG_DIR / "collector-jaeger-sidecar.yaml",
        collector_overlay(otlp_grpc, jaeger),
    )
    prober = None
    try:
        async with loopback_targets(tmp_path, cert_authority) as targets:
            config = prober_config(
                otlp_grpc,
                targets.target_list("e2e"),
                vantage=VANTAGE,
                service=SERVICE,
                interval="2s",
                timeout="2s",  # generous: a loaded 2-core machine must not fail a healthy probe
            )
            prober = await start_prober(tmp_path, "prober", config)
            names = [f"e2e-{suffix}" for suffix in EXPECTED]

            async def two_traces_each() -> list[Trace] | None:
                found = await jaeger.find_traces(SERVICE)
                return found if all(len(traces_of_target(found, n)) >= 2 for n in names) else None

            found = await wait_for(
                two_traces_each, 120, "two traces of every target in Jaeger", 1.0, watch=[prober]
            )
            await prober.stop()
            ports = {"https": targets.https_port}
    finally:
        if prober:
            await prober.stop()
        await collector.stop()

    try:
        sample: dict[str, Trace] = {}
        for suffix, expected in EXPECTED.items():
            target = f"e2e-{suffix}"
            mine = traces_of_target(found, target)
            for trace in mine:
                _check_trace(trace, target, expected)
            sample[suffix] = mine[0]
        _check_kind_attributes(sample, ports)

        # api_v3 (gRPC: its HTTP gateway ignores attributes in v1.75.0) by probe.target: every
        # target's traces, whole, and nobody else's.
        for suffix, expected in EXPECTED.items():
            target = f"e2e-{suffix}"
            by_target = await jaeger.find_traces_grpc(SERVICE, {"probe.target": target})
            assert len(by_target) >= 2, target
            for trace in by_target:
                _check_trace(trace, target, expected)
        http_errors = await jaeger.find_traces_grpc(SERVICE, {"error.type": "http_status"})
        assert http_errors and {t.root.attributes["probe.target"] for t in http_errors} == {"e2e-http503"}

        # Jaeger's search by tag (what the UI's Tags box sends): by probe.target, by error.type.
        for suffix in ("https", "refused"):
            hits = await jaeger.search_tags(SERVICE, {"probe.target": f"e2e-{suffix}"})
            assert len(hits) >= 2
            for hit in hits:
                targets_in = {
                    t["value"] for s in hit["spans"] for t in s["tags"] if t["key"] == "probe.target"
                }
                assert targets_in == {f"e2e-{suffix}"}
        refused = await jaeger.search_tags(SERVICE, {"error.type": "connect_refused"})
        assert refused and all(
            {t["value"] for s in h["spans"] for t in s["tags"] if t["key"] == "probe.target"}
            == {"e2e-refused"}
            for h in refused
        )
        by_operation = await jaeger.find_traces(SERVICE, operation="probe icmp")
        assert by_operation and {t.root.attributes["probe.target"] for t in by_operation} == {"e2e-icmp"}
    finally:
        await jaeger.stop()
