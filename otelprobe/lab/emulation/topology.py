"""The target side of a lab run: every scenario target served once per vantage, a DNS resolver per
vantage, all on one event loop whose thread lives in the target namespace, and the reconciliation
of the active faults onto those servers.

lab/dataset/runner.py builds a `TargetSide`, hands its endpoints to the probers' configs, and calls
`set_faults` whenever an incident starts or ends. One server per (target, vantage) is what lets a
server fault be scoped to one path, one target or one vantage without the servers knowing about
vantages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from otelprobe.lab.certs import LabCA
from otelprobe.lab.emulation.netns import _enter_netns
from otelprobe.lab.faults import (
    BadCertificate,
    Blackhole,
    DNSDelay,
    Fault,
    Refused,
    TTFBDelay,
    dns_server_fault,
)
from otelprobe.lab.scenario import Scenario, TargetSpec, VantageSpec
from otelprobe.lab.servers.dns import DNSFaultServer
from otelprobe.lab.servers.dns_zone import DNSFault
from otelprobe.lab.servers.http import HTTPFault, HTTPFaultServer
from otelprobe.lab.servers.ports import BlackholePort, RefusedPort
from otelprobe.lab.servers.tls import TLSFault, TLSFront

log = logging.getLogger(__name__)

T = TypeVar("T")
LAB_ZONE: Final = "lab.test"
FIRST_PORT: Final = 20000
FIRST_DNS_PORT: Final = 5301
_CALL_TIMEOUT_S: Final = 30.0


class ServerLoop:
    """An asyncio loop on its own thread, inside the network namespace at `netns_path` if given.

    Sockets belong to the namespace of the thread that creates them, and asyncio creates them on
    the loop's thread, so every server started here listens inside that namespace.
    """

    def __init__(self, netns_path: str | None = None, name: str = "lab-servers") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = concurrent.futures.Future[None]()
        self._thread = threading.Thread(target=self._main, args=(netns_path,), name=name, daemon=True)
        self._thread.start()
        self._ready.result(timeout=_CALL_TIMEOUT_S)

    def _main(self, netns_path: str | None) -> None:
        try:
            if netns_path is not None:
                _enter_netns(netns_path)
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        asyncio.set_event_loop(self.loop)
        self._ready.set_result(None)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = _CALL_TIMEOUT_S) -> T:
        """Run `coro` on the loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(_CALL_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()


async def _close_and_wait(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


async def _accept_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A plain TCP target: accepts, then closes once the prober has gone (or after 5 s)."""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(5.0):
            await reader.read()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


class Service:
    """One target as one vantage reaches it: its front port plus, for https, the HTTP upstream.

    `set_faults` makes the served behaviour equal to the baseline plus the given faults; a
    refused or black-holed fault takes the front port over and gives it back afterwards.
    """

    def __init__(
        self, spec: TargetSpec, host: str, port: int, upstream_port: int, ca: LabCA, seed: int
    ) -> None:
        self.spec, self.host, self.port = spec, host, port
        self._upstream_port, self._ca, self._seed = upstream_port, ca, seed
        self.http: HTTPFaultServer | None = None
        self.tls: TLSFront | None = None
        self._tcp: asyncio.Server | None = None
        self._port_fault: RefusedPort | BlackholePort | None = None
        self._port_fault_kind: str | None = None

    def _http_server(self, host: str, port: int) -> HTTPFaultServer:
        spec = self.spec
        return HTTPFaultServer(
            host,
            port,
            body_size=spec.body_size,
            coalesce=spec.coalesce,
            seed=self._seed,
            think_spike_rate=spec.think_spike_rate,
            think_spike_s=spec.think_spike_s,
        )

    async def start(self) -> None:
        """Start serving; a port given as 0 is picked now and kept for restarts after faults."""
        if self.spec.kind == "https":
            self.http = self._http_server("127.0.0.1", self._upstream_port)
            await self.http.start()
            self._upstream_port = self.http.port
        await self._start_front()
        if self.http is not None and self.spec.kind == "http":
            self.port = self.http.port
        elif self.tls is not None:
            self.port = self.tls.port
        elif self._tcp is not None:
            self.port = int(self._tcp.sockets[0].getsockname()[1])

    async def _start_front(self) -> None:
        spec = self.spec
        if spec.kind == "http":
            self.http = self._http_server(self.host, self.port)
            await self.http.start()
        elif spec.uses_tls:
            upstream = ("127.0.0.1", self._upstream_port) if spec.kind == "https" else None
            self.tls = TLSFront(
                self._ca,
                upstream,
                self.host,
                self.port,
                seed=self._seed,
                body_size=spec.body_size,
                record_bytes=spec.tls_record_bytes,
            )
            await self.tls.start()
        elif spec.kind == "tcp":
            self._tcp = await asyncio.start_server(_accept_and_close, self.host, self.port)

    async def _stop_front(self) -> None:
        if self.spec.kind == "http" and self.http is not None:
            await self.http.aclose()
            self.http = None
        if self.tls is not None:
            await self.tls.aclose()
            self.tls = None
        if self._tcp is not None:
            await _close_and_wait(self._tcp)
            self._tcp = None

    async def set_faults(self, faults: Sequence[Fault]) -> None:
        """Serve the baseline plus `faults` (later entries win over earlier ones of the same kind)."""
        port_faults = [f for f in faults if isinstance(f, Refused | Blackhole)]
        wanted = port_faults[-1].kind if port_faults else None
        if wanted != self._port_fault_kind:
            if self._port_fault is None:
                await self._stop_front()
            else:
                self._port_fault.close()
                self._port_fault = None
            if wanted == "refused":
                self._port_fault = RefusedPort(self.host, self.port)
            elif wanted == "blackhole":
                self._port_fault = BlackholePort(self.host, self.port)
            else:
                await self._start_front()
            self._port_fault_kind = wanted
        if self.http is not None:
            self.http.clear()
            for fault in self._http_faults(faults):
                self.http.apply(fault)
        if self.tls is not None:
            self.tls.clear()
            for tls_fault in self._tls_faults(faults):
                self.tls.apply(tls_fault)

    def _http_faults(self, faults: Sequence[Fault]) -> list[HTTPFault]:
        spec = self.spec
        baseline = TTFBDelay.model_validate(
            {"delay": spec.backend_delay_s, "jitter": spec.backend_jitter_s, "distribution": "exponential"}
        )
        chosen: dict[str, HTTPFault] = {}
        if spec.backend_delay_s or spec.backend_jitter_s:
            chosen["ttfb_delay"] = baseline
        for fault in faults:
            if fault.server != "http":
                continue
            if isinstance(fault, TTFBDelay):
                # A slow backend is slow on top of its usual latency.
                fault = fault.model_copy(update={"delay_s": fault.delay_s + baseline.delay_s})
            chosen[fault.kind] = fault  # type: ignore[assignment]
        return list(chosen.values())

    def _tls_faults(self, faults: Sequence[Fault]) -> list[TLSFault]:
        chosen: dict[str, TLSFault] = {}
        if self.spec.cert != "valid":
            chosen["bad_certificate"] = BadCertificate(problem=self.spec.cert)
        for fault in faults:
            if fault.server == "tls":
                chosen[fault.kind] = fault  # type: ignore[assignment]
        return list(chosen.values())

    async def aclose(self) -> None:
        if self._port_fault is not None:
            self._port_fault.close()
            self._port_fault = None
        await self._stop_front()
        if self.http is not None:
            await self.http.aclose()
            self.http = None


class TargetSide:
    """Every service and resolver of a scenario, on a `ServerLoop`.

    Args:
        scenario: the topology.
        host: the address servers listen on (the target namespace's address, or 127.0.0.1).
        ca: the lab CA whose certificates the TLS targets serve.
        loop: where the servers run.
        fixed_ports: number ports from FIRST_PORT / FIRST_DNS_PORT (in a private namespace,
            where they are free, for recordings that read the same every time); otherwise the
            kernel picks free ones (loopback mode shares the host's ports).
    """

    def __init__(
        self, scenario: Scenario, host: str, ca: LabCA, loop: ServerLoop, *, fixed_ports: bool = True
    ) -> None:
        self.scenario, self.host, self.ca, self.loop = scenario, host, ca, loop
        self.services: dict[tuple[str, str], Service] = {}
        self.resolvers: dict[str, DNSFaultServer] = {}
        zone = {t.name: {"A": [host]} for t in scenario.targets}
        port = FIRST_PORT
        for v_index, vantage in enumerate(scenario.vantage_names):
            dns_port = FIRST_DNS_PORT + v_index if fixed_ports else 0
            self.resolvers[vantage] = DNSFaultServer(
                host, dns_port, zone, origin=LAB_ZONE + ".", seed=scenario.seed + v_index
            )
            for target in scenario.targets:
                if target.kind != "dns":
                    seed = scenario.seed * 1000 + port
                    ports = (port, port + 1) if fixed_ports else (0, 0)
                    self.services[target.name, vantage] = Service(target, host, *ports, ca, seed)
                port += 2

    def start(self) -> None:
        async def start_all() -> None:
            for resolver in self.resolvers.values():
                await resolver.start()
            for service in self.services.values():
                await service.start()

        self.loop.run(start_all())
        for vantage, resolver in self.resolvers.items():
            usual = resolver_baseline(self._vantage(vantage))
            if usual is not None:
                resolver.set_fault("*", DNSFault(delay=usual.sample_delay))

    def _vantage(self, name: str) -> VantageSpec:
        return next(v for v in self.scenario.vantages if v.name == name)

    def _dns_fault(self, vantage: str, fault: Fault | None) -> DNSFault | None:
        """What `vantage`'s resolver does for one name while `fault` is on: the fault, after the
        resolver's usual answer time. Queries the fault leaves alone (probability < 1), and names
        without a fault, fall through to the "*" entry: the usual answer time alone."""
        if fault is None:
            return None
        server_fault = dns_server_fault(fault)  # type: ignore[arg-type]
        usual = resolver_baseline(self._vantage(vantage))
        if usual is None:
            return server_fault
        if isinstance(fault, DNSDelay):
            slow = fault  # a slow resolver is slow on top of its usual latency
            return dataclasses.replace(
                server_fault, delay=lambda rng: slow.sample_delay(rng) + usual.sample_delay(rng)
            )
        return dataclasses.replace(server_fault, delay=usual.sample_delay)

    def close(self) -> None:
        async def close_all() -> None:
            for service in self.services.values():
                await service.aclose()
            for resolver in self.resolvers.values():
                await resolver.stop()

        try:
            self.loop.run(close_all())
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("lab servers did not stop cleanly", exc_info=True)

    def resolver_address(self, vantage: str) -> str:
        return f"{self.host}:{self.resolvers[vantage].port}"

    def endpoint(self, target: str, vantage: str) -> int:
        """The port `vantage` reaches `target` on (its own instance of the target)."""
        return self.services[target, vantage].port

    def set_faults(
        self, active: Mapping[tuple[str, str], Sequence[Fault]], touched: set[tuple[str, str]]
    ) -> None:
        """Make every touched (target, vantage) serve exactly its `active` faults (in start order).

        DNS faults go to the vantage's resolver, for the target's name (the last one started
        wins); the others to the pair's service. Pairs not touched keep what they serve.
        """

        async def apply() -> None:
            for pair in sorted(touched):
                target, vantage = pair
                faults = active.get(pair, ())
                dns = [f for f in faults if f.server == "dns"]
                self.resolvers[vantage].set_fault(target, self._dns_fault(vantage, dns[-1] if dns else None))
                service = self.services.get(pair)
                if service is not None:
                    await service.set_faults([f for f in faults if f.server in ("http", "tls", "ports")])

        self.loop.run(apply())


def resolver_baseline(spec: VantageSpec) -> DNSDelay | None:
    """A vantage's local resolver answer time as a delay fault (exponential tail), or None."""
    if not spec.resolver_delay_s and not spec.resolver_jitter_s:
        return None
    return DNSDelay.model_validate(
        {"delay": spec.resolver_delay_s, "jitter": spec.resolver_jitter_s, "distribution": "exponential"}
    )


def write_ca(ca: LabCA, directory: Path) -> Path:
    """Write the lab's root certificate (the one the probers trust; no keys) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ca.pem"
    path.write_bytes(ca.root_pem)
    return path


def lab_ca(scenario: Scenario) -> LabCA:
    """A CA whose valid leaves name every target (`<target>.lab.test`) plus loopback."""
    hosts = [f"{t.name}.{LAB_ZONE}" for t in scenario.targets]
    return LabCA([*hosts, "localhost", "127.0.0.1"], name=f"otelprobe lab {scenario.name}")
