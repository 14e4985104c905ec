"""collector-file-recording.yaml records real probe traffic as OTLP JSON lines; the recording then
(a) is read by otelprobe's own recording reader, (b) goes through `otelprobe attribute`, and
(c) is replayed line by line into Jaeger, where the same traces appear whole.

The Collector's OTLP JSON file receiver (contrib receiver/otlpjsonfilereceiver) is not served by
the Go module proxy at any release, so the replay posts each line, as it is, to Jaeger's OTLP/HTTP
receiver (`Content-Type: application/json`), which is what that receiver would send on."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
import trustme
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otelprobe.attribution.records import read_records
from otelprobe.telemetry.otlp_json import json_to_message
from tests.support.e2e_stack import (
    CONFIG_DIR,
    REPO,
    Binaries,
    endpoint,
    otelprobe_argv,
    prober_config,
    start_collector,
    start_jaeger,
    start_prober,
    wait_for,
)
from tests.support.e2e_targets import loopback_targets

pytestmark = pytest.mark.timeout(300)
SERVICE = "otelprobe-e2e-recording"


def _records_per_target(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    frame, _ = read_records(path)
    return Counter(frame["target"]) if len(frame) else Counter()


async def test_a_recording_reads_attributes_and_replays_into_jaeger(
    binaries: Binaries, tmp_path: Path, cert_authority: trustme.CA
) -> None:
    traces_file, metrics_file = tmp_path / "rec" / "traces.jsonl", tmp_path / "rec" / "metrics.jsonl"
    traces_file.parent.mkdir()  # the file exporter does not create directories (see the config's comment)
    otlp_grpc = endpoint()
    overlay = {
        "receivers": {
            "otlp": {"protocols": {"grpc": {"endpoint": otlp_grpc}, "http": {"endpoint": endpoint()}}}
        },
        "exporters": {"file/traces": {"path": str(traces_file)}, "file/metrics": {"path": str(metrics_file)}},
    }
    collector = await start_collector(
        binaries, tmp_path, "recorder", CONFIG_DIR / "collector-file-recording.yaml", overlay
    )
    names = ["rec-https", "rec-http503", "rec-refused", "rec-dns"]
    try:
        async with loopback_targets(tmp_path, cert_authority) as targets:
            chosen = [t for t in targets.target_list("rec") if t["name"] in names]
            config = prober_config(
                otlp_grpc,
                chosen,
                vantage="e2e-recorder",
                service=SERVICE,
                interval="2s",
                timeout="2s",  # generous: a loaded 2-core machine must not time a healthy probe out
                extra_telemetry={"metric_export_interval": "1s"},
            )
            prober = await start_prober(tmp_path, "prober", config)
            try:
                await wait_for(
                    lambda: all(_records_per_target(traces_file)[n] >= 5 for n in names),
                    120,
                    "5 recorded probes of every target",
                    1.0,
                )
            finally:
                assert await prober.stop() == 0, prober.text()[-3000:]
    finally:
        assert await collector.stop() == 0, collector.proc.text()[-3000:]

    # (a) otelprobe's recording reader: every line parses, every trace is a whole probe record.
    frame, stats = read_records(traces_file)
    assert stats.bad_lines == 0 and stats.bad_spans == 0 and stats.orphan_traces == 0, stats.summary()
    by_target = frame.groupby("target")
    assert set(by_target.groups) == set(names)
    assert set(frame[frame.target == "rec-http503"].error_type) == {"http_status"}
    assert set(frame[frame.target == "rec-refused"].error_type) == {"connect_refused"}
    healthy = frame[frame.target == "rec-https"]
    assert healthy.success.all() and healthy.ttfb_s.notna().all() and healthy.tls_s.notna().all()
    assert set(frame.vantage) == {"e2e-recorder"}
    # Metrics are not probe spans: each line parses as an ExportMetricsServiceRequest.
    metrics = [
        json_to_message(line, ExportMetricsServiceRequest())
        for line in metrics_file.read_text().splitlines()
        if line.strip()
    ]
    metric_names = {
        m.name for r in metrics for rm in r.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert "probe.duration" in metric_names, metric_names

    # (b) the attribution command reads the same file.
    out = tmp_path / "attributions.jsonl"
    process = await asyncio.create_subprocess_exec(
        *otelprobe_argv(
            "attribute",
            "--model",
            str(REPO / "models" / "default"),
            "--input",
            str(traces_file),
            "--window",
            "2s",
            "--out",
            str(out),
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(180):
        _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    summary = stderr.decode()
    assert str(len(frame)) in summary, summary  # it read every probe record
    for line in out.read_text().splitlines():
        record = json.loads(line)
        assert record["target"] in names and record["vantage"] == "e2e-recorder"

    # (c) replay: each line, as recorded, into Jaeger; the same traces come out whole.
    jaeger = await start_jaeger(binaries, tmp_path)
    try:
        lines = [line for line in traces_file.read_text().splitlines() if line.strip()]
        async with aiohttp.ClientSession() as session:
            for line in lines:
                async with session.post(
                    f"{jaeger.otlp_http}/v1/traces", data=line, headers={"Content-Type": "application/json"}
                ) as response:
                    assert response.status == 200, await response.text()
        recorded_spans = Counter(
            span["traceId"].lower()
            for line in lines
            for rs in json.loads(line)["resourceSpans"]
            for ss in rs["scopeSpans"]
            for span in ss["spans"]
        )

        async def all_replayed() -> bool:
            found = await jaeger.find_traces(SERVICE, limit=10000)
            return {t.trace_id: len(t.spans) for t in found} == dict(recorded_spans)

        await wait_for(all_replayed, 60, "every recorded trace, with all its spans, in Jaeger", 1.0)
        assert set(recorded_spans) == set(frame.trace_id)
    finally:
        await jaeger.stop()
