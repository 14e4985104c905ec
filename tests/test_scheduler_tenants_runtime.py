"""`otelprobe run` with tenants: quotas per process, fleet-wide ones divided by shards x workers,
and a reload that changes them."""

from __future__ import annotations

from pathlib import Path

from otelprobe.results import ProbeResult, TraceRef
from otelprobe.scheduling.fair_share import TenantLimits
from otelprobe.scheduling.runtime import Runtime
from otelprobe.targets import Shard


class NullSink:
    def record(self, result: ProbeResult, link: TraceRef | None) -> TraceRef | None:
        return None

    async def shutdown(self) -> None:
        return None


def _write(path: Path, tenants: str) -> None:
    targets = "".join(
        f"  - {{name: t{i}, kind: tcp, address: '127.0.0.1:9', interval: 1h, labels: {{tenant: big}}}}\n"
        for i in range(4)
    )
    path.write_text(f"vantage: test\nconcurrency: 64\nshard: 0/2\ntenants:\n{tenants}targets:\n{targets}")


async def test_fleet_quotas_are_divided_by_shards_times_workers_and_per_process_ones_are_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.yaml"
    _write(path, "  big: {concurrency: 20, rate: 100, weight: 2, fleet: true}\n  small: {rate: 10}\n")
    runtime = Runtime(path, sink_factory=lambda config: NullSink(), worker=Shard(1, 4))
    await runtime.start()
    try:
        gate = runtime.scheduler.gate
        assert gate is not None
        # 2 shards x 4 workers = 8 processes: 100/s / 8 = 12.5/s, ceil(20 / 8) = 3.
        assert gate.tenants["big"].limits == TenantLimits(concurrency=3, rate=12.5, weight=2.0)
        assert gate.tenants["small"].limits == TenantLimits(rate=10.0)
        _write(path, "  big: {concurrency: 20, rate: 100}\n")
        assert await runtime.reload()
        assert gate.tenants["big"].limits == TenantLimits(concurrency=20, rate=100.0)
        assert gate.tenants["small"].limits == TenantLimits()  # no longer listed: no limits of its own
    finally:
        await runtime.shutdown()
