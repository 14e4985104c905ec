"""A probe URL's credentials never leave the process (issue 11, DESIGN §3).

`probe.target` defaults to the URL, so it must be the redacted URL: checked byte for byte in
what a user can read: the OTLP JSON file, `--json`, the waterfall, stderr. The probe still uses
the credentials (the lab server answers 401 without them would be a test of the HTTP probe; here
the point is what leaves).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from otelprobe.lab.certs import LabCA
from otelprobe.lab.servers.http import HTTPFaultServer
from tests.support.cli_process import run_otelprobe

PASSWORD = "pw-0f8e2b9a"
TOKEN = "tok-7c1d93e5"


def _targets_and_urls(otlp_file: Path) -> tuple[set[str], set[str]]:
    """Every probe.target and url.full value on every span of an OTLP JSON lines file."""
    targets, urls = set(), set()
    for line in otlp_file.read_text().splitlines():
        for resource_spans in json.loads(line).get("resourceSpans", []):  # metrics lines have none
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    values = {a["key"]: a["value"].get("stringValue") for a in span["attributes"]}
                    targets.add(values["probe.target"])
                    if "url.full" in values:
                        urls.add(values["url.full"])
    return targets, urls


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert TOKEN not in text


async def test_default_target_name_is_the_redacted_url(
    tmp_path: Path, lab_ca: LabCA, lab_ca_file: str
) -> None:
    async with HTTPFaultServer(ssl_context=lab_ca.server_context()) as server:
        base = f"https://user:{PASSWORD}@127.0.0.1:{server.port}/x"
        redacted = f"https://REDACTED:REDACTED@127.0.0.1:{server.port}/x"
        cases = [  # (URL, output option, expected exit code, expected probe.target)
            (f"{base}?token={TOKEN}", "--json", 0, f"{redacted}?token=REDACTED"),
            (f"{base}?token={TOKEN}", "", 0, f"{redacted}?token=REDACTED"),
            (f"{base}?status=503&token={TOKEN}", "--json", 1, f"{redacted}?status=503&token=REDACTED"),
            (f"{base}?status=503&token={TOKEN}", "", 1, f"{redacted}?status=503&token=REDACTED"),
        ]
        for index, (url, output, want_code, want_target) in enumerate(cases):
            otlp_file = tmp_path / f"trace-{index}.jsonl"
            args = ["probe", url, "--ca", lab_ca_file, "--otlp-file", str(otlp_file), *filter(None, [output])]
            code, out, err = await run_otelprobe(*args)
            assert code == want_code, err
            _assert_no_secret(otlp_file.read_text(), out, err)
            targets, urls = _targets_and_urls(otlp_file)
            assert targets == {want_target}
            assert urls == {want_target}
            if output == "--json":
                assert json.loads(out)["target"] == want_target
            else:
                assert want_target in out.splitlines()[0]  # the waterfall's title line


async def test_a_config_file_target_exports_no_url_secret(tmp_path: Path) -> None:
    """`otelprobe run`: the name is the configured one (it is required), url.full is redacted."""
    async with HTTPFaultServer() as server:
        port = server.port
        otlp_file = tmp_path / "run.jsonl"
        config = tmp_path / "probes.yaml"
        config.write_text(
            "telemetry:\n"
            f"  exporters: [{{type: file, path: {otlp_file}}}]\n"
            "targets:\n"
            "  - name: api\n"
            "    kind: http\n"
            f"    url: http://user:{PASSWORD}@127.0.0.1:{port}/x?token={TOKEN}\n"
            "    interval: 1s\n"
            "    timeout: 1s\n"
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "otelprobe.cli",
            "-v",
            "run",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            for _ in range(100):  # until the first probe's trace is in the file (at most 10 s)
                if otlp_file.exists() and otlp_file.stat().st_size:
                    break
                await asyncio.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    _assert_no_secret(otlp_file.read_text(), out.decode(), err.decode())
    targets, urls = _targets_and_urls(otlp_file)
    assert targets == {"api"}
    assert urls == {f"http://REDACTED:REDACTED@127.0.0.1:{port}/x?token=REDACTED"}


async def test_a_config_target_without_a_name_is_refused_not_named_by_its_url(tmp_path: Path) -> None:
    config = tmp_path / "probes.yaml"
    config.write_text(
        f"targets:\n  - kind: http\n    url: http://user:{PASSWORD}@127.0.0.1:1/x?token={TOKEN}\n"
    )
    code, out, err = await run_otelprobe("validate", str(config))
    assert code == 1
    assert "name" in out + err
    _assert_no_secret(out, err)
