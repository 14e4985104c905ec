"""mTLS on the receiver's gRPC listener: only clients with a certificate from the client CA export;
one without a certificate, or with one from another CA, fails the handshake and delivers nothing."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import trustme

from otelprobe.sidecar.receiver import OTLPReceiver, ReceiverTLS
from tests.sidecar.test_sidecar_receiver_guard import TRACE_METHOD, one_span_request, server_tls

__all__ = ["server_tls"]  # the fixture, shared with the HTTP mTLS test


def _credentials(server_ca: trustme.CA, client_ca: trustme.CA | None) -> grpc.ChannelCredentials:
    if client_ca is None:
        return grpc.ssl_channel_credentials(root_certificates=server_ca.cert_pem.bytes())
    leaf = client_ca.issue_cert("prober.example")
    return grpc.ssl_channel_credentials(
        root_certificates=server_ca.cert_pem.bytes(),
        private_key=leaf.private_key_pem.bytes(),
        certificate_chain=leaf.cert_chain_pems[0].bytes(),
    )


async def test_grpc_mtls_admits_only_clients_with_a_certificate_from_the_client_ca(
    server_tls: tuple[ReceiverTLS, trustme.CA, Path], cert_authority: trustme.CA
) -> None:
    tls, clients, _ = server_tls
    async with OTLPReceiver(http_port=None, tls=tls) as receiver:
        for client_ca in (None, trustme.CA()):  # no certificate; one the client CA did not sign
            credentials = _credentials(cert_authority, client_ca)
            async with grpc.aio.secure_channel(receiver.grpc_endpoint, credentials) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as failure:
                    await channel.unary_unary(TRACE_METHOD)(one_span_request(), timeout=5)
                assert failure.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake failed
        assert receiver.queue.qsize() == 0
        credentials = _credentials(cert_authority, clients)
        async with grpc.aio.secure_channel(receiver.grpc_endpoint, credentials) as channel:
            await channel.unary_unary(TRACE_METHOD)(one_span_request(), timeout=5)
        assert receiver.queue.qsize() == 1
