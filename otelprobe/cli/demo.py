"""`otelprobe demo`: the whole loop on loopback, with no Collector and no root.

Lab fault servers (DNS, HTTP, TLS) stand in for a small shop of five targets. The real prober
runtime (config file -> scheduler -> probes -> OTLP) probes them every 500 ms and exports its
traces over OTLP/HTTP to a real sidecar (sidecar/service.py) in the same process, which windows
them, learns each series' baseline, evaluates the SLOs and attributes violations with the model.
After a healthy start one fault is injected into one target (`--fault KIND`, else a different one
each run); the demo prints the detection and the ranked causes with their evidence as they come,
clears the fault, and waits for the incident to close. The probe traces are left as OTLP JSON
lines (`--out`), and so are the sidecar's own slo.violation spans and log records: a Collector's
file receiver or Jaeger can load both.

As root (and where network namespaces and TUN devices work) the targets sit in a namespace of
their own behind the lab's emulated link, the prober in another (cli/demo_network.py), and the
fault rotation also includes network faults: latency, packet loss, a bandwidth limit. Without
root, or with `--loopback`, it runs on loopback as above and says once that those need root.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import yaml

if TYPE_CHECKING:
    from otelprobe.cli.demo_network import DemoNetwork
    from otelprobe.lab.certs import LabCA
    from otelprobe.lab.servers.dns import DNSFaultServer
    from otelprobe.lab.servers.http import HTTPFaultServer
    from otelprobe.lab.servers.tls import TLSFront
    from otelprobe.sidecar.service import SidecarService

INTERVAL: Final = "500ms"
NETWORK_INTERVAL: Final = "1s"
"""Behind the link, probes run as in the lab's recordings: every second with a 1 s timeout (a lost
SYN is retried after 1 s, so a shorter timeout would turn every loss into a failure)."""
NETWORK_HEALTHY_S: Final = 24.0
"""Healthy probing before a fault behind the link: latency objectives learn their threshold from
20 healthy probes of each series (slo_file.BaselineLearning.warmup_samples), 20 s at 1 s."""
VERDICT_WINDOWS: Final = 3
"""Windows wholly inside the fault, attributed, before the demo gives its verdict (or 10 s)."""
DEFAULT_OUT: Final = Path("otelprobe-demo")
LAST_FAULT_FILE: Final = "last-fault"
"""In `--out`: the fault the last run injected, so the next run injects the one after it."""
T = TypeVar("T")
TRAIN_DATA: Final = Path(__file__).resolve().parents[2] / "data" / "lab" / "train-101" / "traces.jsonl.gz"


@dataclass(frozen=True, slots=True)
class DemoFault:
    target: str
    says: str  # the fault as a person would say it
    cause: str  # the DESIGN §5 cause it should be attributed to
    every_target: bool = False  # a link fault: the demo follows whichever target is attributed first


FAULTS: Final = {
    "ttfb_delay": DemoFault("checkout", "checkout's backend answers 150 ms later", "backend_slow"),
    "tls_delay": DemoFault("shop", "shop's TLS handshake takes 80 ms longer", "tls_slow"),
    "http_5xx": DemoFault("payments", "90 % of payments' responses are 503", "http_error"),
    "bad_certificate": DemoFault("shop", "shop serves an expired certificate", "certificate_invalid"),
    "dns_delay": DemoFault("catalog", "DNS answers for catalog take 60 ms longer", "dns_latency"),
    "refused": DemoFault("inventory", "nothing listens on inventory's port", "target_unreachable"),
    "wrong_content": DemoFault("inventory", "inventory answers 200 with the wrong body", "content_mismatch"),
}
NETWORK_DEMO_FAULTS: Final = {
    "network_latency": DemoFault(
        "the link", "the link to the targets gets 60 ms slower each way", "network_latency", True
    ),
    "packet_loss": DemoFault(
        "the link", "the link drops 10 % of the packets the prober sends", "packet_loss", True
    ),
    "bandwidth_limit": DemoFault(
        "the link", "the link to the targets carries 200 KiB/s at most", "bandwidth_limit", True
    ),
}
"""Faults of the link between prober and targets (as root only): they hit every target."""
ALL_FAULTS: Final = {**FAULTS, **NETWORK_DEMO_FAULTS}
TARGETS: Final = ("shop", "checkout", "payments", "catalog", "inventory")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fault",
        choices=sorted(ALL_FAULTS),
        help="the fault to inject (default: the one after the last run's, in turn; network faults need root)",
    )
    parser.add_argument(
        "--loopback", action="store_true", help="stay on loopback even as root (no network faults)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="where recordings go, and the last run's fault (default ./otelprobe-demo)",
    )
    parser.add_argument(
        "--healthy", type=float, default=15.0, help="seconds of healthy probing at least (15)"
    )
    parser.add_argument(
        "--timeout", type=float, default=45.0, help="seconds to wait for detection, and for the close"
    )
    parser.add_argument(
        "--model", help="model stem (default: models/default, else one trained on the lab data)"
    )


def run(args: argparse.Namespace) -> int:
    from otelprobe.cli.demo_network import network_unavailable

    why_not = "--loopback" if args.loopback else network_unavailable()
    if why_not is not None:
        if args.fault in NETWORK_DEMO_FAULTS:
            raise SystemExit(
                f"--fault {args.fault}: network faults need root and network namespaces ({why_not})"
            )
        if not args.loopback:
            print(f"network faults ({', '.join(NETWORK_DEMO_FAULTS)}) need root: {why_not}\n", flush=True)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    kind = args.fault or next_fault(sorted(FAULTS if why_not else ALL_FAULTS), out / LAST_FAULT_FILE)
    model = demo_model(args.model)
    for name in ("traces.jsonl", "sidecar.jsonl", "attributions.jsonl"):
        (out / name).unlink(missing_ok=True)
    healthy = args.healthy if why_not else max(args.healthy, NETWORK_HEALTHY_S)
    return asyncio.run(_demo(kind, out, healthy, args.timeout, model, network=why_not is None))


def next_fault(kinds: list[str], last_file: Path) -> str:
    """The fault after the one the last run injected (kept in `last_file`), so each run of the
    demo shows another; a random one when there is no last run (or it named an unknown fault)."""
    try:
        last = last_file.read_text().strip()
    except OSError:
        last = ""
    kind = kinds[(kinds.index(last) + 1) % len(kinds)] if last in kinds else random.choice(kinds)
    try:
        last_file.write_text(kind + "\n")
    except OSError:
        pass  # a read-only output directory: the rotation restarts at random next time
    return kind


def demo_model(explicit: str | None, cache_dir: Path | None = None) -> str:
    """A model that loads: the given one, models/default, or one trained once on the lab data
    and kept in `cache_dir` (default: ~/.cache/otelprobe/demo-model)."""
    from otelprobe.attribution.model import ModelError
    from otelprobe.sidecar.model_watch import load_checked

    cache_dir = cache_dir or _cache_dir()
    shipped = str(TRAIN_DATA.parents[3] / "models" / "default")  # the repository's model
    candidates = [explicit] if explicit else ["models/default", shipped, str(cache_dir / "default")]
    for stem in candidates:
        try:
            load_checked(stem)
            return str(Path(stem).resolve())  # the sidecar config takes paths from its own directory
        except ModelError as exc:
            if explicit:
                raise SystemExit(f"--model: {exc}") from None
    from otelprobe.attribution.dataset import read_window_table
    from otelprobe.attribution.train import data_digest, train_model

    print(
        f"no trained model yet: training one on {TRAIN_DATA.parent.name} (about 20 s, once) ...", flush=True
    )
    table = read_window_table([TRAIN_DATA])
    info = {"name": TRAIN_DATA.parent.name, "digest": data_digest([str(TRAIN_DATA)])}
    model = train_model(table.frame, window_s=table.window_s, training_info=info)
    cached = cache_dir / "default"
    cached.parent.mkdir(parents=True, exist_ok=True)
    model.save(cached)
    return str(cached)


def _cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "otelprobe" / "demo-model"


class _Lab:
    """The five targets: each its own server, so a fault hits exactly one (a link fault: all).

    On loopback the servers run on the caller's loop; with `network` they run on its loop inside
    the targets' namespace, and every call that touches them goes there.
    """

    def __init__(self, ca: LabCA, network: DemoNetwork | None = None) -> None:
        self.ca = ca
        self.network = network
        self.host = network.host if network is not None else "127.0.0.1"
        self.http: dict[str, HTTPFaultServer] = {}
        self.dns: DNSFaultServer | None = None
        self.tls: TLSFront | None = None

    async def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await (coro if self.network is None else self.network.run(coro))

    async def start(self) -> None:
        await self._run(self._start())

    async def _start(self) -> None:
        from otelprobe.lab.servers.dns import DNSFaultServer
        from otelprobe.lab.servers.http import HTTPFaultServer
        from otelprobe.lab.servers.tls import TLSFront

        for i, name in enumerate(TARGETS):
            self.http[name] = HTTPFaultServer(host=self.host, body_size=8 * 1024, seed=i)
            await self.http[name].start()
        self.dns = DNSFaultServer(host=self.host, zone={name: {"A": [self.host]} for name in TARGETS})
        await self.dns.start()
        self.tls = TLSFront(self.ca, host=self.host, upstream=(self.host, self.http["shop"].port), seed=9)
        await self.tls.start()

    async def aclose(self) -> None:
        await self._run(self._aclose())

    async def _aclose(self) -> None:
        if self.tls is not None:
            await self.tls.aclose()
        if self.dns is not None:
            await self.dns.stop()
        for server in self.http.values():
            await server.aclose()

    @property
    def dns_port(self) -> int:
        assert self.dns is not None
        return self.dns.port

    def url(self, name: str) -> str:
        if name == "shop":
            assert self.tls is not None
            return f"https://shop.lab.test:{self.tls.port}/"
        return f"http://{name}.lab.test:{self.http[name].port}/"

    async def inject(self, kind: str) -> Callable[[], Awaitable[None]]:
        """Turn the fault on; returns what turns it off."""
        if kind in NETWORK_DEMO_FAULTS:
            network = self.network
            assert network is not None
            await asyncio.to_thread(network.set_fault, kind)

            async def clear_link() -> None:
                assert network is not None
                await asyncio.to_thread(network.clear_fault, kind)

            return clear_link
        clear_here = await self._run(self._inject(kind))

        async def clear() -> None:
            await self._run(clear_here())

        return clear

    async def _inject(self, kind: str) -> Callable[[], Coroutine[Any, Any, None]]:
        from otelprobe.lab import faults
        from otelprobe.lab.servers.dns import DNSFault

        target = FAULTS[kind].target
        http = self.http[target]
        assert self.dns is not None and self.tls is not None
        dns, tls = self.dns, self.tls
        if kind == "ttfb_delay":
            http.apply(faults.TTFBDelay.model_validate({"delay": "150ms"}))
        elif kind == "http_5xx":
            http.apply(faults.HTTP5xx(rate=0.9, status=503))
        elif kind == "wrong_content":
            http.apply(faults.WrongContent())
        elif kind == "dns_delay":
            dns.set_fault(target, DNSFault.delayed(0.060))
        elif kind in ("tls_delay", "bad_certificate"):
            fault = (
                faults.TLSDelay.model_validate({"delay": "80ms"})
                if kind == "tls_delay"
                else faults.BadCertificate(problem="expired")
            )
            tls.apply(fault)
        elif kind == "refused":
            port = http.port
            await http.aclose()  # nothing listens: connects are refused

            async def restart() -> None:
                from otelprobe.lab.servers.http import HTTPFaultServer

                self.http[target] = HTTPFaultServer(host=self.host, port=port, body_size=8 * 1024, seed=99)
                await self.http[target].start()

            return restart

        async def clear() -> None:
            http.clear()
            dns.clear_faults()
            tls.clear()

        return clear


async def _demo(
    kind: str, out: Path, healthy_s: float, timeout_s: float, model: str, *, network: bool = False
) -> int:
    from otelprobe.lab.certs import LabCA
    from otelprobe.sidecar.config import SidecarConfig
    from otelprobe.sidecar.receiver import OTLPReceiver
    from otelprobe.sidecar.service import SidecarService
    from otelprobe.telemetry.otlp_json import message_to_json

    fault = ALL_FAULTS[kind]
    sidecar_file = (out / "sidecar.jsonl").open("a", encoding="utf-8")

    def record(message: Any) -> None:  # the sidecar's own spans and logs, as a Collector would file them
        sidecar_file.write(message_to_json(message) + "\n")

    ca = LabCA(hosts=("localhost", "127.0.0.1", *(f"{t}.lab.test" for t in TARGETS)))
    links = None
    if network:
        from otelprobe.cli.demo_network import DemoNetwork

        links = await asyncio.to_thread(DemoNetwork)
    lab = _Lab(ca, links)
    collector = OTLPReceiver(grpc_port=None, on_traces=record, on_logs=record, on_metrics=lambda _m: None)
    try:
        await lab.start()
        await collector.start()
    except BaseException:
        if links is not None:
            await links.aclose()
        raise
    config = SidecarConfig.model_validate(
        {
            "receiver": {"grpc_port": None, "http_port": 0},
            "api": {"port": 0},
            "model": model,
            "window": "auto",
            "allowed_lateness": "400ms",
            "export": {"endpoint": collector.http_endpoint, "metric_interval": "5s"},
            "output": {"jsonl": str(out / "attributions.jsonl")},
        }
    )
    # The demo tells its own story; the sidecar's per-violation log lines would drown it.
    logging.getLogger("otelprobe.sidecar").setLevel(logging.ERROR)
    sidecar = SidecarService(config)
    await sidecar.start()
    prober: asyncio.subprocess.Process | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="otelprobe-demo-") as tmp:
            endpoint = sidecar.receiver.http_endpoint
            if links is not None and sidecar.receiver.http_port is not None:
                # The prober's namespace reaches the sidecar through a relay.
                endpoint = f"http://127.0.0.1:{await links.relay(sidecar.receiver.http_port)}"
            config_path = _prober_config(Path(tmp), lab, endpoint, out)
            where = (
                f"in network namespace {links.target_namespace} at {lab.host}, behind an emulated link "
                f"from the prober's namespace {links.link.vantage.name}"
                if links is not None
                else "on 127.0.0.1"
            )
            print(
                f"otelprobe demo: 5 lab targets {where} ({', '.join(TARGETS)}), probed every {_interval(lab)}"
            )
            api = f"127.0.0.1:{sidecar.api_port}"
            print(f"  prober (otelprobe run) -> OTLP -> sidecar {sidecar.receiver.http_endpoint}, API {api}")
            print(f"  fault to inject: {kind}: {fault.says} (expected cause: {fault.cause})\n")
            # A process of its own, as in production: the sidecar's work must not delay the probes.
            with (out / "prober.log").open("w", encoding="utf-8") as log:
                argv = (sys.executable, "-m", "otelprobe.cli", "run", "--workers", "1", str(config_path))
                if links is not None:
                    prober = await links.start_prober(argv, log)
                else:
                    prober = await asyncio.create_subprocess_exec(*argv, stdout=log, stderr=log)
                try:
                    return await _story(lab, sidecar, kind, healthy_s, timeout_s)
                finally:
                    if prober.returncode is None:
                        prober.terminate()
                    await prober.wait()
    finally:
        await sidecar.stop()
        await collector.stop()
        sidecar_file.close()
        await lab.aclose()
        if links is not None:
            await links.aclose()
        print(
            f"\nrecordings in {out}/: traces.jsonl (probe spans, OTLP JSON lines), sidecar.jsonl "
            "(slo.violation spans and log records), attributions.jsonl (§6 records)"
        )


async def _story(lab: _Lab, sidecar: SidecarService, kind: str, healthy_s: float, timeout_s: float) -> int:
    fault = ALL_FAULTS[kind]
    started = time.monotonic()

    def clock() -> str:
        return f"[{time.monotonic() - started:5.1f}s]"

    # 1. Healthy start: `healthy_s` of probes (counted from the first one seen, since the prober
    # takes a few seconds to start), and until every series' baseline is warm.
    last = ""
    first_seen: float | None = None
    while time.monotonic() - started < healthy_s + timeout_s:
        health = sidecar.view.health()
        if first_seen is None and health["series"]:
            first_seen = time.monotonic()
        warm = f"{health['warm_series']}/{health['series']}"
        line = f"warming up: {health['windows_closed']} windows, {warm} series warm"
        if line != last and health["windows_closed"] % 3 == 0:
            print(clock(), line, flush=True)
            last = line
        if (
            first_seen is not None
            and time.monotonic() - first_seen >= healthy_s
            and health["warm_series"] == health["series"]
        ):
            break
        await asyncio.sleep(0.25)
    open_before = {i["id"] for i in sidecar.view.incidents("open")}
    print(
        clock(),
        f"baselines warm; open incidents: {len(open_before)}. Injecting {kind} into {fault.target}.",
        flush=True,
    )

    # 2. The fault: wait for its attribution.
    clear = await lab.inject(kind)
    injected = time.monotonic()
    injected_ns = time.time_ns()
    since_ns = injected_ns - 2 * 10**9  # the window the fault began in may start before it
    found = None
    while time.monotonic() - injected < timeout_s:
        watched = None if fault.every_target else fault.target
        rows = sidecar.view.attributions(target=watched, since_ns=since_ns, limit=1)
        if rows:
            found = rows[0]
            break
        await asyncio.sleep(0.25)
    if found is None:
        print(clock(), f"no attribution for {fault.target} within {timeout_s:g} s", flush=True)
        await clear()
        return 1
    print(clock(), f"SLO violation detected {time.monotonic() - injected:.1f} s after the fault:", flush=True)
    _print_attribution(found)
    target = str(found["target"])
    # The windows the fault began in straddle its start (a link fault: one per target, all at
    # once), and one window of two probes on a busy machine can go either way: the verdict is the
    # incident's, over at least three windows wholly inside the fault (all attributed ones if
    # fewer came within 10 s) — the cause with the highest mean score over them.
    watched = None if fault.every_target else target
    verdict_by = time.monotonic() + 10.0
    while True:
        attributed = sidecar.view.attributions(target=watched, since_ns=since_ns) or [found]
        during = [r for r in attributed if int(r["window_start_unix_nano"]) >= injected_ns]
        if len(during) >= VERDICT_WINDOWS:
            break
        if time.monotonic() >= verdict_by:
            during = during or attributed
            break
        await asyncio.sleep(0.25)
    firsts = Counter(str(r["causes"][0]["cause"]) for r in during)
    from otelprobe.sidecar.view import rank_causes

    best = rank_causes(during)[0]  # the incident's ranking: mean score, ties by name
    top, mean = str(best["cause"]), float(best["score"])
    verdict = "matches" if top == fault.cause else "does NOT match"
    print(
        f"  ranked first in {firsts[top]} of {len(during)} windows attributed so far, and first by mean "
        f"score over them ({mean:.2f}): {top}, which {verdict} the injected fault ({fault.cause})\n",
        flush=True,
    )

    # 3. Clear it: wait for the incident to close.
    await clear()
    cleared = time.monotonic()
    print(clock(), f"fault cleared; waiting for the incident on {target} to close ...", flush=True)
    while time.monotonic() - cleared < timeout_s:
        still_open = [i for i in sidecar.view.incidents("open") if target in i["targets"]]
        if not still_open:
            recent = [i for i in sidecar.view.incidents("recent") if target in i["targets"]]
            if recent:
                incident = recent[0]
                print(
                    clock(),
                    f"incident {incident['id']} closed: {incident['start']} .. {incident['end']}, "
                    f"{incident['attributions']} attributed windows",
                    flush=True,
                )
            return 0 if top == fault.cause else 2
        await asyncio.sleep(0.25)
    print(clock(), f"the incident did not close within {timeout_s:g} s", flush=True)
    return 1


def _print_attribution(record: dict[str, Any]) -> None:
    color = sys.stdout.isatty()
    bold, reset = ("\033[1m", "\033[0m") if color else ("", "")
    print(
        f"  {bold}{record['slo']}{reset} on {record['target']} from {record['vantage']}, "
        f"window {record['window_start']} ({record['probes']} probes, {record['failed']} failed)"
    )
    for rank, cause in enumerate(record["causes"][:3], start=1):
        print(
            f"  {rank}. {bold if rank == 1 else ''}{cause['cause']:<20}{reset} scope {cause['scope']:<8} "
            f"score {cause['score']:.2f}"
        )
        for evidence in cause.get("evidence", [])[:3]:
            print(f"       - {evidence['text']}")


def _prober_config(tmp: Path, lab: _Lab, endpoint: str, out: Path) -> Path:
    ca_file = lab.ca.write_pem_files(tmp / "certs")["ca"]
    targets: list[dict[str, Any]] = []
    for name in TARGETS:
        target: dict[str, Any] = {"name": name, "kind": "http", "url": lab.url(name)}
        if name == "shop":
            target["tls"] = {"ca_file": str(ca_file)}
        if name == "inventory":
            target["expect"] = {"body_regex": ["otelprobe-lab ok"]}
        targets.append(target)
    config = {
        "vantage": "demo",
        "defaults": {
            "interval": _interval(lab),
            "timeout": "1s" if lab.network is not None else "400ms",
            "resolver": {"server": f"{lab.host}:{lab.dns_port}"},
        },
        "telemetry": {
            "exporters": [
                {"type": "otlp_http", "endpoint": endpoint},
                {"type": "file", "path": str((out / "traces.jsonl").resolve())},
            ],
            "queue": {"schedule_delay": "100ms"},
        },
        "targets": targets,
    }
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _interval(lab: _Lab) -> str:
    return NETWORK_INTERVAL if lab.network is not None else INTERVAL
