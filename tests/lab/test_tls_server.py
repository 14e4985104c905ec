"""The TLS front: its handshake delay measured as connect -> ServerHello from a raw socket, each
bad certificate failing verification against the lab CA, and HTTP faults passing through it."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import statistics
from collections.abc import AsyncIterator

import pytest

from otelprobe.lab.certs import LabCA, LeafKind
from otelprobe.lab.faults import BadCertificate, CertProblem, ResetMidBody, TLSDelay, TTFBDelay
from otelprobe.lab.servers.http import LAB_BODY_LINE, HTTPFaultServer
from otelprobe.lab.servers.measure import http_get, measure_accuracy, server_hello_delay
from otelprobe.lab.servers.tls import TLSFront


@pytest.fixture
async def front(lab_ca: LabCA) -> AsyncIterator[TLSFront]:
    async with TLSFront(lab_ca, seed=3) as tls:
        yield tls


async def handshake(front: TLSFront, ca: LabCA) -> ssl.SSLObject:
    """A verifying client's handshake; returns the session's SSL object."""
    _, writer = await asyncio.open_connection(
        front.host, front.port, ssl=ca.client_context(), server_hostname="localhost"
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        return ssl_object
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def test_tls_delay_connect_to_server_hello(front: TLSFront) -> None:
    baseline = statistics.median([await server_hello_delay(front.host, front.port) for _ in range(3)])
    front.apply(TLSDelay(delay_s=0.2))
    delayed = statistics.median([await server_hello_delay(front.host, front.port) for _ in range(5)])
    assert baseline < 0.02
    assert 0.2 <= delayed < 0.2 + 0.02


async def test_tls_delay_leaves_tcp_connect_alone(front: TLSFront, lab_ca: LabCA) -> None:
    # The delay sits between accept and handshake: connect completes at once, and a real
    # verifying client still completes its handshake (LAB-NOTES pitfall 5 would hang here).
    front.apply(TLSDelay(delay_s=0.15))
    loop = asyncio.get_running_loop()
    start = loop.time()
    reader, writer = await asyncio.open_connection(front.host, front.port)
    connected = loop.time()
    writer.close()
    await writer.wait_closed()
    assert connected - start < 0.05
    del reader
    start = loop.time()
    ssl_object = await handshake(front, lab_ca)
    assert loop.time() - start >= 0.15
    assert ssl_object.version() in {"TLSv1.3", "TLSv1.2"}


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("expired", "certificate has expired"),
        ("not_yet_valid", "certificate is not yet valid"),
        ("wrong_host", "Hostname mismatch"),
        ("self_signed", "self-signed certificate"),
        ("short_chain", "unable to get local issuer certificate"),
    ],
)
async def test_bad_certificate_fails_verification(
    front: TLSFront, lab_ca: LabCA, problem: CertProblem, message: str
) -> None:
    front.apply(BadCertificate(problem=problem))
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        await handshake(front, lab_ca)
    assert message in info.value.verify_message
    for _ in range(100):  # the server notices the client's alert shortly after
        if front.counts["handshake_failures"]:
            break
        await asyncio.sleep(0.01)
    assert front.counts["handshake_failures"] == 1


async def test_certificate_switches_while_running(front: TLSFront, lab_ca: LabCA) -> None:
    assert (await handshake(front, lab_ca)).getpeercert()
    front.apply(BadCertificate(problem="expired"))
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(front, lab_ca)
    front.clear("bad_certificate")
    leaf: LeafKind = front.leaf
    assert leaf == "valid"
    assert (await handshake(front, lab_ca)).getpeercert()


async def test_front_answers_http_itself(front: TLSFront, lab_ca: LabCA) -> None:
    result = await http_get(
        front.host, front.port, ssl_context=lab_ca.client_context(), server_hostname="localhost"
    )
    assert result.status == 200 and result.outcome == "complete"
    assert result.body.startswith(LAB_BODY_LINE)


async def test_http_faults_pass_through_the_front(lab_ca: LabCA) -> None:
    async with (
        HTTPFaultServer() as backend,
        TLSFront(lab_ca, upstream=(backend.host, backend.port)) as tls,
    ):
        client = lab_ca.client_context()
        backend.apply(TTFBDelay(delay_s=0.1))
        slow = await http_get(tls.host, tls.port, ssl_context=client, server_hostname="localhost")
        assert slow.status == 200 and 0.1 <= slow.ttfb_s < 0.1 + 0.03
        backend.clear()
        backend.apply(ResetMidBody(after_bytes=2000))
        reset = await http_get(
            tls.host, tls.port, "/?size=20000", ssl_context=client, server_hostname="localhost"
        )
        assert reset.outcome == "reset" and len(reset.body) == 2000


async def test_https_fault_server_with_a_lab_certificate(lab_ca: LabCA) -> None:
    async with HTTPFaultServer(ssl_context=lab_ca.server_context("valid")) as server:
        assert server.url.startswith("https://")
        result = await http_get(
            server.host,
            server.port,
            "/?ttfb=50ms",
            ssl_context=lab_ca.client_context(),
            server_hostname="localhost",
        )
        assert result.status == 200 and 0.05 <= result.ttfb_s < 0.05 + 0.03


async def test_measure_accuracy_for_tls_delay() -> None:
    report = await measure_accuracy("tls_delay", 0.03, samples=5)
    assert 0.0 <= report.median_error_s < 0.015
