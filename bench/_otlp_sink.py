"""The benchmarks' local Collector stand-in: otelprobe's OTLPReceiver on 127.0.0.1 in its own process.

Prints {"http": port, "grpc": port} once listening; each "stats" line on stdin is answered with the
span and request counts; EOF on stdin stops it. Requests are decoded and counted, then dropped.
"""

from __future__ import annotations

import asyncio
import json
import sys

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelprobe.sidecar.receiver import OTLPReceiver


async def main() -> None:
    spans = 0

    def on_traces(request: ExportTraceServiceRequest) -> None:
        nonlocal spans
        spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)

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


if __name__ == "__main__":
    asyncio.run(main())
