"""The prober process: real config files, real HTTP probes against a loopback aiohttp server,
reloads on change and on SIGHUP, bad files rejected, clean shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from otelprobe.config.models import Config
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.scheduling.runtime import Runtime, main
from otelprobe.targets import shard_of


@dataclass
class Server:
    url: str
    hits: dict[str, int] = field(default_factory=dict)
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server(url="")

    async def ok(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        state.hits[name] = state.hits.get(name, 0) + 1
        return web.Response(text="ok")

    async def slow(request: web.Request) -> web.Response:
        state.slow_started.set()
        await asyncio.sleep(0.4)
        return web.Response(text="slow ok")

    app = web.Application()
    app.router.add_get("/ok/{name}", ok)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


@dataclass
class MemorySink:
    results: list[ProbeResult] = field(default_factory=list)
    shut_down: bool = False

    def record(self, result: ProbeResult, link: TraceRef | None) -> TraceRef | None:
        self.results.append(result)
        return None

    async def shutdown(self) -> None:
        self.shut_down = True

    def targets(self) -> set[str]:
        return {r.target for r in self.results}


def write_config(
    path: Path, base_url: str, names: list[str], *, interval: str = "100ms", extra: str = ""
) -> None:
    targets = "\n".join(
        f"""  - name: {n}
    kind: http
    url: {base_url}/ok/{n}
    interval: {interval}
    timeout: 80ms
    jitter: 0s"""
        for n in names
    )
    text = f"vantage: test\nconcurrency: 8\n{extra}targets:\n{targets}\n"
    # Write-then-rename, as editors and config management do: the poller never sees half a file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def wait_for(predicate: object, timeout: float = 3.0) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def runtime(tmp_path: Path, server: Server) -> AsyncIterator[tuple[Runtime, MemorySink, Path]]:
    path = tmp_path / "otelprobe.yaml"
    write_config(path, server.url, ["a", "b"])
    sink = MemorySink()
    rt = Runtime(path, sink_factory=lambda config: sink, poll_interval_s=0.05, grace_s=1.0)
    task = asyncio.create_task(rt.serve())
    yield rt, sink, path
    rt.request_stop()
    await asyncio.wait_for(task, 5)
    assert sink.shut_down


async def test_runtime_probes_every_target_with_real_http_probes(
    runtime: tuple[Runtime, MemorySink, Path], server: Server
) -> None:
    rt, sink, _ = runtime
    await wait_for(lambda: {"a", "b"} <= sink.targets() and len(sink.results) >= 6)
    assert all(r.success and r.kind == "http" for r in sink.results)
    assert all(r.phase("tcp.connect") is not None for r in sink.results)
    assert server.hits["a"] >= 2 and server.hits["b"] >= 2
    assert rt.scheduler.stats.lateness.count >= 6


async def test_file_change_reloads_added_removed_and_changed_targets(
    runtime: tuple[Runtime, MemorySink, Path], server: Server
) -> None:
    rt, sink, path = runtime
    await wait_for(lambda: {"a", "b"} <= sink.targets())
    probe_a = rt.scheduler._targets["a"].probe
    write_config(path, server.url, ["a", "c"])
    await wait_for(lambda: rt.reloads == 1)
    assert set(rt.scheduler.targets()) == {"a", "c"}
    assert rt.scheduler._targets["a"].probe is probe_a  # unchanged: same probe, same phase
    sink.results.clear()
    await wait_for(lambda: "c" in sink.targets())
    await asyncio.sleep(0.25)
    assert "b" not in sink.targets()


async def test_a_bad_file_is_rejected_with_every_problem_and_the_old_targets_keep_running(
    runtime: tuple[Runtime, MemorySink, Path], server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    rt, sink, path = runtime
    await wait_for(lambda: {"a", "b"} <= sink.targets())
    caplog.set_level(logging.ERROR, logger="otelprobe.scheduling.runtime")
    path.write_text(
        textwrap.dedent(
            f"""\
            vantage: test
            concurrency: 0
            targets:
              - name: a
                kind: http
                url: {server.url}/ok/a
                interval: soon
              - name: z
                kind: nosuchkind
            """
        )
    )
    await wait_for(lambda: rt.rejected_reloads == 1)
    problems = [r.getMessage() for r in caplog.records if r.getMessage().startswith("invalid config")]
    assert len(problems) >= 3, problems  # concurrency, interval and kind: all of them, not the first
    assert any("rejected" in r.getMessage() for r in caplog.records)
    assert set(rt.scheduler.targets()) == {"a", "b"}
    sink.results.clear()
    await wait_for(lambda: {"a", "b"} <= sink.targets())


async def test_shard_selects_this_replicas_targets(tmp_path: Path, server: Server) -> None:
    names = [f"t{i}" for i in range(12)]
    path = tmp_path / "otelprobe.yaml"
    write_config(path, server.url, names, interval="1s", extra='shard: "1/3"\n')
    rt = Runtime(path, sink_factory=lambda config: MemorySink(), poll_interval_s=0.05)
    await rt.start()
    try:
        mine = set(rt.scheduler.targets())
        assert mine == {n for n in names if shard_of(n, 3) == 1}
        assert 0 < len(mine) < len(names)
    finally:
        await rt.shutdown()
    override = Runtime(path, sink_factory=lambda config: MemorySink(), shard="2/3")
    await override.start()
    try:
        assert set(override.scheduler.targets()) == {n for n in names if shard_of(n, 3) == 2}
    finally:
        await override.shutdown()
    with pytest.raises(ValueError, match="out of range"):
        Runtime(path, shard="3/3")
    assert main(path, shard="3/3") == 2  # bad usage, before anything starts


async def test_vantage_override_reaches_config_and_probes(tmp_path: Path, server: Server) -> None:
    path = tmp_path / "otelprobe.yaml"
    write_config(path, server.url, ["a"])
    seen: list[Config] = []

    def sink_factory(config: Config) -> MemorySink:
        seen.append(config)
        return MemorySink()

    rt = Runtime(path, sink_factory=sink_factory, vantage="eu-1")
    await rt.start()
    try:
        assert rt.config is not None and rt.config.vantage == "eu-1"
        assert seen[0].vantage == "eu-1"
        assert rt.scheduler._ctx.vantage == "eu-1"
    finally:
        await rt.shutdown()


async def test_a_bad_file_at_start_up_raises_config_error(tmp_path: Path) -> None:
    from otelprobe.errors import ConfigError

    path = tmp_path / "otelprobe.yaml"
    path.write_text("targets: 3\n")
    rt = Runtime(path, sink_factory=lambda config: MemorySink())
    with pytest.raises(ConfigError):
        await rt.serve()


# -- signals, in a real process ----------------------------------------------------------------

CHILD = """
import json, sys
from otelprobe.scheduling.runtime import Runtime, run

out = open(sys.argv[2], "a", buffering=1)

class FileSink:
    def record(self, result, link):
        out.write(json.dumps({"target": result.target, "success": result.success,
                              "duration_s": result.duration_s}) + "\\n")
        return None

    async def shutdown(self):
        out.write(json.dumps({"shutdown": True}) + "\\n")

import logging
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
# A long poll interval: in this process only SIGHUP triggers a reload.
sys.exit(run(sys.argv[1], runtime_factory=lambda path: Runtime(
    path, sink_factory=lambda config: FileSink(), poll_interval_s=60, grace_s=2)))
"""


def read_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


async def test_sighup_reloads_and_sigterm_shuts_down_cleanly(tmp_path: Path, server: Server) -> None:
    config, out, script = tmp_path / "otelprobe.yaml", tmp_path / "out.jsonl", tmp_path / "child.py"
    script.write_text(CHILD)
    write_config(config, server.url, ["a"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(config), str(out), stderr=asyncio.subprocess.PIPE
    )
    try:
        await wait_for(lambda: any(r.get("target") == "a" for r in read_lines(out)), timeout=10)
        write_config(
            config,
            server.url,
            ["b"],
            interval="600ms",
        )
        # Make the second target slow, so that SIGTERM arrives while a probe is in flight.
        config.write_text(
            config.read_text().replace("/ok/b", "/slow").replace("timeout: 80ms", "timeout: 500ms")
        )
        proc.send_signal(signal.SIGHUP)
        await asyncio.wait_for(server.slow_started.wait(), 5)
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = stderr.decode()
    assert proc.returncode == 0, log
    assert "reload requested" in log
    lines = read_lines(out)
    assert lines[-1] == {"shutdown": True}
    slow = [r for r in lines if r.get("target") == "b"]
    # The probe in flight at SIGTERM finished within the grace period and was recorded, successful.
    assert slow and slow[-1]["success"] is True
    assert float(str(slow[-1]["duration_s"])) >= 0.35
    assert "Traceback" not in log


async def test_an_invalid_file_at_start_up_exits_1(tmp_path: Path) -> None:
    config, out, script = tmp_path / "otelprobe.yaml", tmp_path / "out.jsonl", tmp_path / "child.py"
    script.write_text(CHILD)
    config.write_text("targets:\n  - name: x\n    kind: http\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(config), str(out), stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    assert "invalid config" in stderr.decode()


def test_config_type_is_what_the_runtime_reads() -> None:
    assert {"targets", "concurrency", "shard", "vantage", "telemetry"} <= set(Config.model_fields)
