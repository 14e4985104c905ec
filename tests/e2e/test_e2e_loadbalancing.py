"""Scale-out (DESIGN §8) with collector-loadbalancing.yaml: two probers (two vantages) -> one
Collector whose load-balancing exporter routes by `probe.target` to two real `otelprobe sidecar`
receivers, and whose second pipeline feeds Jaeger. Each sidecar gets whole traces and every vantage
of its targets; no target is split between them; together they get every span Jaeger got."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.support.e2e_stack import (
    CONFIG_DIR,
    Binaries,
    Sidecar,
    endpoint,
    prober_config,
    start_collector,
    start_jaeger,
    start_prober,
    start_sidecar,
    wait_for,
)
from tests.support.e2e_targets import loopback_targets

pytestmark = pytest.mark.timeout(420)
SERVICE = "otelprobe-e2e-lb"
VANTAGES = ["lb-east", "lb-west"]


def _targets(https_port: int, ca_file: Path, dns_port: int) -> list[dict[str, Any]]:
    """12 targets: enough that both sidecars get some (all on one has odds 2/4096); four are
    HTTPS (7-span traces), the rest TCP."""
    found: list[dict[str, Any]] = []
    for index in range(12):
        if index % 3 == 0:
            found.append(
                {
                    "name": f"lb-{index:02d}",
                    "kind": "http",
                    "url": f"https://www.lab.test:{https_port}/health",
                    "tls": {"ca_file": str(ca_file)},
                    "resolver": {"server": f"127.0.0.1:{dns_port}"},
                    "ip": "ip4",
                }
            )
        else:
            found.append({"name": f"lb-{index:02d}", "kind": "tcp", "address": f"127.0.0.1:{https_port}"})
    return found


async def _received(sidecar: Sidecar) -> int:
    health = await sidecar.get("/healthz")
    return int(health["counters"]["received_spans"])


async def test_two_sidecars_each_get_whole_traces_and_every_vantage_of_their_targets(
    binaries: Binaries, tmp_path: Path, cert_authority: trustme.CA
) -> None:
    jaeger = await start_jaeger(binaries, tmp_path)
    sidecars = [await start_sidecar(tmp_path, f"sidecar-{i}") for i in range(2)]
    otlp_grpc = endpoint()
    overlay = {
        "extensions": {"health_check": {"endpoint": endpoint()}},
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": otlp_grpc}}}},
        "exporters": {
            "load_balancing": {
                "resolver": {"k8s": None, "static": {"hostnames": [s.grpc for s in sidecars]}}
            },
            "otlp/jaeger": {"endpoint": jaeger.otlp_grpc},
        },
    }
    collector = await start_collector(
        binaries, tmp_path, "lb-collector", CONFIG_DIR / "collector-loadbalancing.yaml", overlay
    )
    probers = []
    try:
        async with loopback_targets(tmp_path, cert_authority) as lab:
            targets = _targets(lab.https_port, lab.ca_file, lab.dns_port)
            names = {t["name"] for t in targets}
            for vantage in VANTAGES:
                config = prober_config(otlp_grpc, targets, vantage=vantage, service=SERVICE, interval="1s")
                probers.append(await start_prober(tmp_path, f"prober-{vantage}", config))

            async def every_series_seen() -> bool:
                series = [
                    (r["target"], r["vantage"]) for s in sidecars for r in (await s.get("/v1/slos"))["series"]
                ]
                return len(set(series)) == len(names) * len(VANTAGES)

            await wait_for(every_series_seen, 180, "every (target, vantage) series at a sidecar", 1.0)
            for prober in probers:
                assert await prober.stop() == 0, prober.text()[-3000:]

            # Quiet now: wait until the sidecars together hold exactly the spans Jaeger holds.
            async def jaeger_spans() -> Counter[str]:
                spans: Counter[str] = Counter()
                for trace in await jaeger.find_traces(SERVICE, limit=100000):
                    spans[trace.root.attributes["probe.target"]] += len(trace.spans)
                return spans

            async def settled() -> tuple[Counter[str], list[int]] | None:
                spans = await jaeger_spans()
                received = [await _received(s) for s in sidecars]
                return (spans, received) if spans and sum(received) == sum(spans.values()) else None

            spans, received = await wait_for(settled, 90, "the sidecars to hold every span Jaeger holds", 1.0)
    finally:
        for prober in probers:
            await prober.stop()
        await collector.stop()

    try:
        owners: dict[str, set[int]] = {}
        for index, sidecar in enumerate(sidecars):
            series = (await sidecar.get("/v1/slos"))["series"]
            by_target: dict[str, set[str]] = {}
            for row in series:
                by_target.setdefault(row["target"], set()).add(row["vantage"])
                owners.setdefault(row["target"], set()).add(index)
            # Every vantage of each of its targets reaches the same sidecar.
            assert all(vantages == set(VANTAGES) for vantages in by_target.values()), by_target
            # Whole traces: a sidecar received exactly the spans of its own targets' traces.
            assert received[index] == sum(spans[t] for t in by_target), (index, received, spans)
        assert set(owners) == names
        assert all(len(o) == 1 for o in owners.values()), f"a target split across sidecars: {owners}"
        assert {next(iter(o)) for o in owners.values()} == {0, 1}, "one sidecar got every target"
    finally:
        for sidecar in sidecars:
            await sidecar.stop()
        await jaeger.stop()
