"""The sidecar's receiver under pressure and behind a door: a full queue answers retryable statuses
with back-off hints (HTTP 503 + Retry-After, gRPC UNAVAILABLE + RetryInfo), a bearer token is
required when configured (HTTP 401, gRPC UNAUTHENTICATED), TLS and mTLS with real certificates,
and OTLP logs are decoded too."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import grpc
import pytest
import trustme
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otelprobe.sidecar.receiver import OTLPReceiver, ReceiverTLS

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def one_span_request(n: int = 1) -> bytes:
    span = Span(trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"), name="probe http")
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )
    return request.SerializeToString()


async def test_a_full_queue_tells_http_senders_to_retry_after_a_while() -> None:
    async with (
        OTLPReceiver(grpc_port=None, max_queue=2, when_full="retry", retry_after_s=2.5) as receiver,
        aiohttp.ClientSession() as http,
    ):
        statuses = []
        for n in range(1, 5):
            async with http.post(
                f"{receiver.http_endpoint}/v1/traces", data=one_span_request(n), headers=PROTOBUF
            ) as response:
                statuses.append((response.status, response.headers.get("Retry-After"), await response.read()))
        assert [s for s, _, _ in statuses] == [200, 200, 503, 503]
        assert statuses[2][1] == "3"  # whole seconds, rounded up
        status = status_pb2.Status.FromString(statuses[2][2])
        assert status.code == 14 and "retry" in status.message  # UNAVAILABLE
        assert receiver.queue.qsize() == 2  # nothing beyond the bound was kept
        assert receiver.stats.retry_answers == 2 and receiver.stats.trace_requests == 2
        # Once read, there is room again.
        receiver.queue.get_nowait()
        async with http.post(
            f"{receiver.http_endpoint}/v1/traces", data=one_span_request(9), headers=PROTOBUF
        ) as response:
            assert response.status == 200


async def test_a_full_queue_tells_grpc_senders_unavailable_with_retry_info() -> None:
    async with OTLPReceiver(http_port=None, max_queue=1, when_full="retry", retry_after_s=1.5) as receiver:
        async with grpc.aio.insecure_channel(receiver.grpc_endpoint) as channel:
            export = channel.unary_unary(TRACE_METHOD)
            await export(one_span_request(1))
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await export(one_span_request(2))
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        trailers = dict(failure.value.trailing_metadata() or ())
        hint = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        assert hint.retry_delay.seconds == 1 and hint.retry_delay.nanos == 500_000_000
        rich = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        assert rich.details[0].Is(error_details_pb2.RetryInfo.DESCRIPTOR)


async def test_the_bearer_token_is_required_on_http_and_grpc() -> None:
    async with (
        OTLPReceiver(bearer_token="s3cret-token", max_queue=10) as receiver,
        aiohttp.ClientSession() as http,
    ):
        url = f"{receiver.http_endpoint}/v1/traces"
        for headers, expected in (
            ({}, 401),
            ({"Authorization": "Bearer wrong"}, 401),
            ({"Authorization": "Bearer s3cret-token"}, 200),
        ):
            async with http.post(url, data=one_span_request(), headers=PROTOBUF | headers) as response:
                assert response.status == expected
                body = await response.read()
                assert b"s3cret" not in body
        async with grpc.aio.insecure_channel(receiver.grpc_endpoint) as channel:
            export = channel.unary_unary(TRACE_METHOD)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await export(one_span_request())
            assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await export(one_span_request(2), metadata=(("authorization", "Bearer s3cret-token"),))
        assert receiver.stats.unauthenticated == 3
        assert receiver.queue.qsize() == 2


@pytest.fixture
def server_tls(cert_authority: trustme.CA, tmp_path: Path) -> tuple[ReceiverTLS, trustme.CA, Path]:
    leaf = cert_authority.issue_cert("127.0.0.1", "localhost")
    cert, key, client_ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "client-ca.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    clients = trustme.CA()
    clients.cert_pem.write_to_path(str(client_ca))
    return ReceiverTLS(str(cert), str(key), str(client_ca)), clients, tmp_path


async def test_mtls_admits_only_clients_with_a_certificate_from_the_client_ca(
    server_tls: tuple[ReceiverTLS, trustme.CA, Path], cert_authority: trustme.CA
) -> None:
    tls, clients, _ = server_tls
    async with OTLPReceiver(grpc_port=None, tls=tls) as receiver:
        assert receiver.http_endpoint.startswith("https://")
        url = f"{receiver.http_endpoint}/v1/traces"
        anonymous = ssl.create_default_context()
        cert_authority.configure_trust(anonymous)
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):
                async with http.post(url, data=one_span_request(), headers=PROTOBUF, ssl=anonymous) as r:
                    await r.read()
            known = ssl.create_default_context()
            cert_authority.configure_trust(known)
            clients.issue_cert("collector.example").configure_cert(known)
            async with http.post(url, data=one_span_request(), headers=PROTOBUF, ssl=known) as response:
                assert response.status == 200
        assert receiver.queue.qsize() == 1


async def test_grpc_over_tls(
    server_tls: tuple[ReceiverTLS, trustme.CA, Path], cert_authority: trustme.CA
) -> None:
    tls, _, _ = server_tls
    server_only = ReceiverTLS(tls.cert_file, tls.key_file)
    async with OTLPReceiver(http_port=None, tls=server_only) as receiver:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert_authority.cert_pem.bytes())
        async with grpc.aio.secure_channel(receiver.grpc_endpoint, credentials) as channel:
            await channel.unary_unary(TRACE_METHOD)(one_span_request())
        assert receiver.queue.qsize() == 1


async def test_otlp_logs_are_decoded_for_their_callback() -> None:
    got: list[ExportLogsServiceRequest] = []
    record = LogRecord(time_unix_nano=1, severity_text="WARN")
    record.body.string_value = '{"slo": "availability"}'
    request = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[record])])]
    )
    async with OTLPReceiver(grpc_port=None, on_logs=got.append) as receiver, aiohttp.ClientSession() as http:
        async with http.post(
            f"{receiver.http_endpoint}/v1/logs", data=request.SerializeToString(), headers=PROTOBUF
        ) as response:
            assert response.status == 200
        async with http.post(
            f"{receiver.http_endpoint}/v1/logs", data=b"\xff\x00", headers=PROTOBUF
        ) as response:
            assert response.status == 400
    assert got[0].resource_logs[0].scope_logs[0].log_records[0].body.string_value == '{"slo": "availability"}'
