"""What `validate` refuses that `run` accepts: no settings, no `targets:`, TLS files that cannot be read.

`run` loads TLS files per attempt (a late-mounted certificate is picked up without a restart), so
only `validate`, the check before a deployment, turns a missing file into a problem at its line.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otelprobe.config import load, validate
from otelprobe.config.file_references import unreadable_in
from otelprobe.scheduling.runtime import Runtime

CONFIG = """\
vantage: lab
defaults:
  tls: {{ca_file: {ca}}}
targets:
  - name: api
    kind: http
    url: https://127.0.0.1:9/
  - name: mtls
    kind: tls
    address: 127.0.0.1:9
    tls:
      ca_file: {ca}
      client_cert: {cert}
      client_key: {key}
telemetry:
  exporters:
    - type: otlp_http
      endpoint: https://127.0.0.1:4318
      ca_file: {ca}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, Path]:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("-----BEGIN CERTIFICATE-----\n")  # readable is all validate checks
    return files


def test_readable_tls_files_validate(tmp_path: Path, pem_files: dict[str, Path]) -> None:
    config = write(tmp_path / "probe.yaml", CONFIG.format(**pem_files))
    assert validate(config) == []


def test_each_unreadable_tls_file_is_a_problem_at_its_line(
    tmp_path: Path, pem_files: dict[str, Path]
) -> None:
    pem_files["ca"].unlink()
    pem_files["key"].unlink()
    pem_files["key"].mkdir()
    config = write(tmp_path / "probe.yaml", CONFIG.format(**pem_files))
    problems = validate(config)
    assert [(p.line, p.path) for p in problems] == [
        (3, "defaults.tls.ca_file"),
        (12, "targets[1].tls.ca_file"),
        (14, "targets[1].tls.client_key"),
        (19, "telemetry.exporters[0].ca_file"),
    ]
    assert (
        str(problems[0])
        == f"{config}:3: defaults.tls.ca_file: cannot read {str(pem_files['ca'])!r}: no such file"
    )
    assert problems[2].message.endswith("a directory, not a file")
    # `run` still loads it: the files are read per attempt, where a missing one is tls_config_invalid.
    assert load(config).targets[0].name == "api"


def test_relative_paths_are_checked_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path / "probe.yaml",
        "targets:\n  - {name: a, kind: tls, address: 127.0.0.1:9, tls: {ca_file: ca.pem}}\n",
    )
    monkeypatch.chdir(tmp_path)
    [problem] = validate(config)
    assert (
        problem.message
        == f"cannot read 'ca.pem' (relative to the working directory {tmp_path}): no such file"
    )
    write(tmp_path / "ca.pem", "pem")
    assert validate(config) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_a_file_without_read_permission_is_a_problem(tmp_path: Path, pem_files: dict[str, Path]) -> None:
    pem_files["ca"].chmod(0)
    config = write(tmp_path / "probe.yaml", CONFIG.format(**pem_files))
    assert {p.message.rsplit(": ", 1)[1] for p in validate(config)} == {"permission denied"}


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_a_file_with_no_settings_is_a_problem(tmp_path: Path, text: str) -> None:
    config = write(tmp_path / "probe.yaml", text)
    assert [str(p) for p in validate(config)] == [
        f"{config}:1: the file has no settings (empty, only comments, or {{}}):"
        " a config needs at least `targets:`"
    ]


def test_no_targets_key_is_a_problem_but_an_empty_list_is_a_choice(tmp_path: Path) -> None:
    config = write(tmp_path / "probe.yaml", "vantage: lab\nconcurrency: 8\n")
    [problem] = validate(config)
    assert (problem.line, problem.path) == (1, "targets")
    assert "write `targets: []` to start with none" in problem.message
    write(config, "vantage: lab\ntargets: []\n")
    assert validate(config) == []


def test_the_cli_exits_1_naming_the_missing_file(tmp_path: Path) -> None:
    config = write(
        tmp_path / "probe.yaml",
        "targets:\n  - {name: a, kind: tls, address: 127.0.0.1:9, tls: {ca_file: /nonexistent/ca.pem}}\n",
    )
    done = subprocess.run(
        [sys.executable, "-m", "otelprobe.cli", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert (
        f"{config}:2: targets[0].tls.ca_file: cannot read '/nonexistent/ca.pem': no such file" in done.stderr
    )


def test_unreadable_in_counts_the_targets_naming_each_file(
    tmp_path: Path, pem_files: dict[str, Path]
) -> None:
    pem_files["ca"].unlink()
    config = load(write(tmp_path / "probe.yaml", CONFIG.format(**pem_files)))
    assert unreadable_in(config.targets) == {str(pem_files["ca"]): ("no such file", 2)}


async def test_run_starts_and_warns_once_per_unreadable_file(
    tmp_path: Path, pem_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    pem_files["ca"].unlink()
    spans = tmp_path / "spans.jsonl"
    text = CONFIG.format(**pem_files).split("telemetry:")[0]
    text += f"telemetry:\n  exporters:\n    - {{type: file, path: {spans}}}\n"
    config = write(tmp_path / "probe.yaml", text)
    runtime = Runtime(config)
    caplog.set_level(logging.WARNING)
    try:
        await runtime.start()
        assert runtime.config is not None and len(runtime.config.targets) == 2
    finally:
        await runtime.shutdown()
    warnings = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert warnings == [
        f"TLS file {str(pem_files['ca'])!r} cannot be read (no such file): 2 target(s) fail with"
        " tls_config_invalid until it can"
    ]
