"""`run_scenario`: bring a lab up, probe it from every vantage while the timeline injects faults,
and write a labeled recording; everything the lab created is removed at the end.

The top of the lab's data flow (DESIGN §2: fault servers + link emulator + scenarios -> labeled
OTLP JSON). With root, each vantage is a network namespace joined to the target namespace by
lab/emulation/link.py, the servers run inside the target namespace (lab/emulation/topology.py), and one real
`otelprobe run` process per vantage probes from inside its namespace: a separate process is the
only way to be sure every socket it opens (getaddrinfo threads included) is in that namespace, it
keeps the prober's timing off this process's GIL, and it is the prober exactly as users run it.
Each prober writes OTLP JSON lines itself (the Collector file exporter's format) rather than
exporting over the network, so telemetry never crosses, or is slowed by, the links being faulted.
Without root, a loopback mode runs the same servers and probers with server faults only.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal

import yaml

import otelprobe
from otelprobe.lab.dataset.incidents import Incident, incident_json, resolve, total_duration_s
from otelprobe.lab.dataset.recording import IncidentWindow, label_recording, prober_config
from otelprobe.lab.emulation.link import TARGET_IPV4, Link, LinkEmulator, LinkParams
from otelprobe.lab.emulation.netns import Lab, LabUnavailable, require_lab_support
from otelprobe.lab.emulation.topology import ServerLoop, TargetSide, lab_ca, write_ca
from otelprobe.lab.faults import BandwidthLimit, Fault, NetworkLatency, PacketLoss, link_settings
from otelprobe.lab.scenario import Scenario, VantageSpec

log = logging.getLogger(__name__)

Mode = Literal["auto", "netns", "loopback"]
READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 20.0
TRACES_FILE: Final = "traces.jsonl"
LABELS_FILE: Final = "labels.jsonl"


@dataclass(slots=True)
class RunResult:
    """What a run produced (also written to `lab.json` in the output directory)."""

    out_dir: str
    mode: Literal["netns", "loopback"]
    traces_file: str
    labels_file: str
    incidents: int = 0
    skipped_incidents: list[int] = field(default_factory=list)
    """Link faults not injected in loopback mode (they are not in the labels either)."""
    traces: int = 0
    labeled_traces: int = 0
    spans: int = 0
    duration_s: float = 0.0
    lab_id: str | None = None
    """The id of the lab's namespaces (`otp-<id>-...`) in netns mode; all removed by the end."""


def _link_params(
    base: VantageSpec, faults: Sequence[Fault], direction: Literal["up", "down"]
) -> dict[str, Any]:
    """The baseline of a vantage's link with its active link faults on top (they add up)."""
    delay, jitter_sq, keep, burst = base.delay_s, base.jitter_s**2, 1.0 - base.loss, 1.0
    rate = 8.0 * base.rate_bytes_per_s if base.rate_bytes_per_s else math.inf
    for fault in faults:
        if not isinstance(fault, NetworkLatency | PacketLoss | BandwidthLimit):
            continue
        fault_direction, changes = link_settings(fault)
        if fault_direction not in (direction, "both"):
            continue
        if isinstance(fault, NetworkLatency):
            delay += fault.delay_s
            jitter_sq += fault.jitter_s**2
        elif isinstance(fault, PacketLoss):
            keep *= 1.0 - fault.rate
            burst = max(burst, fault.burst_packets)
        else:
            rate = min(rate, float(changes["rate_bps"] or math.inf))
    return {
        "delay_s": delay,
        "jitter_s": math.sqrt(jitter_sq),
        "loss": 1.0 - keep,
        "loss_burst": burst,
        "rate_bps": None if math.isinf(rate) else rate,
    }


def _iso(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).isoformat(timespec="milliseconds")


class _Timeline:
    """Starts and ends incidents on the servers and links, and remembers when each really was on."""

    def __init__(self, scenario: Scenario, side: TargetSide, links: dict[str, Link]) -> None:
        self.scenario, self.side, self.links = scenario, side, links
        self.active: list[Incident] = []
        self.windows: dict[int, list[int]] = {}
        self.current: dict[int, Fault] = {}
        """The fault each active incident injects now (a ramp's step, or the incident's fault)."""
        self.steps: dict[int, list[tuple[int, Fault]]] = {}
        """When each step of a ramp was really switched on (epoch ns)."""

    def _apply(self, incident: Incident) -> None:
        if incident.fault.server == "link":
            vantage = str(incident.vantage)
            spec = next(v for v in self.scenario.vantages if v.name == vantage)
            faults = [
                self.current[i.id] for i in self.active if i.fault.server == "link" and i.vantage == vantage
            ]
            link = self.links[vantage]
            for direction in ("up", "down"):
                link.set(direction, **_link_params(spec, faults, direction))
            return
        active = {
            pair: [self.current[i.id] for i in self.active if pair in i.pairs and i.fault.server != "link"]
            for pair in incident.pairs
        }
        self.side.set_faults(active, set(incident.pairs))

    def start(self, incident: Incident) -> None:
        # The window is when the fault was fully on: a link fault is set one direction at a time,
        # so a SYN sent while it was being applied saw only part of it.
        self.active.append(incident)
        self.current[incident.id] = incident.steps[0][1] if incident.steps else incident.fault
        self._apply(incident)
        self.windows[incident.id] = [time.time_ns(), 0]
        if incident.steps:
            self.steps[incident.id] = [(self.windows[incident.id][0], self.current[incident.id])]
        log.info(
            "incident %d on: %s %s %s",
            incident.id,
            incident.fault.kind,
            incident.scope,
            sorted(incident.pairs),
        )

    def end(self, incident: Incident) -> None:
        self.windows[incident.id][1] = time.time_ns()
        self.active.remove(incident)
        self._apply(incident)
        del self.current[incident.id]
        log.info("incident %d off", incident.id)

    def step(self, incident: Incident, index: int) -> None:
        """Switch a ramping incident to its `index`-th step."""
        fault = incident.steps[index][1]
        self.current[incident.id] = fault
        self._apply(incident)
        self.steps[incident.id].append((time.time_ns(), fault))
        log.info("incident %d step %d: %s", incident.id, index, fault)

    def play(
        self, incidents: Sequence[Incident], t0: float, total_s: float, check: Callable[[], None]
    ) -> None:
        """Inject and clear every incident at its time after `t0` (monotonic), calling `check`
        (which raises if a prober died) at least every half second."""
        # Ends sort before starts at the same instant, so a fault never stacks on its successor;
        # a ramp's later steps (kind 2) come after its start.
        events = sorted(
            [(i.start_s, 1, i.id, 0) for i in incidents]
            + [(i.end_s, 0, i.id, 0) for i in incidents]
            + [(i.start_s + at, 2, i.id, k) for i in incidents for k, (at, _) in enumerate(i.steps) if k]
        )
        by_id = {i.id: i for i in incidents}
        for at, kind, incident_id, step in events:
            _sleep_until(t0 + at, check)
            incident = by_id[incident_id]
            if kind == 0:
                self.end(incident)
            elif kind == 1:
                self.start(incident)
            else:
                self.step(incident, step)
        _sleep_until(t0 + total_s, check)


def _sleep_until(deadline: float, check: Callable[[], None]) -> None:
    while (left := deadline - time.monotonic()) > 0:
        check()
        time.sleep(min(left, 0.5))


def _prober_env() -> dict[str, str]:
    env = dict(os.environ)
    package_root = str(Path(otelprobe.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def _wait_ready(
    procs: dict[str, subprocess.Popen[bytes]], files: dict[str, Path], logs: dict[str, Path]
) -> None:
    """Wait until every prober has written its first spans (so t=0 finds them all probing)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    waiting = set(procs)
    while waiting:
        _check_alive(procs, logs)
        for vantage in list(waiting):
            path = files[vantage]
            if path.exists() and path.stat().st_size > 0:
                waiting.discard(vantage)
        if time.monotonic() > deadline:
            raise RuntimeError(f"probers of {sorted(waiting)} wrote nothing in {READY_TIMEOUT_S:g}s")
        time.sleep(0.1)


def _check_alive(procs: dict[str, subprocess.Popen[bytes]], logs: dict[str, Path]) -> None:
    for vantage, proc in procs.items():
        if proc.poll() is not None:
            tail = logs[vantage].read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the prober of vantage {vantage!r} exited with {proc.returncode}:\n{tail}")


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM: each prober lets in-flight probes finish and flushes its spans."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("prober %d did not stop; killing it", proc.pid)
            proc.kill()
            proc.wait()


def choose_mode(mode: Mode) -> Literal["netns", "loopback"]:
    """`auto` is netns when the lab can create namespaces and TUN devices, loopback otherwise.

    Raises:
        LabUnavailable: netns was asked for and is not possible here.
    """
    if mode == "loopback":
        return "loopback"
    try:
        require_lab_support(tun=True)
    except LabUnavailable as exc:
        if mode == "netns":
            raise
        log.warning(
            "%s. Running in loopback mode instead: no namespaces and no network faults "
            "(latency, loss, bandwidth); server faults (DNS, TLS, HTTP, ports) only.",
            exc,
        )
        return "loopback"
    return "netns"


def run_scenario(
    scenario: Scenario,
    out_dir: str | Path,
    *,
    mode: Mode = "auto",
    source_text: str | None = None,
    compress: bool = False,
) -> RunResult:
    """Record `scenario` into `out_dir`: traces.jsonl(.gz), labels.jsonl, scenario.yaml, lab.json.

    Args:
        scenario: topology, probe settings and timeline.
        out_dir: created if missing; existing recording files in it are replaced.
        mode: "netns" (root: namespaces, links, every fault), "loopback" (server faults only), or
            "auto" (netns when possible).
        source_text: the scenario file as written, copied into the recording.
        compress: write traces.jsonl.gz.

    Raises:
        LabUnavailable: mode "netns" without the privileges it needs.
        RuntimeError: a prober failed to start.
    """
    chosen = choose_mode(mode)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    incidents = resolve(scenario)
    total_s = total_duration_s(scenario, incidents)
    skipped = [i.id for i in incidents if chosen == "loopback" and i.fault.server == "link"]
    if skipped:
        log.warning("loopback mode: %d link faults are not injected and not labeled", len(skipped))
    played = [i for i in incidents if i.id not in skipped]
    result = RunResult(
        out_dir=str(out),
        mode=chosen,
        traces_file=TRACES_FILE + (".gz" if compress else ""),
        labels_file=LABELS_FILE,
        incidents=len(played),
        skipped_incidents=skipped,
    )
    raw_dir, logs_dir = out / "raw", out / "logs"
    shutil.rmtree(raw_dir, ignore_errors=True)
    raw_dir.mkdir()
    logs_dir.mkdir(exist_ok=True)
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="otelprobe-lab-")))
        side, links = _bring_up(scenario, chosen, stack, result)
        ca_file = write_ca(side.ca, work)
        procs: dict[str, subprocess.Popen[bytes]] = {}
        stack.callback(lambda: _stop(list(procs.values())))
        files = {v: raw_dir / f"{v}.jsonl" for v in scenario.vantage_names}
        logs = {v: logs_dir / f"{v}.log" for v in scenario.vantage_names}
        for vantage in scenario.vantage_names:
            config = prober_config(scenario, vantage, side, ca_file, files[vantage])
            log_file = stack.enter_context(logs[vantage].open("wb"))
            procs[vantage] = _start_prober(work / f"{vantage}.json", config, links.get(vantage), log_file)
        _wait_ready(procs, files, logs)
        t0_ns, t0 = time.time_ns(), time.monotonic()
        log.info(
            "recording %s for %.0f s (%d incidents, %s mode)", scenario.name, total_s, len(played), chosen
        )
        timeline = _Timeline(scenario, side, links)
        timeline.play(played, t0, total_s, lambda: _check_alive(procs, logs))
        _stop(list(procs.values()))
        link_stats = {name: {d: s.as_dict() for d, s in link.stats().items()} for name, link in links.items()}
    windows = [
        IncidentWindow(i.id, i.cause, i.scope, timeline.windows[i.id][0], timeline.windows[i.id][1], i.pairs)
        for i in played
    ]
    stats = label_recording(sorted(files.values()), windows, out / result.traces_file)
    shutil.rmtree(raw_dir, ignore_errors=True)
    _write_labels(out / LABELS_FILE, played, timeline, t0_ns, stats.traces_per_incident)
    (out / "scenario.yaml").write_text(source_text or _scenario_yaml(scenario))
    result.traces, result.labeled_traces, result.spans = stats.traces, stats.labeled_traces, stats.spans
    result.duration_s = round(time.monotonic() - began, 1)
    meta = {
        **asdict(result),
        "scenario": scenario.name,
        "seed": scenario.seed,
        "started": _iso(t0_ns),
        "otelprobe_version": otelprobe.__version__,
        "link_stats": link_stats,
    }
    (out / "lab.json").write_text(json.dumps(meta, indent=1) + "\n")
    return result


def _bring_up(
    scenario: Scenario, mode: Literal["netns", "loopback"], stack: contextlib.ExitStack, result: RunResult
) -> tuple[TargetSide, dict[str, Link]]:
    """Namespaces and links (netns mode), then the servers; `stack` takes them down again."""
    links: dict[str, Link] = {}
    if mode == "netns":
        lab = stack.enter_context(Lab())
        result.lab_id = lab.lab_id
        emulator = LinkEmulator(lab)
        for v in scenario.vantages:
            base = LinkParams(**_link_params(v, (), "up"))
            links[v.name] = emulator.add_vantage(v.name, base, base)
        loop, host = ServerLoop(str(emulator.target.path)), TARGET_IPV4
    else:
        loop, host = ServerLoop(None), "127.0.0.1"
    stack.callback(loop.close)
    side = TargetSide(scenario, host, lab_ca(scenario), loop, fixed_ports=mode == "netns")
    stack.callback(side.close)
    side.start()
    return side, links


def _start_prober(
    config_path: Path, config: dict[str, Any], link: Link | None, log_file: IO[bytes]
) -> subprocess.Popen[bytes]:
    """`otelprobe run CONFIG` inside the link's vantage namespace (or here, without a link)."""
    config_path.write_text(json.dumps(config, indent=1))
    # One process per vantage: a handful of targets gains nothing from workers, and one writer
    # owns the recording file.
    argv = [sys.executable, "-m", "otelprobe.cli", "run", "--workers", "1", str(config_path)]
    kwargs: dict[str, Any] = {"env": _prober_env(), "stdout": log_file, "stderr": subprocess.STDOUT}
    if link is not None:
        return link.vantage.popen(argv, **kwargs)  # the lab kills it on cleanup, also after a crash
    return subprocess.Popen(argv, **kwargs)


def _write_labels(
    path: Path, incidents: Sequence[Incident], timeline: _Timeline, t0_ns: int, traces: dict[int, int]
) -> None:
    windows = timeline.windows

    def overlapping(incident: Incident, *, shared_pairs: bool) -> list[int]:
        start_ns, end_ns = windows[incident.id]
        return [
            other.id
            for other in incidents
            if other.id != incident.id
            and windows[other.id][0] < end_ns
            and start_ns < windows[other.id][1]
            and bool(other.pairs & incident.pairs) == shared_pairs
        ]

    with path.open("w", encoding="utf-8") as fh:
        for incident in incidents:
            start_ns, end_ns = windows[incident.id]
            line = {
                **incident_json(incident),
                "start": _iso(start_ns),
                "end": _iso(end_ns),
                "start_unix_nano": start_ns,
                "end_unix_nano": end_ns,
                "start_s": round((start_ns - t0_ns) / 1e9, 3),
                "end_s": round((end_ns - t0_ns) / 1e9, 3),
                "traces": traces.get(incident.id, 0),
                "compound_with": overlapping(incident, shared_pairs=True),
                "concurrent_with": overlapping(incident, shared_pairs=False),
            }
            if incident.steps:
                line["ramp"] = [
                    {**planned, "start_unix_nano": at_ns, "start_s": round((at_ns - t0_ns) / 1e9, 3)}
                    for planned, (at_ns, _) in zip(line["ramp"], timeline.steps[incident.id], strict=True)
                ]
            fh.write(json.dumps(line) + "\n")


def _scenario_yaml(scenario: Scenario) -> str:
    data = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False)
