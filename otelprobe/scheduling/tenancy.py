"""From config to the scheduler's tenancy: each target's tenant and destination, each tenant's limits.

Between config (the `tenants:` and `scheduler:` sections, config/tenants.py) and the scheduler's
fair gate (fair_share.py). `tenancy_of` is None when the config asks for neither tenants nor a
per-destination limit: the scheduler then keeps its one semaphore and its per-probe cost.

Fleet-wide tenants (`fleet: true`) have their rate and concurrency divided by the prober
processes sharing the targets (shards x workers): a rate of 100/s over 2 shards of 4 workers
each is 12.5/s per process, a concurrency of 20 is ceil(20/8) = 3 per process (at least 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from otelprobe.config.models import Config
from otelprobe.config.tenants import CircuitConfig
from otelprobe.net.dns.resolver import split_host_port
from otelprobe.scheduling.fair_share import TenantLimits
from otelprobe.settings.common import ProbeConfigBase

__all__ = ["Tenancy", "destination_of", "tenancy_of"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True, slots=True)
class Tenancy:
    """What the scheduler needs to share the prober: limits per tenant, politeness, circuit."""

    label: str
    default: str
    limits: Mapping[str, TenantLimits]
    per_destination: int | None
    circuit: CircuitConfig
    labelled: bool
    """Whether the config has `tenants:` (then telemetry carries `otelprobe.tenant`)."""

    def tenant_of(self, target: ProbeConfigBase) -> str:
        return target.labels.get(self.label, self.default)


def tenancy_of(config: Config, processes: int = 1) -> Tenancy | None:
    """The config's tenancy for one of `processes` prober processes; None when it has none."""
    scheduler = config.scheduler
    if config.tenants is None and scheduler.per_destination is None:
        return None
    limits = {}
    for name, tenant in (config.tenants or {}).items():
        share = processes if tenant.fleet else 1
        concurrency = None if tenant.concurrency is None else max(1, math.ceil(tenant.concurrency / share))
        rate = None if tenant.rate is None else tenant.rate / share
        burst = None if tenant.burst is None else max(1.0, tenant.burst / share)
        limits[name] = TenantLimits(concurrency, rate, burst, tenant.weight)
    return Tenancy(
        label=scheduler.tenant_label,
        default=scheduler.default_tenant,
        limits=limits,
        per_destination=scheduler.per_destination,
        circuit=scheduler.circuit,
        labelled=config.tenants is not None,
    )


def destination_of(target: ProbeConfigBase) -> tuple[str, int] | None:
    """The (host, port) a target's probes connect to, for the per-destination limit (None: unknown).

    Port 0 stands for the kind's default port where the config gives none (a DNS `server`, an ICMP
    `host`): the same host written with and without its default port counts as two destinations.
    """
    try:
        url = getattr(target, "url", None)
        if isinstance(url, str):
            parts = urlsplit(url)
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
            return ((parts.hostname or "").lower(), port)
        for key in ("address", "server", "host"):
            value = getattr(target, key, None)
            if isinstance(value, str) and value:
                host, port = split_host_port(value, default_port=0)
                return (host.lower(), port)
    except ValueError:
        return None
    return None
