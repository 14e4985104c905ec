"""Loopback targets of every probe kind for the end-to-end suite: an HTTPS + WebSocket server with a
certificate made in the test, a gRPC health server, and from the lab a real authoritative DNS
server and a refused port. The HTTPS app is not the lab's: it also serves a WebSocket echo."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import trustme
from aiohttp import WSMsgType, web
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2_grpc

from otelprobe.lab.servers.dns import DNSFaultServer
from otelprobe.lab.servers.ports import RefusedPort

HOST = "www.lab.test"  # resolved by our DNS server only


@dataclass
class Targets:
    https_port: int
    dns_port: int
    grpc_port: int
    refused_port: int
    ca_file: Path

    def resolver(self) -> dict[str, Any]:
        return {"server": f"127.0.0.1:{self.dns_port}"}

    def tls(self) -> dict[str, Any]:
        return {"ca_file": str(self.ca_file)}

    def configs(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Target name -> config: one of each kind, and two that fail (HTTP 503, a refused port)."""
        base = f"https://{HOST}:{self.https_port}"
        common = {"resolver": self.resolver(), "ip": "ip4"}
        return {
            f"{prefix}-https": {
                "kind": "http",
                "url": f"{base}/health",
                "tls": self.tls(),
                **common,
            },
            f"{prefix}-dns": {
                "kind": "dns",
                "server": f"127.0.0.1:{self.dns_port}",
                "query_name": HOST,
                "query_type": "A",
            },
            f"{prefix}-tcp": {"kind": "tcp", "address": f"127.0.0.1:{self.https_port}"},
            f"{prefix}-tls": {
                "kind": "tls",
                "address": f"{HOST}:{self.https_port}",
                "tls": self.tls(),
                **common,
            },
            f"{prefix}-icmp": {
                "kind": "icmp",
                "host": "127.0.0.1",
                "count": 2,
                "packet_interval": "50ms",
                "packet_timeout": "300ms",
            },
            f"{prefix}-grpc": {"kind": "grpc", "address": f"127.0.0.1:{self.grpc_port}"},
            f"{prefix}-wss": {
                "kind": "websocket",
                "url": f"wss://{HOST}:{self.https_port}/ws",
                "tls": self.tls(),
                **common,
            },
            f"{prefix}-http503": {
                "kind": "http",
                "url": f"{base}/broken",
                "tls": self.tls(),
                **common,
            },
            f"{prefix}-refused": {"kind": "tcp", "address": f"127.0.0.1:{self.refused_port}"},
        }

    def target_list(self, prefix: str, kinds: set[str] | None = None) -> list[dict[str, Any]]:
        return [
            {"name": name, **config}
            for name, config in self.configs(prefix).items()
            if kinds is None or config["kind"] in kinds
        ]


async def _health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _broken(_: web.Request) -> web.Response:
    return web.Response(status=503, text="unavailable")


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
    return ws


@contextlib.asynccontextmanager
async def loopback_targets(tmp: Path, ca: trustme.CA) -> AsyncIterator[Targets]:
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST, "127.0.0.1").configure_cert(context)

    app = web.Application()
    app.router.add_get("/health", _health)
    app.router.add_get("/broken", _broken)
    app.router.add_get("/ws", _ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    https_port = int(runner.addresses[0][1])

    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with DNSFaultServer(zone={"www": {"A": ["127.0.0.1"]}}) as dns:
            with RefusedPort() as refused:  # reserved while the targets live: nobody else takes it
                yield Targets(https_port, dns.port, grpc_port, refused.port, ca_file)
    finally:
        await server.stop(grace=None)
        await runner.cleanup()
