"""`otelprobe demo` as root: the targets behind the lab's emulated link, a network fault on that
link detected and its cause ranked first, and every namespace it made gone afterwards. Without
root the demo refuses a network fault with a clear message and says once that they need root."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from otelprobe.cli.demo_network import network_unavailable
from tests.support.demo_story import assert_story_told

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "default"


def _lab_namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.startswith("otp-")}


@pytest.mark.slow  # the demo behind the emulated link (~1 min)
@pytest.mark.timeout(200)
def test_demo_as_root_detects_a_link_latency_fault_and_ranks_network_latency_first(tmp_path: Path) -> None:
    if (why_not := network_unavailable()) is not None:
        pytest.skip(f"network faults need root and namespaces: {why_not}")
    before = _lab_namespaces()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "otelprobe.cli",
            "demo",
            "--fault",
            "network_latency",
            "--model",
            str(MODEL),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=190,
        check=False,
        cwd=REPO,
    )
    out = completed.stdout
    assert completed.returncode == 0, out + completed.stderr
    assert "behind an emulated link" in out
    assert_story_told(out, "network_latency")

    # The link fault hits every target: most of the records, over several targets, rank it first.
    records = [json.loads(line) for line in (tmp_path / "attributions.jsonl").read_text().splitlines()]
    tops = Counter(r["causes"][0]["cause"] for r in records)
    assert tops.most_common(1)[0][0] == "network_latency", tops
    assert len({r["target"] for r in records if r["causes"][0]["cause"] == "network_latency"}) >= 2
    # The namespaces it created are gone again.
    assert _lab_namespaces() <= before


def test_without_root_a_network_fault_is_refused_and_the_reason_given(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the demo as an unprivileged user")
    nobody = pwd.getpwnam("nobody")
    completed = subprocess.run(
        [
            "setpriv",
            f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}",
            "--clear-groups",
            sys.executable,
            "-m",
            "otelprobe.cli",
            "demo",
            "--fault",
            "packet_loss",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert completed.returncode != 0
    assert "--fault packet_loss: network faults need root" in completed.stderr
    assert "Traceback" not in completed.stderr
