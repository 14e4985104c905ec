"""End to end: a scenario recorded with real namespaces, links, servers and probers; labels vs spans."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelprobe import names
from otelprobe.attribution.otlp_decode import SpanView
from otelprobe.attribution.otlp_files import ReaderStats, iter_span_views
from otelprobe.lab.dataset.incidents import resolve
from otelprobe.lab.dataset.recording import read_labels
from otelprobe.lab.dataset.runner import RunResult, run_scenario
from otelprobe.lab.emulation.netns import RUN_DIR, LabUnavailable, lab_namespaces, require_lab_support
from otelprobe.lab.scenario import load_scenario, load_scenario_text
from otelprobe.telemetry.otlp_json import json_to_message

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


def _lab_unavailable() -> str | None:
    try:
        require_lab_support(tun=True)
    except LabUnavailable as exc:
        return str(exc)
    return None


needs_root = pytest.mark.skipif(_lab_unavailable() is not None, reason=_lab_unavailable() or "")


def _vantage(span: SpanView) -> object:
    return span.resource.get(names.OTELPROBE_VANTAGE)


def _seconds(span: SpanView) -> float:
    return (span.end_ns - span.start_ns) / 1e9


@dataclass
class Recording:
    result: RunResult
    out: Path
    spans: list[SpanView]
    roots: dict[str, SpanView]
    labels: list[dict[str, object]]

    def phases(self, name: str, target: str, vantage: str) -> list[tuple[SpanView, SpanView]]:
        """(root, phase span) pairs of one phase for one path."""
        return [
            (self.roots[s.trace_id], s)
            for s in self.spans
            if s.name == name
            and self.roots[s.trace_id].attributes[names.PROBE_TARGET] == target
            and _vantage(s) == vantage
        ]


def _load(result: RunResult) -> Recording:
    out = Path(result.out_dir)
    spans = list(iter_span_views(out / result.traces_file))
    roots = {s.trace_id: s for s in spans if not s.parent_span_id}
    return Recording(result, out, spans, roots, read_labels(out / "labels.jsonl"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    if (reason := _lab_unavailable()) is not None:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("tiny")
    return _load(run_scenario(load_scenario(EXAMPLES / "tiny.yaml"), out, mode="netns"))


def _window(label: dict[str, object]) -> tuple[int, int]:
    return int(label["start_unix_nano"]), int(label["end_unix_nano"])  # type: ignore[call-overload]


@needs_root
@pytest.mark.slow  # shares `tiny`: the tiny scenario run in namespaces (~45 s)
def test_recording_is_otlp_json_with_labels_and_its_scenario(tiny: Recording) -> None:
    stats = ReaderStats()
    assert list(iter_span_views(tiny.out / "traces.jsonl", stats))
    assert (stats.bad_lines, stats.bad_spans) == (0, 0)
    assert stats.other_lines == 0  # the recording holds spans only
    for line in (tiny.out / "traces.jsonl").read_text().splitlines():
        json_to_message(line, ExportTraceServiceRequest())  # Collector format: protobuf parses it
    assert [label["incident"] for label in tiny.labels] == [0, 1, 2]
    assert [label["cause"] for label in tiny.labels] == [
        "backend_slow",
        "network_latency",
        "certificate_invalid",
    ]
    for label in tiny.labels:
        start, end = _window(label)
        assert 0 < end - start and label["traces"]
    # The copied scenario draws the same incidents.
    assert resolve(load_scenario(tiny.out / "scenario.yaml")) == resolve(
        load_scenario(EXAMPLES / "tiny.yaml")
    )
    assert {_vantage(s) for s in tiny.spans} == {"near", "far"}
    per_path: dict[tuple[object, str], int] = defaultdict(int)
    for root in tiny.roots.values():
        per_path[root.attributes[names.PROBE_TARGET], _vantage(root)] += 1
    assert len(per_path) == 4 and min(per_path.values()) >= 15  # ~1 probe/s for ~25 s


@needs_root
@pytest.mark.slow
def test_spans_carry_the_truth_exactly_during_their_faults(tiny: Recording) -> None:
    labeled = 0
    for span in tiny.spans:
        root = tiny.roots[span.trace_id]
        path = [root.attributes[names.PROBE_TARGET], _vantage(root)]
        hits = [
            label
            for label in tiny.labels
            if path in label["affected"]  # type: ignore[operator]
            and root.start_ns < _window(label)[1]
            and root.end_ns > _window(label)[0]
        ]
        if hits:
            labeled += 1
            assert span.attributes[names.LAB_FAULT_CAUSE] == hits[0]["cause"]
            assert span.attributes[names.LAB_FAULT_SCOPE] == hits[0]["scope"]
            assert span.attributes[names.LAB_FAULT_INCIDENT] == hits[0]["incident"]
        else:
            assert names.LAB_FAULT_CAUSE not in span.attributes
    assert labeled > 50


@needs_root
@pytest.mark.slow
def test_ttfb_delay_shows_in_http_ttfb_of_the_target(tiny: Recording) -> None:
    for vantage in ("near", "far"):
        during = [
            _seconds(s)
            for r, s in tiny.phases("http.ttfb", "web", vantage)
            if r.attributes.get(names.LAB_FAULT_INCIDENT) == 0
        ]
        healthy = [
            _seconds(s)
            for r, s in tiny.phases("http.ttfb", "web", vantage)
            if names.LAB_FAULT_CAUSE not in r.attributes
        ]
        assert len(during) >= 4 and len(healthy) >= 8
        # Probes overlapping the window's edges may have missed it: most, not all, are slow.
        assert sorted(during)[len(during) // 2] >= 0.24
        assert max(healthy) < 0.1
        connects = [
            _seconds(s)
            for r, s in tiny.phases("tcp.connect", "web", vantage)
            if r.attributes.get(names.LAB_FAULT_INCIDENT) == 0
        ]
        assert max(connects) < 0.05  # the backend is slow, not the network


@needs_root
@pytest.mark.slow
def test_link_latency_on_one_vantage_shows_in_its_tcp_connect_only(tiny: Recording) -> None:
    start, end = _window(tiny.labels[1])
    for target in ("web", "api"):
        far = [
            _seconds(s)
            for r, s in tiny.phases("tcp.connect", target, "far")
            if r.attributes.get(names.LAB_FAULT_INCIDENT) == 1 and s.start_ns > start and s.end_ns < end
        ]
        near = [
            _seconds(s) for r, s in tiny.phases("tcp.connect", target, "near") if start < s.start_ns < end
        ]
        far_healthy = [
            _seconds(s)
            for r, s in tiny.phases("tcp.connect", target, "far")
            if names.LAB_FAULT_CAUSE not in r.attributes
        ]
        assert far and near and far_healthy
        assert min(far) >= 0.08  # +40 ms each way on a 12 ms path
        assert max(near) < 0.03
        assert 0.01 < sorted(far_healthy)[len(far_healthy) // 2] < 0.03  # the far baseline RTT: 2 × 6 ms


@needs_root
@pytest.mark.slow
def test_path_scoped_certificate_fault_fails_one_vantage_only(tiny: Recording) -> None:
    label = tiny.labels[2]
    faulted = str(label["vantage"])
    other = ({"near", "far"} - {faulted}).pop()
    start, end = _window(label)
    for vantage, expected in ((faulted, "tls_error"), (other, None)):
        errors = {
            r.attributes.get(names.ERROR_TYPE)
            for r in tiny.roots.values()
            if r.attributes[names.PROBE_TARGET] == "api"
            and _vantage(r) == vantage
            and start < r.start_ns
            and r.end_ns < end
        }
        assert errors == {expected}


@needs_root
@pytest.mark.slow
def test_everything_the_lab_created_is_removed(tiny: Recording) -> None:
    lab_id = tiny.result.lab_id
    assert lab_id
    assert not [n for n in lab_namespaces() if n.startswith(f"otp-{lab_id}-")]
    assert not (RUN_DIR / f"{lab_id}.json").exists()
    assert not (tiny.out / "raw").exists()


LOOPBACK = """\
name: loop
vantages: [{name: here}]
targets: [{name: web, kind: http}]
probe: {interval: 500ms, timeout: 500ms}
timeline:
  - {fault: {kind: ttfb_delay, delay: 150ms}, target: web, start: 2s, duration: 3s}
  - {fault: {kind: network_latency, delay: 10ms}, vantage: here, start: 2s, duration: 3s}
tail: 1s
"""


@pytest.mark.slow  # a scenario run in real time
def test_loopback_mode_injects_server_faults_only(tmp_path: Path) -> None:
    result = run_scenario(load_scenario_text(LOOPBACK), tmp_path, mode="loopback")
    assert result.mode == "loopback" and result.skipped_incidents == [1] and result.lab_id is None
    recording = _load(result)
    assert [label["incident"] for label in recording.labels] == [0]
    slow = [
        _seconds(s)
        for r, s in recording.phases("http.ttfb", "web", "here")
        if names.LAB_FAULT_CAUSE in r.attributes
    ]
    fast = [
        _seconds(s)
        for r, s in recording.phases("http.ttfb", "web", "here")
        if names.LAB_FAULT_CAUSE not in r.attributes
    ]
    assert len(slow) >= 3 and len(fast) >= 3
    assert sorted(slow)[len(slow) // 2] >= 0.14 and max(fast) < 0.1


@needs_root
def test_ctrl_c_removes_namespaces_and_probers(tmp_path: Path) -> None:
    code = (
        "from otelprobe.lab.dataset.runner import run_scenario\n"
        "from otelprobe.lab.scenario import load_scenario\n"
        f"run_scenario(load_scenario({str(EXAMPLES / 'tiny.yaml')!r}), {str(tmp_path)!r}, mode='netns')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    try:
        registry = None
        deadline = time.monotonic() + 60
        while registry is None and time.monotonic() < deadline:
            for path in RUN_DIR.glob("*.json") if RUN_DIR.exists() else ():
                data = json.loads(path.read_text() or "{}")
                if (
                    data.get("owner_pid") == child.pid and len(data.get("pids", [])) >= 4
                ):  # 2 links, 2 probers
                    registry = data
            time.sleep(0.2)
        assert registry is not None, "the lab came up"
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert b"KeyboardInterrupt" in stderr
    assert not [n for n in lab_namespaces() if n in registry["namespaces"]]
    for pid, _ in registry["pids"]:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
        )
    assert not (RUN_DIR / f"{registry['lab_id']}.json").exists()
    assert os.path.exists(tmp_path / "logs")


def test_lab_serve_prints_working_urls_until_ctrl_c() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen(
        [sys.executable, "-m", "otelprobe.cli", "lab", "serve"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("Ctrl-C"):
            line = child.stdout.readline()
            assert line, "lab serve printed its URLs"
            lines.append(line)
        url = next(line.split()[1] for line in lines if line.startswith("HTTP:"))
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /?status=418 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.1 418")
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


@needs_root
def test_lab_down_reports_what_it_removed(capsys: pytest.CaptureFixture[str]) -> None:
    from otelprobe.cli import main

    assert main(["lab", "down"]) == 0
    assert capsys.readouterr().out.startswith("removed ")


RAMP_AND_COMPOUND = """\
name: ramp
vantages: [{name: here}]
targets: [{name: web, kind: http}, {name: api, kind: http}]
probe: {interval: 250ms, timeout: 250ms}
timeline:
  - {fault: {kind: ttfb_delay}, magnitude: 150ms, ramp: {from: 15ms, steps: 2}, band: gross,
     target: web, start: 1s, duration: 4s}
  - {fault: {kind: http_5xx, rate: 1.0}, scope: path, target: web, vantage: here, start: 2s, duration: 2s}
  - {fault: {kind: wrong_content}, target: api, start: 2s, duration: 1s}
tail: 1s
"""


@pytest.mark.slow  # a scenario run in real time
def test_ramps_step_up_and_labels_say_when_and_what_overlapped(tmp_path: Path) -> None:
    recording = _load(run_scenario(load_scenario_text(RAMP_AND_COMPOUND), tmp_path, mode="loopback"))
    ramp, errors, content = recording.labels
    steps = ramp["ramp"]
    assert isinstance(steps, list) and [s["magnitude"] for s in steps] == [0.015, 0.15]
    assert steps[0]["start_unix_nano"] == ramp["start_unix_nano"]
    assert 1.9 <= steps[1]["start_s"] - steps[0]["start_s"] <= 2.2  # half of the 4 s
    assert ramp["band"] == "gross" and ramp["magnitude"] == 0.15
    assert ramp["compound_with"] == [1] and errors["compound_with"] == [0]
    assert ramp["concurrent_with"] == [2] and content["compound_with"] == []
    # The served delay follows the steps: ~15 ms in the first half, ~150 ms in the second.
    switched = int(steps[1]["start_unix_nano"])
    on, off = int(ramp["start_unix_nano"]), int(ramp["end_unix_nano"])  # type: ignore[call-overload]
    first_half = [
        _seconds(s)
        for r, s in recording.phases("http.ttfb", "web", "here")
        if on < r.start_ns < r.end_ns < switched
    ]
    second_half = [
        _seconds(s)
        for r, s in recording.phases("http.ttfb", "web", "here")
        if switched < r.start_ns < r.end_ns < off
    ]
    assert first_half and second_half
    assert sorted(first_half)[len(first_half) // 2] < 0.08 and min(second_half) >= 0.14
