"""The benchmarks' local Collector stand-in: otelprobe's OTLPReceiver on 127.0.0.1 in its own process.

Prints {"http": port, "grpc": port} once listening; each "stats" line on stdin is answered with the
span and request counts; EOF on stdin stops it. Requests are decoded and counted, then dropped
(`--spans-out PATH`: each span also as a line of bench/_span_log.py, flushed per request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from _span_log import span_lines
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelprobe.sidecar.receiver import OTLPReceiver


async def main(spans_out: Path | None) -> None:
    spans = 0
    log = spans_out.open("w") if spans_out else None

    def on_traces(request: ExportTraceServiceRequest) -> None:
        nonlocal spans
        spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        if log is not None:
            log.writelines(line + "\n" for line in span_lines(request))
            log.flush()

    receiver = OTLPReceiver(host="127.0.0.1", on_traces=on_traces, on_metrics=lambda _r: None)
    await receiver.start()
    print(json.dumps({"http": receiver.http_port, "grpc": receiver.grpc_port}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            if line.strip() == b"stats":
                stats = receiver.stats
                counts = {
                    "spans": spans,
                    "trace_requests": stats.trace_requests,
                    "metric_requests": stats.metric_requests,
                }
                print(json.dumps(counts), flush=True)
    finally:
        await receiver.stop()
        if log is not None:
            log.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans-out", type=Path)
    asyncio.run(main(parser.parse_args().spans_out))
