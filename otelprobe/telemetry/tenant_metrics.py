"""Per-tenant scheduler metrics: what the fair gate did for each tenant, read at each collection.

The scheduler (scheduling/fair_share.py) keeps plain counters per tenant; `observe_tenants`
registers observable instruments in the `MetricStore` whose callback reads them (from the
exporter's thread: plain ints, no lock needed). Names are `otelprobe.tenant.<what>`, each series
with `otelprobe.tenant`:

- counters (`{probe}`): `started`; `delayed` (waited in the queue); `throttled` (held back by the
  tenant's own rate or concurrency); `skipped` (not started before the run's next due time);
  `shed` (dropped while the tenant's circuit was open);
- gauges: `in_flight` (the quota in use), `limit` (its concurrency now, cut while the circuit is
  open), `circuit_open` (0/1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

from otelprobe import names
from otelprobe.telemetry.aggregation import Attrs, Instrument, MetricStore

TenantSnapshot = tuple[str, Mapping[str, float]]
"""(tenant, {what: value}) with `what` one of COUNTERS or GAUGES."""

COUNTERS: Final = {
    "started": "probe attempts of the tenant started",
    "delayed": "probe attempts that waited for a slot before starting or being dropped",
    "throttled": "probe attempts held back by the tenant's own rate budget or concurrency quota",
    "skipped": "probe runs not started before their next due time",
    "shed": "probe attempts dropped while the tenant's circuit was open",
}
GAUGES: Final = {
    "in_flight": "probe attempts of the tenant in flight (its quota in use)",
    "limit": "the tenant's concurrency now (its quota, cut while its circuit is open)",
    "circuit_open": "1 while the tenant's circuit is open or half-open",
}


def observe_tenants(store: MetricStore, source: Callable[[], Sequence[TenantSnapshot]]) -> None:
    """Register the per-tenant instruments, read from `source` at each collection."""
    for what, description in (*COUNTERS.items(), *GAUGES.items()):
        counter = what in COUNTERS
        instrument = Instrument(
            names.METRIC_TENANT_PREFIX + what,
            "{probe}" if what != "circuit_open" else "1",
            description,
            "counter" if counter else "gauge",
            integer=True,
        )
        store.observe(instrument, _reader(source, what))


def _reader(
    source: Callable[[], Sequence[TenantSnapshot]], what: str
) -> Callable[[], list[tuple[Attrs, float]]]:
    def read() -> list[tuple[Attrs, float]]:
        return [(((names.OTELPROBE_TENANT, tenant),), values[what]) for tenant, values in source()]

    return read
