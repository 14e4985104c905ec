"""The secret canary (issue 11): a unique value in every place a secret can come from, and not one
byte of any of them in anything a user, a Collector or a log reader can see.

Sources: URL userinfo, the query parameters token / signature / key (on the target URL and on a
redirect's Location), request headers (literal, `${ENV}`, `${file:}`), exporter headers, and the
password of an encrypted client key. What is captured: the spans and metrics an OTLP/HTTP
receiver gets (protobuf, gzip undone), the OTLP JSON file, Prometheus /metrics, every log record
at DEBUG with its traceback, `otelprobe probe` --json and waterfall output, `validate` messages,
error messages, and the one line (and -vv traceback) an unexpected exception is printed as.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import io
import logging
import secrets
import ssl
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from otelprobe.cli import _internal_error, main
from otelprobe.config import validate
from otelprobe.lab.certs import LabCA
from otelprobe.scheduling.runtime import Runtime, TelemetrySink, default_sink
from otelprobe.telemetry.pipeline import Telemetry

CANARIES = {
    source: f"canary-{source}-{secrets.token_hex(6)}"
    for source in (
        "userinfo",
        "token",
        "signature",
        "key",
        "header",
        "env",
        "file",
        "exporter",
        "keypassword",
        "location-userinfo",
        "location-token",
    )
}


def _leaks(blob: bytes | str) -> list[str]:
    """The canaries in `blob`, as text or inside Basic auth's base64."""
    data = blob.encode() if isinstance(blob, str) else blob
    found = []
    for source, canary in CANARIES.items():
        forms = [
            canary.encode(),
            base64.b64encode(f"user:{canary}".encode()),
            base64.b64encode(canary.encode()),
        ]
        if any(form in data for form in forms):
            found.append(source)
    return found


class Captured:
    """Everything that left the process, by where it went."""

    def __init__(self) -> None:
        self.blobs: dict[str, list[bytes]] = {}

    def add(self, where: str, blob: bytes | str) -> None:
        self.blobs.setdefault(where, []).append(blob.encode() if isinstance(blob, str) else blob)

    def assert_no_canary(self) -> None:
        leaks = {where: _leaks(b"\n".join(blobs)) for where, blobs in self.blobs.items()}
        assert not any(leaks.values()), {where: found for where, found in leaks.items() if found}


@contextlib.asynccontextmanager
async def _serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def _target_app(port_box: list[int]) -> web.Application:
    """/ok; /redirect to a Location with credentials and a token; /bad-redirect to a Location
    that cannot be followed (its error message must not quote it); /fail answers 503."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def redirect(request: web.Request) -> web.Response:
        location = (
            f"http://user:{CANARIES['location-userinfo']}@127.0.0.1:{port_box[0]}/ok"
            f"?token={CANARIES['location-token']}"
        )
        raise web.HTTPFound(location)

    async def bad_redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(
            f"ftp://user:{CANARIES['location-userinfo']}@x.invalid/?token={CANARIES['location-token']}"
        )

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/bad-redirect", bad_redirect)
    app.router.add_get("/fail", fail)
    return app


def _otlp_app(captured: Captured) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp undoes Content-Encoding: gzip itself
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        captured.add(f"otlp {request.path}", body)
        return web.Response(status=200, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", receive)
    app.router.add_post("/v1/metrics", receive)
    return app


def _encrypted_client_key(cert_authority: trustme.CA, directory: Path) -> tuple[Path, Path]:
    """A client certificate and its key, encrypted with the key-password canary."""
    client = cert_authority.issue_cert("canary-client")
    cert = directory / "client.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(CANARIES["keypassword"].encode()),
    )
    key_file = directory / "client.key"
    key_file.write_bytes(encrypted)
    return cert, key_file


def _config(
    tmp: Path, port: int, https_port: int, otlp_port: int, ca_file: str, cert: Path, key: Path
) -> str:
    c = CANARIES
    query = f"token={c['token']}&signature={c['signature']}&key={c['key']}"
    http_target = f"http://user:{c['userinfo']}@127.0.0.1:{port}"
    headers = (
        f'{{Authorization: "Bearer {c["header"]}", X-Env: "${{CANARY_ENV}}", X-File: "${{file:secret.txt}}"}}'
    )
    password = "${CANARY_KEYPW}"
    tls = f'{{ca_file: {ca_file}, client_cert: {cert}, client_key: {key}, client_key_password: "{password}"}}'
    return f"""\
vantage: canary-test
telemetry:
  metric_export_interval: 500ms
  queue: {{schedule_delay: 200ms}}
  exporters:
    - type: otlp_http
      endpoint: http://127.0.0.1:{otlp_port}
      compression: gzip
      headers: {{authorization: "Bearer {c["exporter"]}"}}
    - {{type: file, path: {tmp / "run.jsonl"}}}
    - {{type: prometheus, port: 0}}
defaults: {{interval: 1s, timeout: 900ms}}
targets:
  - {{name: redirected, kind: http, url: "{http_target}/redirect?{query}", headers: {headers}}}
  - {{name: bad-redirect, kind: http, url: "{http_target}/bad-redirect?{query}", headers: {headers}}}
  - {{name: failing, kind: http, url: "{http_target}/fail?{query}", headers: {headers}}}
  - {{name: refused, kind: http, url: "http://user:{c["userinfo"]}@127.0.0.1:1/?{query}"}}
  - name: mtls
    kind: http
    url: https://localhost:{https_port}/ok?{query}
    headers: {headers}
    tls: {tls}
  - name: tls-handshake
    kind: tls
    address: localhost:{https_port}
    tls: {tls}
"""


def _run_cli(argv: list[str], captured: Captured, expect: int | None = None) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    captured.add(f"stdout of {argv[:2]}", out.getvalue())
    captured.add(f"stderr of {argv[:2]}", err.getvalue())
    assert expect is None or code == expect, (code, err.getvalue()[-3000:])


async def test_no_canary_leaves_the_process(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    lab_ca: LabCA,
    lab_ca_file: str,
    cert_authority: trustme.CA,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CANARY_ENV", CANARIES["env"])
    monkeypatch.setenv("CANARY_KEYPW", CANARIES["keypassword"])
    (tmp_path / "secret.txt").write_text(CANARIES["file"] + "\n")
    cert, key = _encrypted_client_key(cert_authority, tmp_path)
    captured = Captured()
    server_ctx = lab_ca.server_context("valid")
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # the client key is used, not only loaded
    server_ctx.load_verify_locations(cadata=cert_authority.cert_pem.bytes().decode())
    port_box: list[int] = []
    async with (
        _serve(_target_app(port_box)) as port,
        _serve(_target_app(port_box), server_ctx) as https_port,
        _serve(_otlp_app(captured)) as otlp_port,
    ):
        port_box.append(port)
        config = tmp_path / "probes.yaml"
        config.write_text(_config(tmp_path, port, https_port, otlp_port, lab_ca_file, cert, key))

        # otelprobe run, in-process: two rounds of every target, then /metrics and a clean stop.
        telemetry: list[TelemetrySink] = []

        def sink(config_: object) -> TelemetrySink:
            made = default_sink(config_)  # type: ignore[arg-type]
            telemetry.append(made)
            return made

        runtime = Runtime(config, sink_factory=sink, grace_s=2.0)
        serving = asyncio.create_task(runtime.serve())
        await asyncio.sleep(2.5)
        assert isinstance(telemetry[0], Telemetry) and telemetry[0].prometheus_address is not None
        host, prom_port = telemetry[0].prometheus_address
        metrics = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://{host}:{prom_port}/metrics", timeout=10).read()
        )
        captured.add("prometheus /metrics", metrics)
        runtime.request_stop()
        await asyncio.wait_for(serving, 30)
        captured.add("OTLP JSON file", (tmp_path / "run.jsonl").read_bytes())

        # otelprobe probe: --json, the waterfall, an OTLP file; a wrong key password (exit 2).
        c = CANARIES
        url = f"http://user:{c['userinfo']}@127.0.0.1:{port}/redirect?token={c['token']}&key={c['key']}"
        header = f"Authorization: Bearer {c['header']}"
        for output in (["--json"], []):
            for path in ("/redirect", "/bad-redirect", "/fail"):
                await asyncio.to_thread(
                    _run_cli,
                    [
                        "-vv",
                        "probe",
                        url.replace("/redirect", path),
                        "-H",
                        header,
                        "--otlp-file",
                        "p.jsonl",
                        *output,
                    ],
                    captured,
                )
        https = f"https://localhost:{https_port}/ok?signature={c['signature']}"
        tls_options = ["--ca", lab_ca_file, "--cert", str(cert), "--key", str(key)]
        password = f"tls.client_key_password={c['keypassword']}"
        await asyncio.to_thread(
            _run_cli, ["-vv", "probe", https, *tls_options, "--set", password, "--json"], captured, 0
        )
        wrong = "tls.client_key_password=wrong1"
        await asyncio.to_thread(_run_cli, ["probe", https, *tls_options, "--set", wrong], captured, 2)
        await asyncio.to_thread(_run_cli, ["probe", https, *tls_options], captured, 2)
        captured.add("probe OTLP JSON file", (tmp_path / "p.jsonl").read_bytes())

    # otelprobe validate: problems in and around every secret.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"""\
vantage: ${{CANARY_ENV}}
concurrency: ${{CANARY_ENV}}
telemetry:
  exporters:
    - type: otlp_http
      endpoint: "http://u:{c["userinfo"]}@[::1/?token={c["token"]}"
      headers: {{a: 1, b: [{c["exporter"]}]}}
targets:
  - name: a
    kind: http
    url: "http://u:{c["userinfo"]}@[::1/?key={c["key"]}"
    timeout: "${{file:secret.txt}}"
  - {{name: b, kind: http, url: "http://u:{c["userinfo"]}@h.invalid:99999/?signature={c["signature"]}"}}
  - name: c
    kind: http
    url: "http://h.invalid/"
    headers: {{X-A: "${{CANARY_ENV}}"}}
    interval: "${{CANARY_ENV}}"
  - {{name: d, kind: http, url: "http://h.invalid/", tls: {{client_key_password: "${{CANARY_KEYPW}}"}}}}
"""
    )
    problems = validate(bad)
    assert len(problems) >= 5, problems
    captured.add("validate()", "\n".join(map(str, problems)))
    _run_cli(["validate", str(bad)], captured, expect=1)

    # An unexpected exception, printed by the CLI's last resort (with -vv, its traceback).
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            raise RuntimeError(f"while probing {url} with {c['env']} and {c['keypassword']}")
        except RuntimeError as exc:
            _internal_error(exc, command="otelprobe probe", traceback=True)
    assert "RuntimeError" in err.getvalue()
    captured.add("internal error line and traceback", err.getvalue())

    captured.add("log records at DEBUG (with tracebacks)", caplog.text)
    for record in caplog.records:
        captured.add("log records at DEBUG (with tracebacks)", record.getMessage())

    assert captured.blobs.keys() >= {
        "otlp /v1/traces",
        "otlp /v1/metrics",
        "prometheus /metrics",
        "OTLP JSON file",
        "probe OTLP JSON file",
    }, captured.blobs.keys()
    assert b"canary-test" in b"".join(captured.blobs["otlp /v1/traces"])  # spans did arrive
    captured.assert_no_canary()
