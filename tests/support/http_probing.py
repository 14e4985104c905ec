"""One HTTP probe attempt the way the HTTP test modules run it, and what they read off the result."""

from __future__ import annotations

from typing import Any

from otelprobe.probes.base import ProbeContext
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.probes.http.probe import HTTPProbe
from otelprobe.results import ProbeResult

CTX = ProbeContext(vantage="test")


async def probe_once(url: str, **options: Any) -> ProbeResult:
    """One attempt against `url` (config fields as keywords; IPv4 and a 2 s timeout by default)."""
    options.setdefault("ip", "ip4")
    options.setdefault("timeout", "2s")
    probe = HTTPProbe(HTTPProbeConfig.model_validate({"name": "t", "url": url, **options}), CTX)
    try:
        [result] = await probe.run()
    finally:
        await probe.aclose()
    return result


def names_of(result: ProbeResult) -> list[str]:
    return [p.name for p in result.phases]


def duration(result: ProbeResult, name: str) -> float:
    phase = result.phase(name)
    assert phase is not None, f"no {name} in {names_of(result)}"
    return phase.duration_s
