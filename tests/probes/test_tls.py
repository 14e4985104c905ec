"""The tls probe against loopback servers with the lab CA's good and broken certificates."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme

from otelprobe.lab.certs import LabCA, LeafKind
from otelprobe.lab.faults import BadCertificate
from otelprobe.lab.servers.ports import RefusedPort
from otelprobe.lab.servers.tls import TLSFront
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.tls import TLSProbe, TLSProbeConfig
from otelprobe.results import ProbeResult
from tests.support.tls_servers import close_after_read, serve


async def probe_kind(lab_ca: LabCA, ca_file: str, kind: LeafKind, **fields: Any) -> ProbeResult:
    """Probe the lab's TLS front serving the `kind` leaf (a bad_certificate fault unless valid)."""
    async with TLSFront(lab_ca) as front:
        if kind != "valid":
            front.apply(BadCertificate(problem=kind))
        return await probe(f"127.0.0.1:{front.port}", ca_file, **fields)


async def probe(address: str, ca_file: str | None, **fields: Any) -> ProbeResult:
    tls = {"ca_file": ca_file, **fields.pop("tls", {})}
    config = TLSProbeConfig.model_validate(
        {"name": "t", "address": address, "timeout": "2s", "tls": tls, **fields}
    )
    [result] = await TLSProbe(config, ProbeContext(vantage="test")).run()
    return result


async def test_valid_certificate_reports_session_and_chain(lab_ca: LabCA, lab_ca_file: str) -> None:
    result = await probe_kind(lab_ca, lab_ca_file, "valid", tls={"sni": "localhost"})
    assert result.success, result.error
    assert [p.name for p in result.phases] == ["tcp.connect", "tls.handshake"]
    attrs = result.attributes
    assert attrs["tls.protocol.version"] == "1.3" and attrs["tls.cipher"]
    assert attrs["probe.tls.hostname_verified"] is True and attrs["probe.tls.chain_trusted"] is True
    # The verified chain: leaf, the intermediate the server sent, and the trusted root.
    assert attrs["probe.tls.chain.length"] == 3
    assert attrs["probe.tls.chain.subjects"] == (
        "CN=localhost",
        "CN=otelprobe lab intermediate CA",
        "CN=otelprobe lab root CA",
    )
    assert "localhost" in attrs["probe.tls.server.sans"]  # type: ignore[operator]
    assert len(attrs["probe.tls.chain.hash.sha256"]) == 3  # type: ignore[arg-type]
    assert 80 * 86400 < attrs["probe.tls.cert.remaining"] < 91 * 86400  # type: ignore[operator]
    assert attrs["server.address"] == "localhost"


@pytest.mark.parametrize(
    ("kind", "detail", "trusted", "host_ok"),
    [
        ("expired", "certificate_expired", True, True),
        ("not_yet_valid", "certificate_not_yet_valid", True, True),
        ("wrong_host", "hostname_mismatch", True, False),
        ("self_signed", "self_signed_certificate", False, True),
        ("short_chain", "untrusted_certificate", False, True),
    ],
)
async def test_broken_certificates_fail_with_details_from_the_same_handshake(
    lab_ca: LabCA, lab_ca_file: str, kind: LeafKind, detail: str, trusted: bool, host_ok: bool
) -> None:
    result = await probe_kind(lab_ca, lab_ca_file, kind)
    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("tls_error", detail)
    handshake = result.phase("tls.handshake")
    assert handshake is not None and handshake.error_type == "tls_error"
    attrs = result.attributes
    assert attrs["probe.tls.chain_trusted"] is trusted
    assert attrs["probe.tls.hostname_verified"] is host_ok
    assert attrs["tls.server.subject"] and attrs["tls.server.hash.sha256"]
    if kind == "expired":
        not_after = dt.datetime.fromisoformat(str(attrs["tls.server.not_after"]))
        assert not_after < dt.datetime.now(dt.UTC)
        assert attrs["probe.tls.cert.remaining"] < 0  # type: ignore[operator]


async def test_untrusted_chain_can_be_accepted_and_still_reported(lab_ca: LabCA, lab_ca_file: str) -> None:
    result = await probe_kind(lab_ca, lab_ca_file, "expired", expect={"chain_trusted": False})
    assert result.success
    assert result.attributes["probe.tls.chain_trusted"] is True
    assert result.attributes["probe.tls.cert.remaining"] < 0  # type: ignore[operator]


async def test_expiry_thresholds(lab_ca: LabCA, lab_ca_file: str) -> None:
    warn = await probe_kind(
        lab_ca, lab_ca_file, "valid", expect={"cert_warn_before": "100d", "cert_fail_before": "7d"}
    )
    assert warn.success and warn.attributes["probe.tls.cert.expiry_warning"] is True
    fail = await probe_kind(lab_ca, lab_ca_file, "valid", expect={"cert_fail_before": "100d"})
    assert fail.error is not None
    assert (fail.error.error_type, fail.error.detail) == ("assertion_failed", "certificate_expires_soon")


async def test_version_limits_and_assertion(lab_ca: LabCA, lab_ca_file: str) -> None:
    capped = await probe_kind(
        lab_ca, lab_ca_file, "valid", tls={"max_version": "1.2"}, expect={"versions": ["1.2"]}
    )
    assert capped.success, capped.error
    assert capped.attributes["tls.protocol.version"] == "1.2"
    refused = await probe_kind(lab_ca, lab_ca_file, "valid", expect={"versions": ["1.2"]})
    assert refused.error is not None and refused.error.detail == "tls_version_not_allowed"


async def test_unverified_probe_reports_hostname_match(lab_ca: LabCA, lab_ca_file: str) -> None:
    result = await probe_kind(lab_ca, lab_ca_file, "wrong_host", tls={"verify": False})
    assert result.success
    assert result.attributes["probe.tls.hostname_verified"] is False
    assert "probe.tls.chain_trusted" not in result.attributes


async def test_alpn_and_client_certificate(
    lab_ca: LabCA, lab_ca_file: str, cert_authority: trustme.CA, tmp_path: Path
) -> None:
    server_ctx = lab_ca.server_context("valid", alpn=("h2", "http/1.1"))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cadata=cert_authority.cert_pem.bytes().decode())
    client = cert_authority.issue_cert("probe-client")
    client_pem = tmp_path / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(client_pem))
    async with serve(close_after_read, server_ctx) as port:
        result = await probe(
            f"127.0.0.1:{port}", lab_ca_file, alpn=["h2"], tls={"client_cert": str(client_pem)}
        )
    assert result.success, result.error
    assert result.attributes["tls.next_protocol"] == "h2"


async def test_refused_port_is_connect_refused(lab_ca_file: str) -> None:
    with RefusedPort() as refused:
        result = await probe(f"127.0.0.1:{refused.port}", lab_ca_file)
    assert result.error is not None and result.error.error_type == "connect_refused"


def test_from_url() -> None:
    assert TLSProbeConfig.from_url("tls://example.test").address == "example.test:443"
    assert TLSProbeConfig.from_url("tls://[::1]:8443", tls={"sni": "x.test"}).tls.server_name == "x.test"
    with pytest.raises(ValueError):
        TLSProbeConfig.model_validate(
            {"name": "x", "address": "h:1", "expect": {"cert_warn_before": "1d", "cert_fail_before": "7d"}}
        )
