"""The gRPC health probe against a real grpcio (grpc.aio) health server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from otelprobe import names
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.grpc import GRPCProbe, GRPCProbeConfig, decode_response, encode_request

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class HealthServer:
    port: int
    servicer: health_aio.HealthServicer
    metadata_seen: list[tuple[str, str]]


class _RecordingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, seen: list[tuple[str, str]]) -> None:
        self.seen = seen

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        self.seen.extend((m.key, m.value) for m in handler_call_details.invocation_metadata)
        return await continuation(handler_call_details)


async def _serve(credentials: grpc.ServerCredentials | None) -> AsyncIterator[HealthServer]:
    seen: list[tuple[str, str]] = []
    server = grpc.aio.server(interceptors=[_RecordingInterceptor(seen)])
    servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await servicer.set("", SERVING)
    await servicer.set("checkout", SERVING)
    await server.start()
    try:
        yield HealthServer(port, servicer, seen)
    finally:
        await server.stop(None)


@pytest.fixture
async def plain_server() -> AsyncIterator[HealthServer]:
    async for server in _serve(None):
        yield server


@pytest.fixture
async def tls_server(cert_authority: trustme.CA) -> AsyncIterator[HealthServer]:
    cert = cert_authority.issue_cert("grpc.test", "127.0.0.1")
    credentials = grpc.ssl_server_credentials(
        [(cert.private_key_pem.bytes(), b"".join(blob.bytes() for blob in cert.cert_chain_pems))]
    )
    async for server in _serve(credentials):
        yield server


def _probe(url: str, **overrides: object) -> GRPCProbe:
    return GRPCProbe(
        GRPCProbeConfig.from_url(url, name="grpc-target", **overrides), ProbeContext(vantage="test")
    )


async def test_serving_service_succeeds_with_phases_and_rpc_attributes(plain_server: HealthServer) -> None:
    [result] = await _probe(f"grpc://127.0.0.1:{plain_server.port}/checkout").run()

    assert result.success, result.error
    assert [p.name for p in result.phases] == [names.SPAN_TCP_CONNECT, names.SPAN_RPC_CALL]
    attrs = result.attributes
    assert attrs[names.RPC_SYSTEM] == "grpc"
    assert attrs[names.RPC_SERVICE] == "grpc.health.v1.Health"
    assert attrs[names.RPC_METHOD] == "Check"
    assert attrs[names.RPC_GRPC_STATUS_CODE] == 0
    assert attrs[names.PROBE_GRPC_SERVING_STATUS] == "SERVING"
    rpc = result.phase(names.SPAN_RPC_CALL)
    assert rpc is not None and rpc.attributes[names.RPC_GRPC_STATUS_CODE] == 0
    assert 0 < rpc.duration_s < 2.0


async def test_not_serving_is_an_assertion_failure(plain_server: HealthServer) -> None:
    probe = _probe(f"grpc://127.0.0.1:{plain_server.port}/checkout")
    await plain_server.servicer.set("checkout", NOT_SERVING)
    [down] = await probe.run()
    await plain_server.servicer.set("checkout", SERVING)
    [up] = await probe.run(attempt=2)

    assert down.error is not None
    assert (down.error.error_type, down.error.detail) == ("assertion_failed", "not_serving")
    assert down.attributes[names.PROBE_GRPC_SERVING_STATUS] == "NOT_SERVING"
    assert up.success


async def test_unknown_service_is_grpc_not_found(plain_server: HealthServer) -> None:
    [result] = await _probe(f"grpc://127.0.0.1:{plain_server.port}/no-such-service").run()

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("protocol_error", "grpc_not_found")
    assert result.attributes[names.RPC_GRPC_STATUS_CODE] == 5


async def test_server_without_health_service_is_grpc_unimplemented() -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        [result] = await _probe(f"grpc://127.0.0.1:{port}/").run()
    finally:
        await server.stop(None)

    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("protocol_error", "grpc_unimplemented")


async def test_metadata_reaches_the_server(plain_server: HealthServer) -> None:
    probe = _probe(f"grpc://127.0.0.1:{plain_server.port}/", metadata={"x-tenant": "blue"})
    [result] = await probe.run()

    assert result.success
    assert ("x-tenant", "blue") in plain_server.metadata_seen


async def test_tls_adds_a_handshake_phase_and_certificate_attributes(
    tls_server: HealthServer, cert_authority: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    cert_authority.cert_pem.write_to_path(str(ca_file))
    url = f"grpcs://127.0.0.1:{tls_server.port}/checkout"
    [result] = await _probe(url, tls={"ca_file": str(ca_file), "sni": "grpc.test"}).run()

    assert result.success, result.error
    assert [p.name for p in result.phases] == [
        names.SPAN_TCP_CONNECT,
        names.SPAN_TLS_HANDSHAKE,
        names.SPAN_RPC_CALL,
    ]
    assert result.attributes[names.TLS_NEXT_PROTOCOL] == "h2"


async def test_tls_untrusted_certificate_is_a_tls_error(tls_server: HealthServer) -> None:
    [result] = await _probe(f"grpcs://127.0.0.1:{tls_server.port}/").run()

    assert result.error is not None
    assert result.error.error_type == "tls_error"


async def test_plaintext_to_closed_port_is_refused() -> None:
    [result] = await _probe("grpc://127.0.0.1:1/").run()

    assert result.error is not None
    assert result.error.error_type == "connect_refused"


async def test_name_is_resolved_as_a_dns_phase(plain_server: HealthServer) -> None:
    [result] = await _probe(f"grpc://localhost:{plain_server.port}/", ip="ip4").run()

    assert result.success, result.error
    assert result.phases[0].name == names.SPAN_DNS_LOOKUP


def test_message_codec_round_trip() -> None:
    request = encode_request("checkout")
    assert request[0] == 0 and int.from_bytes(request[1:5], "big") == len(request) - 5
    message = health_pb2.HealthCheckResponse(status=NOT_SERVING).SerializeToString()
    assert decode_response(b"\x00" + len(message).to_bytes(4, "big") + message) == "NOT_SERVING"


def test_from_url() -> None:
    config = GRPCProbeConfig.from_url("grpcs://api.test/pkg.Svc")
    assert (config.address, config.service, config.tls is not None) == ("api.test:443", "pkg.Svc", True)
    plain = GRPCProbeConfig.from_url("grpc://api.test:50051")
    assert (plain.address, plain.service, plain.tls) == ("api.test:50051", "", None)
    with pytest.raises(ValueError, match="invalid metadata key"):
        GRPCProbeConfig.from_url("grpc://api.test:1", metadata={"Grpc-Timeout": "1"})
