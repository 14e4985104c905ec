"""The attribution-latency recorder: exact recent quantiles for /healthz, a Prometheus histogram
that the reference parser reads, cumulative buckets with 1 s among the bounds."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from otelprobe.sidecar.latency import METRIC, LatencyRecorder


def test_quantiles_are_nearest_rank_over_the_recent_records() -> None:
    recorder = LatencyRecorder(recent=100)
    for value in range(1, 201):  # 1..200 ms; the recent 100 are 101..200 ms
        recorder.observe(value / 1000)
    summary = recorder.summary()
    assert summary["records"] == 200 and summary["recent"] == 100
    assert summary["p50_s"] == 0.15 and summary["p99_s"] == 0.199 and summary["max_s"] == 0.2
    assert LatencyRecorder().summary()["p99_s"] is None


def test_the_histogram_reads_with_prometheus_client() -> None:
    recorder = LatencyRecorder()
    for value in (0.01, 0.3, 0.9, 1.0, 1.2, 45.0):
        recorder.observe(value)
    text = "\n".join(recorder.prometheus_lines()) + "\n"
    (family,) = text_string_to_metric_families(text)
    assert family.type == "histogram" and family.name == METRIC.removesuffix("_seconds") + "_seconds"
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets["0.05"] == 1 and buckets["0.5"] == 2 and buckets["1"] == 4 and buckets["30"] == 5
    assert buckets["+Inf"] == 6
    count = next(s.value for s in family.samples if s.name.endswith("_count"))
    total = next(s.value for s in family.samples if s.name.endswith("_sum"))
    assert count == 6 and abs(total - 48.41) < 1e-9
