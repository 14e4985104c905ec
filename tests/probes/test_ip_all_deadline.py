"""`ip: all` with addresses that never answer: every kind stays within its one timeout.

A name with two addresses, both silent (their packets are dropped), probed with `ip: all`. Each
address gets a result of its own; they must all fit in the target's timeout, because the
scheduler replaces whatever is not back by timeout + 1 s with `probe_unresponsive`. Probing the
addresses one after the other, each with the full timeout, took 2x the timeout here.

The silence is real: a network namespace (created and removed by the test) routes the two
addresses out of a veth whose far end takes no frames for their (static, made-up) MAC, so SYNs
and echo requests vanish without an answer, as behind a firewall that drops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from otelprobe.lab.emulation.netns import Lab, LabUnavailable, Namespace
from otelprobe.probes import PROBE_TYPES, config_types
from otelprobe.probes.base import ProbeContext
from otelprobe.results import ProbeResult
from otelprobe.scheduling.scheduler import SAFETY_MARGIN_S
from otelprobe.settings.common import IPFamily

pytestmark = pytest.mark.netns

DEAD = ("10.99.0.2", "10.99.0.3")
TIMEOUT_S = 1.0
SLACK_S = 0.4  # loop and thread start-up on a loaded 2-core machine


class PinnedResolver:
    """Resolves every name to the two dead addresses."""

    async def resolve(self, host: str, family: IPFamily) -> list[str]:
        return list(DEAD)


@pytest.fixture(scope="module")
def silent() -> Iterator[Namespace]:
    """A namespace where DEAD are routed to a link that drops everything sent to them."""
    try:
        lab = Lab()
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    with lab:
        ns = lab.namespace("silent")
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ns.ip("addr", "add", "10.99.0.1/24", "dev", "v0")
        for device in ("v0", "v1"):
            ns.ip("link", "set", device, "up")
        for address in DEAD:
            # No ARP to fail (that would report unreachable): frames leave, for a MAC nobody has.
            ns.ip("neigh", "replace", address, "lladdr", "02:00:00:00:99:99", "dev", "v0", "nud", "permanent")
        yield ns


KINDS: dict[str, dict[str, Any]] = {
    "tcp": {"address": "dead.test:443"},
    "tls": {"address": "dead.test:443"},
    "grpc": {"address": "dead.test:50051"},
    "websocket": {"url": "ws://dead.test/"},
    "http": {"url": "http://dead.test/"},
    "icmp": {"host": "dead.test", "count": 1, "packet_timeout": "0.9s"},
}


async def probe_all_addresses(kind: str, fields: dict[str, Any]) -> list[ProbeResult]:
    config = config_types()[kind].model_validate({"name": "t", "ip": "all", "timeout": "1s", **fields})
    probe = PROBE_TYPES[kind](config, ProbeContext(vantage="test", resolver=PinnedResolver()))
    try:
        return await probe.run()
    finally:
        await probe.aclose()


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_address_fails_within_the_one_timeout(silent: Namespace, kind: str) -> None:
    started = time.perf_counter()
    # The whole probe runs on the namespace's thread, so every socket it opens is in there.
    results = silent.call(asyncio.run, probe_all_addresses(kind, KINDS[kind]))
    elapsed = time.perf_counter() - started

    assert sorted(str(r.attributes.get("network.peer.address")) for r in results) == list(DEAD)
    assert all(not r.success for r in results), [r.error for r in results]
    assert all(r.phase("dns.lookup") is not None for r in results)  # resolved once, shared
    if kind != "icmp":
        assert {r.error.error_type for r in results if r.error} == {"connect_timeout"}
    assert elapsed < TIMEOUT_S + SLACK_S, f"{elapsed:.2f}s for two silent addresses"
    assert elapsed < TIMEOUT_S + SAFETY_MARGIN_S  # the scheduler would have cut the probe off
