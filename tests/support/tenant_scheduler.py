"""A real Scheduler with the tenancy of a loaded config (its concurrency, tenants and politeness),
probing with the runtime's own probe factory: what `otelprobe run` builds, minus the process."""

from __future__ import annotations

from otelprobe.config.models import Config
from otelprobe.probes.base import ProbeContext
from otelprobe.scheduling.runtime import default_probe_factory
from otelprobe.scheduling.scheduler import Scheduler
from otelprobe.scheduling.tenancy import tenancy_of
from otelprobe.telemetry.pipeline import Telemetry


def tenant_scheduler(config: Config, telemetry: Telemetry) -> Scheduler:
    return Scheduler(
        telemetry,
        default_probe_factory,
        ProbeContext(vantage="test"),
        concurrency=config.concurrency,
        tenancy=tenancy_of(config),
    )
