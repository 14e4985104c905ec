"""PLACEHOLDER written by the lead so that the probe table imports; the engineer who owns the HTTP probe
replaces this whole file with the real HTTPProbe."""

from __future__ import annotations

from typing import ClassVar

from otelprobe.probes.base import ProbeContext
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.results import ProbeResult


class HTTPProbe:
    kind: ClassVar[str] = "http"

    def __init__(self, config: HTTPProbeConfig, ctx: ProbeContext) -> None:
        self.config = config
        self.ctx = ctx

    async def run(self, attempt: int = 1) -> list[ProbeResult]:
        raise NotImplementedError("placeholder")

    async def aclose(self) -> None:
        return None
