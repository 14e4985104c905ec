"""The tcp probe against loopback servers: connect, dialogue, TLS, STARTTLS and their failures."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from pydantic import ValidationError

from otelprobe.config import load_text
from otelprobe.lab.certs import LabCA
from otelprobe.lab.servers.tls import TLSFront
from otelprobe.probes.base import ProbeContext
from otelprobe.probes.tcp.probe import TCPProbe, TCPProbeConfig
from otelprobe.results import ProbeResult
from otelprobe.settings.common import TLSClientConfig
from tests.support.tls_servers import close_after_read, pop3_server, serve, smtp_server


async def probe(address: str, **fields: Any) -> ProbeResult:
    config = TCPProbeConfig.model_validate({"name": "t", "address": address, "timeout": "2s", **fields})
    [result] = await TCPProbe(config, ProbeContext(vantage="test")).run()
    return result


def names(result: ProbeResult) -> list[str]:
    return [p.name for p in result.phases]


async def test_connect_only() -> None:
    async with serve(close_after_read) as port:
        result = await probe(f"127.0.0.1:{port}")
    assert result.success, result.error
    assert names(result) == ["tcp.connect"]
    assert result.attributes["network.peer.address"] == "127.0.0.1"


async def test_name_is_resolved_first() -> None:
    async with serve(close_after_read) as port:
        result = await probe(f"localhost:{port}", ip="ip4", source_address="127.0.0.1")
    assert result.success, result.error
    assert names(result) == ["dns.lookup", "tcp.connect"]


async def test_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await probe(f"127.0.0.1:{port}")
    assert result.error is not None and result.error.error_type == "connect_refused"


async def echo_dialogue(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HELLO lab\r\n")
    line = await reader.readline()
    if line == b"PING\r\n":
        writer.write(b"PONG\r\n")
        await writer.drain()
    await reader.read(1024)


async def test_dialogue_send_expect() -> None:
    dialogue = [{"expect": "^HELLO"}, {"send": "PING\r\n", "expect": "^PONG$"}]
    async with serve(echo_dialogue) as port:
        result = await probe(f"127.0.0.1:{port}", dialogue=dialogue)
        assert result.success, result.error
        assert names(result) == ["tcp.connect", "tcp.dialogue"]
        mismatch = await probe(
            f"127.0.0.1:{port}", dialogue=[{"send": "PANG\r\n", "expect": "PONG"}], timeout="300ms"
        )
    assert mismatch.error is not None
    assert (mismatch.error.error_type, mismatch.error.detail) == (
        "timeout",
        "deadline_exceeded_in_tcp_dialogue",
    )
    assert mismatch.duration_s < 1.0


async def test_dialogue_eof_before_match_is_assertion_failure() -> None:
    async def banner_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await writer.drain()

    async with serve(banner_then_close) as port:
        ok = await probe(f"127.0.0.1:{port}", dialogue=[{"expect": r"^SSH-2\.0-"}])
        bad = await probe(f"127.0.0.1:{port}", dialogue=[{"expect": r"^SSH-1\.99-"}])
    assert ok.success, ok.error
    assert bad.error is not None
    assert (bad.error.error_type, bad.error.detail) == ("assertion_failed", "expect_not_matched")
    assert bad.phases[-1].name == "tcp.dialogue" and bad.phases[-1].error_type == "assertion_failed"


async def test_direct_tls(lab_ca: LabCA, lab_ca_file: str) -> None:
    async with TLSFront(lab_ca) as front:
        port = front.port
        result = await probe(f"localhost:{port}", ip="ip4", tls={"ca_file": lab_ca_file})
        untrusted = await probe(f"localhost:{port}", ip="ip4", tls={})
    assert result.success, result.error
    assert names(result) == ["dns.lookup", "tcp.connect", "tls.handshake"]
    assert result.attributes["tls.protocol.version"] == "1.3"
    assert untrusted.error is not None and untrusted.error.error_type == "tls_error"


async def test_smtp_starttls(lab_ca: LabCA, lab_ca_file: str) -> None:
    async with serve(smtp_server(lab_ca.server_context("valid"))) as port:
        result = await probe(f"127.0.0.1:{port}", starttls="smtp", tls={"ca_file": lab_ca_file})
    assert result.success, result.error
    assert names(result) == ["tcp.connect", "starttls.negotiate", "tls.handshake"]
    assert result.attributes["probe.tcp.starttls"] == "smtp"
    assert "tls.cipher" in result.attributes


async def test_smtp_starttls_refused(lab_ca: LabCA, lab_ca_file: str) -> None:
    async with serve(smtp_server(lab_ca.server_context("valid"), refuse=True)) as port:
        result = await probe(f"127.0.0.1:{port}", starttls="smtp", tls={"ca_file": lab_ca_file})
    assert result.error is not None
    assert (result.error.error_type, result.error.detail) == ("protocol_error", "starttls_refused")


async def test_pop3_starttls(lab_ca: LabCA, lab_ca_file: str) -> None:
    async with serve(pop3_server(lab_ca.server_context("valid"))) as port:
        result = await probe(f"127.0.0.1:{port}", starttls="pop3", tls={"ca_file": lab_ca_file})
    assert result.success, result.error


async def test_starttls_without_tls_settings_uses_the_defaults(lab_ca: LabCA) -> None:
    # No `tls`: STARTTLS still upgrades, verifying against the system store (which lacks the lab CA).
    async with serve(smtp_server(lab_ca.server_context("valid"))) as port:
        result = await probe(f"127.0.0.1:{port}", starttls="smtp")
    assert names(result) == ["tcp.connect", "starttls.negotiate", "tls.handshake"]
    assert result.error is not None and result.error.error_type == "tls_error"


async def test_defaults_tls_configures_tcp_tls_but_never_turns_it_on(lab_ca: LabCA, lab_ca_file: str) -> None:
    async with TLSFront(lab_ca) as front:
        tls_port = front.port
        async with serve(close_after_read) as plain_port:
            config = load_text(
                f"defaults: {{tls: {{ca_file: '{lab_ca_file}'}}, timeout: 2s}}\n"
                "targets:\n"
                f"  - {{name: tls, kind: tcp, address: 'localhost:{tls_port}', ip: ip4, tls: {{}}}}\n"
                f"  - {{name: plain, kind: tcp, address: '127.0.0.1:{plain_port}'}}\n"
            )
            [tls_target, plain_target] = config.targets
            assert isinstance(tls_target, TCPProbeConfig) and isinstance(plain_target, TCPProbeConfig)
            [tls_result] = await TCPProbe(tls_target, ProbeContext(vantage="test")).run()
            [plain_result] = await TCPProbe(plain_target, ProbeContext(vantage="test")).run()
    assert tls_result.success, tls_result.error  # trusted through defaults.tls.ca_file
    assert names(tls_result) == ["dns.lookup", "tcp.connect", "tls.handshake"]
    assert plain_result.success, plain_result.error
    assert names(plain_result) == ["tcp.connect"]


def test_config() -> None:
    config = TCPProbeConfig.from_url("tcp://127.0.0.1:25?starttls=smtp")
    assert (config.address, config.starttls, config.tls, config.direct_tls) == (
        "127.0.0.1:25",
        "smtp",
        None,
        False,
    )
    direct = TCPProbeConfig.from_url("tcp://127.0.0.1:6380?tls=1")
    assert (direct.tls, direct.direct_tls) == (TLSClientConfig(), True)
    upgraded = TCPProbeConfig.from_url("tcp://127.0.0.1:25?tls=1&starttls=smtp")
    assert (upgraded.tls, upgraded.direct_tls) == (TLSClientConfig(), False)
    with pytest.raises(ValueError):
        TCPProbeConfig.from_url("tcp://127.0.0.1")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tls": True}, "not true: write `tls: {}`"),
        ({"tls": False}, "not false: leave `tls` out"),
        ({"tls_config": {"verify": False}}, "`tls_config` was merged into `tls`: write `tls: {...}`"),
        ({"tls": True, "tls_config": {}}, "`tls: true` + `tls_config: {...}` is now written `tls: {...}`"),
    ],
)
def test_old_tls_spellings_say_the_new_one(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        TCPProbeConfig.model_validate({"name": "x", "address": "h:1", **fields})
    assert message in str(info.value)
