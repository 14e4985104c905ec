"""Descriptor exhaustion (issue 11): with no descriptor left (a low `ulimit -n`), every probe kind
fails with a classified error naming the cause, and probes succeed again once descriptors free up.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator

import pytest

from otelprobe.errors import ERROR_TYPES
from otelprobe.lab.servers.dns import DNSFaultServer
from otelprobe.lab.servers.http import HTTPFaultServer
from otelprobe.probes import PROBE_TYPES, config_type_for
from otelprobe.probes.base import ProbeContext
from otelprobe.results import ProbeResult

CTX = ProbeContext(vantage="test")


@contextlib.contextmanager
def no_descriptor_left() -> Iterator[None]:
    """RLIMIT_NOFILE at the number of descriptors open now: the next socket() fails with EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    fillers: list[int] = []  # the free numbers below the limit, taken (at most `highest` of them)
    try:
        with contextlib.suppress(OSError):
            for _ in range(highest + 1):
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _run(kind: str, fields: dict[str, object]) -> ProbeResult:
    config = config_type_for(kind).model_validate({"name": "t", "kind": kind, "timeout": "1s", **fields})
    probe = PROBE_TYPES[kind](config, CTX)  # type: ignore[call-arg]
    try:
        [result] = await probe.run()
    finally:
        await probe.aclose()
    return result


@pytest.mark.parametrize("kind", ["http", "tcp", "dns", "icmp"])
async def test_a_probe_without_descriptors_fails_classified_and_recovers(kind: str) -> None:
    async with HTTPFaultServer() as http, DNSFaultServer(zone={"www": {"A": ["127.0.0.1"]}}) as dns_server:
        port = http.port
        fields: dict[str, object] = {
            "http": {"url": f"http://127.0.0.1:{port}/"},
            "tcp": {"address": f"127.0.0.1:{port}"},
            "dns": {"server": f"127.0.0.1:{dns_server.port}", "query_name": "www.lab.test"},
            "icmp": {"host": "127.0.0.1", "count": 1, "packet_timeout": "0.5s"},
        }[kind]  # type: ignore[assignment]
        with no_descriptor_left():
            starved = await _run(kind, fields)
        recovered = await _run(kind, fields)
    assert starved.error is not None, "a probe without descriptors succeeded"
    assert starved.error.error_type in ERROR_TYPES
    assert "Too many open files" in starved.error.message, starved.error
    if kind != "dns":  # the DNS probe names the server it could not reach (resolver_unreachable)
        assert starved.error.detail == "local_fds_exhausted", starved.error
    assert recovered.success, recovered.error
