"""The real parts of the end-to-end suite: the pinned Collector and Jaeger v2 binaries (built by
scripts/otel-build.sh), started on free loopback ports with bounded waits, Jaeger's query APIs, and
`otelprobe run` / `otelprobe sidecar` processes. Nothing here is a stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import grpc
import yaml
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "collector-config"
BUILD_SCRIPT = REPO / "scripts" / "otel-build.sh"
READY_LINE = "Everything is ready"


# --- binaries ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Binaries:
    otelcol: Path
    jaeger: Path


class GoMissing(RuntimeError):
    """Neither cached binaries nor a Go toolchain to build them: the suite skips."""


def locate_binaries() -> Binaries:
    """The cached binaries, built first when absent (`make e2e` has normally built them already).

    OTELCOL_BIN / JAEGER_BIN name other binaries to use instead.
    """
    given = os.environ.get("OTELCOL_BIN"), os.environ.get("JAEGER_BIN")
    if all(given):
        return Binaries(Path(given[0] or ""), Path(given[1] or ""))
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "all"], capture_output=True, text=True, timeout=3600, check=False
    )
    if result.returncode == 3:
        raise GoMissing(result.stderr.strip())
    if result.returncode != 0:
        raise RuntimeError(f"scripts/otel-build.sh failed:\n{result.stderr[-4000:]}")
    paths = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return Binaries(Path(paths["OTELCOL_BIN"]), Path(paths["JAEGER_BIN"]))


# --- ports and waiting ---------------------------------------------------------------------------
_handed_out: set[int] = set()


def free_port() -> int:
    """An ephemeral loopback TCP port nobody listens on now (and not handed out before)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port")


def endpoint() -> str:
    return f"127.0.0.1:{free_port()}"


async def wait_for(
    predicate: Callable[[], Any],
    timeout_s: float,
    what: str,
    interval_s: float = 0.25,
    watch: Sequence[Process] = (),
) -> Any:
    """Poll `predicate()` (sync or async) until it returns something truthy; bounded in time.
    Fails at once, with its log, if a process in `watch` exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        for proc in watch:
            if not proc.running:
                raise AssertionError(f"{proc.name} exited while waiting for {what}:\n{proc.text()[-4000:]}")
        try:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
        except (aiohttp.ClientError, OSError, ValueError) as error:  # not up yet
            value, last_error = None, error
        if value:
            return value
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last error: {last_error})")


# --- processes -----------------------------------------------------------------------------------
@dataclass
class Process:
    """A child process whose stdout+stderr go to `log`; stopped with SIGTERM, then SIGKILL."""

    name: str
    process: asyncio.subprocess.Process
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def stop(self, timeout_s: float = 30.0) -> int:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                return await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            return await self.process.wait()

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


async def spawn(name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Process:
    out = log.open("ab")
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL, env=env
    )
    out.close()
    return Process(name, process, log)


async def wait_ready(proc: Process, timeout_s: float, marker: str = READY_LINE) -> None:
    """Wait for `marker` in the log; fail at once (with the log) if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if marker in proc.text():
            return
        if not proc.running:
            break
        await asyncio.sleep(0.1)
    await proc.stop(5)
    raise AssertionError(f"{proc.name} did not get ready within {timeout_s} s:\n{proc.text()[-6000:]}")


# --- the Collector -------------------------------------------------------------------------------
@dataclass
class Collector:
    proc: Process
    ports: dict[str, int] = field(default_factory=dict)

    async def stop(self) -> int:
        return await self.proc.stop()


def telemetry_overlay(metrics_port: int) -> dict[str, Any]:
    """The Collector's own metrics on a free port (the default :8888 would clash between Collectors)."""
    return {
        "service": {
            "telemetry": {
                "metrics": {
                    "readers": [
                        {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": metrics_port}}}}
                    ]
                }
            }
        }
    }


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


async def validate_collector(binaries: Binaries, *configs: Path) -> subprocess.CompletedProcess[str]:
    argv = [str(binaries.otelcol), "validate", *(f"--config={c}" for c in configs)]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(120):
        out, _ = await process.communicate()
    return subprocess.CompletedProcess(argv, process.returncode or 0, out.decode(errors="replace"), "")


async def start_collector(
    binaries: Binaries,
    tmp: Path,
    name: str,
    base: Path,
    overlay: dict[str, Any],
    ready_timeout_s: float = 90.0,
) -> Collector:
    """`otelcol --config=BASE --config=OVERLAY`: the committed file, with loopback ports and paths
    merged over it by the Collector itself (maps merge key by key, lists are replaced)."""
    metrics_port = free_port()
    overlay_path = tmp / f"{name}.overlay.yaml"
    overlay_path.write_text(yaml.safe_dump(deep_merge(overlay, telemetry_overlay(metrics_port))))
    proc = await spawn(
        name,
        [str(binaries.otelcol), f"--config={base}", f"--config={overlay_path}"],
        tmp / f"{name}.log",
    )
    await wait_ready(proc, ready_timeout_s)
    return Collector(proc, {"metrics": metrics_port})


# --- Jaeger v2 -----------------------------------------------------------------------------------
@dataclass
class Jaeger:
    proc: Process
    otlp_grpc: str
    otlp_http: str
    query: str  # http://127.0.0.1:PORT (UI, /api, /api/v3)
    query_grpc: str = ""  # 127.0.0.1:PORT (api_v3 gRPC: jaeger.api_v3.QueryService)

    async def stop(self) -> int:
        return await self.proc.stop()

    async def _get(self, path: str, params: dict[str, str]) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.get(f"{self.query}{path}?{urlencode(params)}") as response,
        ):
            body = await response.text()
            return response.status, (json.loads(body) if body.strip().startswith("{") else body)

    async def answers(self) -> bool:
        status, _ = await self._get("/api/v3/services", {})
        return status == 200

    async def services(self) -> list[str]:
        status, body = await self._get("/api/v3/services", {})
        assert status == 200, body
        return list(body.get("services", []))

    async def find_traces(
        self, service: str, lookback_s: float = 3600, operation: str | None = None, limit: int = 2000
    ) -> list[Trace]:
        """api_v3 FindTraces by service (and operation): whole traces as OTLP JSON, grouped."""
        now = dt.datetime.now(dt.UTC)
        params = {
            "query.service_name": service,
            "query.start_time_min": (now - dt.timedelta(seconds=lookback_s)).isoformat(),
            "query.start_time_max": (now + dt.timedelta(seconds=60)).isoformat(),
            "query.num_traces": str(limit),
        }
        if operation:
            params["query.operation_name"] = operation
        status, body = await self._get("/api/v3/traces", params)
        if status == 404:  # api_v3 answers "No traces found" with 404
            return []
        assert status == 200, body
        return group_traces(body["result"].get("resourceSpans", []))

    async def find_traces_grpc(
        self, service: str, attributes: dict[str, str], lookback_s: float = 3600, limit: int = 2000
    ) -> list[Trace]:
        """api_v3 FindTraces over gRPC, which (unlike the HTTP gateway) takes attributes."""
        now = time.time()
        request = api_v3_find_traces(service, attributes, now - lookback_s, now + 60, limit)
        found: list[dict[str, Any]] = []
        async with grpc.aio.insecure_channel(self.query_grpc) as channel:
            call = channel.unary_stream(
                "/jaeger.api_v3.QueryService/FindTraces",
                request_serializer=lambda body: body,
                response_deserializer=TracesData.FromString,
            )
            try:
                async for chunk in call(request, timeout=30):
                    found.extend(MessageToDict(chunk).get("resourceSpans", []))
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        return group_traces(found)

    async def search_tags(
        self, service: str, tags: dict[str, str], limit: int = 2000
    ) -> list[dict[str, Any]]:
        """The UI's search (`/api/traces?service=..&tags={..}`): api_v3's HTTP gateway in Jaeger
        v1.75.0 does not take attributes, this API does. Returns Jaeger-model traces."""
        params = {
            "service": service,
            "tags": json.dumps(tags),
            "limit": str(limit),
            "lookback": "1h",
        }
        status, body = await self._get("/api/traces", params)
        assert status == 200, body
        return list(body.get("data") or [])


# Jaeger's own OpenTelemetry SDK would export its traces to localhost:4317 (someone else's, here).
QUIET_SDK = {**os.environ, "OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "none"}


# --- api_v3 over gRPC: jaeger-idl's proto/api_v3/query_service.proto, encoded by hand (no Python
# package ships it); the answers are OTLP TracesData, which opentelemetry-proto decodes.
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _timestamp(seconds: float) -> bytes:
    whole = int(seconds)
    return _varint(1 << 3) + _varint(whole) + _varint(2 << 3) + _varint(int((seconds - whole) * 1e9))


def api_v3_find_traces(
    service: str, attributes: dict[str, str], start_min_s: float, start_max_s: float, limit: int
) -> bytes:
    """FindTracesRequest{query: TraceQueryParameters{service_name=1, attributes=3 (map),
    start_time_min=4, start_time_max=5, search_depth=8}}."""
    query = _field(1, service.encode())
    for key, value in attributes.items():
        query += _field(3, _field(1, key.encode()) + _field(2, value.encode()))
    query += _field(4, _timestamp(start_min_s)) + _field(5, _timestamp(start_max_s))
    query += _varint(8 << 3) + _varint(limit)
    return _field(1, query)


def jaeger_config(otlp_grpc: str, otlp_http: str, query_http: str, query_grpc: str) -> dict[str, Any]:
    """Jaeger v2 all-in-one with in-memory storage, every listener on a loopback port of ours."""
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info"}},
        },
        "extensions": {
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                "http": {"endpoint": query_http},
                "grpc": {"endpoint": query_grpc},
            },
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 100000}}}},
        },
        "receivers": {
            "otlp": {"protocols": {"grpc": {"endpoint": otlp_grpc}, "http": {"endpoint": otlp_http}}}
        },
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


async def start_jaeger(binaries: Binaries, tmp: Path, name: str = "jaeger") -> Jaeger:
    otlp_grpc, otlp_http, query_http, query_grpc = endpoint(), endpoint(), endpoint(), endpoint()
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(jaeger_config(otlp_grpc, otlp_http, query_http, query_grpc)))
    proc = await spawn(name, [str(binaries.jaeger), f"--config={path}"], tmp / f"{name}.log", env=QUIET_SDK)
    await wait_ready(proc, 90)
    jaeger = Jaeger(proc, otlp_grpc, f"http://{otlp_http}", f"http://{query_http}", query_grpc)
    await wait_for(jaeger.answers, 30, "Jaeger's query API", interval_s=0.2)
    return jaeger


# --- OTLP JSON traces (api_v3) ---------------------------------------------------------------------
def collector_overlay(otlp_grpc: str, jaeger: Jaeger) -> dict[str, Any]:
    """collector-jaeger-sidecar.yaml on loopback ports; its sidecar exporter points at a closed
    port here (the sidecar has its own test): the Jaeger pipeline must not care."""
    return {
        "extensions": {"health_check": {"endpoint": endpoint()}},
        "receivers": {
            "otlp": {"protocols": {"grpc": {"endpoint": otlp_grpc}, "http": {"endpoint": endpoint()}}}
        },
        "exporters": {
            "otlp/jaeger": {"endpoint": jaeger.otlp_grpc},
            "otlp/sidecar": {"endpoint": f"127.0.0.1:{free_port()}"},
            "prometheus": {"endpoint": endpoint()},
        },
    }


def any_value(value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [any_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def attributes(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: any_value(item.get("value", {})) for item in items}


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: str  # "UNSET" | "OK" | "ERROR"
    start_ns: int
    end_ns: int
    links: list[tuple[str, str]]
    events: list[str]


@dataclass
class Trace:
    trace_id: str
    spans: list[Span]

    @property
    def root(self) -> Span:
        roots = [s for s in self.spans if not s.parent_span_id]
        assert len(roots) == 1, f"trace {self.trace_id} has {len(roots)} roots"
        return roots[0]

    def names(self) -> list[str]:
        return sorted(s.name for s in self.spans)

    def phase(self, name: str) -> Span:
        found = [s for s in self.spans if s.name == name]
        assert found, f"no {name} span in trace {self.trace_id}: {self.names()}"
        return found[0]


_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}
_KIND = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _enum(value: Any, table: dict[int, str], prefix: str) -> str:
    if isinstance(value, int):
        return table.get(value, str(value))
    if isinstance(value, str) and value:
        return value.removeprefix(prefix)
    return table[0]


def _hex(value: str) -> str:
    """OTLP/JSON ids are hex; accept base64 too (protobuf's JSON mapping) to be safe."""
    if re.fullmatch(r"[0-9a-fA-F]*", value or ""):
        return (value or "").lower()
    import base64

    return base64.b64decode(value).hex()


def group_traces(resource_spans: list[dict[str, Any]]) -> list[Trace]:
    by_trace: dict[str, list[Span]] = {}
    for rs in resource_spans:
        resource = attributes(rs.get("resource", {}).get("attributes", []))
        for ss in rs.get("scopeSpans", []):
            for raw in ss.get("spans", []):
                span = Span(
                    trace_id=_hex(raw["traceId"]),
                    span_id=_hex(raw["spanId"]),
                    parent_span_id=_hex(raw.get("parentSpanId", "")),
                    name=raw["name"],
                    kind=_enum(raw.get("kind", 0), _KIND, "SPAN_KIND_"),
                    attributes=attributes(raw.get("attributes", [])),
                    resource=resource,
                    status_code=_enum(raw.get("status", {}).get("code", 0), _STATUS, "STATUS_CODE_"),
                    start_ns=int(raw.get("startTimeUnixNano", 0)),
                    end_ns=int(raw.get("endTimeUnixNano", 0)),
                    links=[(_hex(link["traceId"]), _hex(link["spanId"])) for link in raw.get("links", [])],
                    events=[e.get("name", "") for e in raw.get("events", [])],
                )
                by_trace.setdefault(span.trace_id, []).append(span)
    return [Trace(trace_id, spans) for trace_id, spans in by_trace.items()]


def traces_of_target(traces: Iterable[Trace], target: str) -> list[Trace]:
    return [t for t in traces if any(s.attributes.get("probe.target") == target for s in t.spans)]


# --- otelprobe processes ---------------------------------------------------------------------------
def otelprobe_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "otelprobe.cli", *args]


async def start_prober(tmp: Path, name: str, config: dict[str, Any]) -> Process:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return await spawn(name, otelprobe_argv("run", str(path)), tmp / f"{name}.log")


def prober_config(
    collector_grpc: str,
    targets: list[dict[str, Any]],
    *,
    vantage: str,
    service: str,
    interval: str = "1s",
    timeout: str = "800ms",
    extra_telemetry: dict[str, Any] | None = None,
    exporters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    telemetry: dict[str, Any] = {
        "service_name": service,
        "exporters": exporters
        or [{"type": "otlp_grpc", "endpoint": collector_grpc, "insecure": True, "timeout": "5s"}],
        "queue": {"schedule_delay": "200ms"},
    }
    telemetry.update(extra_telemetry or {})
    return {
        "vantage": vantage,
        "defaults": {"interval": interval, "timeout": timeout},
        "telemetry": telemetry,
        "targets": targets,
    }


async def accepting_listener() -> asyncio.Server:
    """A loopback TCP port that accepts and closes every connection (a TCP probe's target that
    never fills its backlog)."""

    async def close(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    return await asyncio.start_server(close, "127.0.0.1", 0)


def has_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def which(name: str) -> str | None:
    return shutil.which(name)


async def gather_bounded(*aws: Awaitable[Any], timeout_s: float = 60) -> list[Any]:
    async with asyncio.timeout(timeout_s):
        return list(await asyncio.gather(*aws))


# --- the attribution sidecar -----------------------------------------------------------------------
SIDECAR_LISTENING = re.compile(r"sidecar listening: OTLP gRPC (\w+), OTLP HTTP (\w+), API (\w+)")


@dataclass
class Sidecar:
    proc: Process
    grpc: str  # 127.0.0.1:PORT, where a Collector's otlp exporter sends
    api: str  # http://127.0.0.1:PORT

    async def get(self, path: str) -> Any:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.get(f"{self.api}{path}") as response,
        ):
            response.raise_for_status()
            return await response.json()

    async def stop(self) -> int:
        return await self.proc.stop()


async def start_sidecar(tmp: Path, name: str, **overrides: Any) -> Sidecar:
    """`otelprobe sidecar` with an OTLP/gRPC receiver on a port chosen here (a Collector's config
    must name it before the sidecar starts) and its API on a port the OS picks."""
    grpc_port = free_port()
    config: dict[str, Any] = {
        "receiver": {"host": "127.0.0.1", "grpc_port": grpc_port, "http_port": None},
        "api": {"host": "127.0.0.1", "port": 0},
        "model": str(REPO / "models" / "default"),
        "window": "1s",
        "allowed_lateness": "1s",
    }
    config.update(overrides)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = await spawn(name, otelprobe_argv("sidecar", str(path)), tmp / f"{name}.log")

    def listening() -> re.Match[str] | None:
        return SIDECAR_LISTENING.search(proc.text())

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not listening() and proc.running:
        await asyncio.sleep(0.1)
    found = listening()
    if not found:
        await proc.stop(5)
        raise AssertionError(f"{name} did not start:\n{proc.text()[-4000:]}")
    return Sidecar(proc, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{found.group(3)}")
