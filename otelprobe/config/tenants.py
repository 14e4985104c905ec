"""The `tenants:` and `scheduler:` sections: each tenant's share of the prober, and politeness.

Read by config/models.py (part of `Config`) and turned into the scheduler's limits by
scheduling/tenancy.py. A tenant is the value of one label of a target (`scheduler.tenant_label`,
default `tenant`); targets without it belong to `scheduler.default_tenant`. See docs/config.md
"Tenants" for the arithmetic.
"""

from __future__ import annotations

from typing import Final

from pydantic import Field

from otelprobe.settings.common import StrictModel
from otelprobe.settings.durations import Duration

DEFAULT_TENANT: Final = "default"
TENANT_LABEL: Final = "tenant"


class TenantConfig(StrictModel):
    """One tenant's quota, budget and weight (per prober process unless `fleet`)."""

    concurrency: int | None = Field(None, ge=1, description="most of its probes in flight at once")
    rate: float | None = Field(None, gt=0, description="probe attempts per second it may start")
    burst: float | None = Field(
        None, ge=1, description="attempts it may start at once above the rate; default max(1, rate)"
    )
    weight: float = Field(1.0, gt=0, le=1000, description="its share of the capacity when saturated")
    fleet: bool = Field(
        False, description="concurrency and rate are for the whole fleet: divided by shards x workers"
    )


class CircuitConfig(StrictModel):
    """When a tenant's timeouts pile up, its concurrency is cut to `shed_to` of its limit."""

    enabled: bool = True
    timeout_ratio: float = Field(0.5, gt=0, le=1, description="share of timed-out attempts that opens it")
    window_s: Duration = Field(30.0, alias="window", gt=0, description="attempts finished in this window")
    min_attempts: int = Field(20, ge=1, description="no decision on fewer finished attempts")
    open_for_s: Duration = Field(30.0, alias="open_for", gt=0, description="before trying half-open")
    shed_to: float = Field(0.1, gt=0, le=1, description="fraction of the tenant's limit kept when open")
    half_open_attempts: int = Field(10, ge=1, description="attempts finished in half-open that decide")


class SchedulerConfig(StrictModel):
    """How the scheduler shares the prober between tenants and destinations."""

    tenant_label: str = Field(TENANT_LABEL, min_length=1, description="the target label naming its tenant")
    default_tenant: str = Field(DEFAULT_TENANT, min_length=1, description="tenant of unlabeled targets")
    per_destination: int | None = Field(
        None, ge=1, description="most probes in flight per (host, port) across all tenants; none = no limit"
    )
    circuit: CircuitConfig = CircuitConfig()
