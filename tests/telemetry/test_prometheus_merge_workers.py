"""Merging workers' /metrics pages (otelprobe run --workers): one HELP/TYPE per family, every series
labelled by its worker, a page's families kept together even when pages order them differently."""

from __future__ import annotations

from otelprobe.telemetry.prometheus_merge import merge_pages, with_label

PAGE_0 = """# HELP target_info Target metadata
# TYPE target_info gauge
target_info{service_instance_id="h-1/w0"} 1
# HELP probe_runs_total Probe runs
# TYPE probe_runs_total counter
probe_runs_total{probe_target="a"} 3
# HELP probe_duration_seconds Phase durations
# TYPE probe_duration_seconds histogram
probe_duration_seconds_bucket{probe_target="a",le="+Inf"} 3
probe_duration_seconds_sum{probe_target="a"} 0.25
probe_duration_seconds_count{probe_target="a"} 3
"""
PAGE_1 = """# HELP target_info Target metadata
# TYPE target_info gauge
target_info{service_instance_id="h-1/w1"} 1
# HELP probe_duration_seconds Phase durations
# TYPE probe_duration_seconds histogram
probe_duration_seconds_count{probe_target="b"} 2
# HELP probe_runs_total Probe runs
# TYPE probe_runs_total counter
probe_runs_total{probe_target="b"} 2
"""


def test_families_are_described_once_and_keep_their_series_together() -> None:
    page = merge_pages([("0", PAGE_0), ("1", PAGE_1)], "worker")
    lines = page.splitlines()
    assert [line for line in lines if line.startswith("# TYPE")] == [
        "# TYPE target_info gauge",
        "# TYPE probe_runs_total counter",
        "# TYPE probe_duration_seconds histogram",
    ]
    runs = lines.index("# TYPE probe_runs_total counter")
    assert lines[runs + 1 : runs + 3] == [
        'probe_runs_total{worker="0",probe_target="a"} 3',
        'probe_runs_total{worker="1",probe_target="b"} 2',
    ]
    assert 'target_info{worker="1",service_instance_id="h-1/w1"} 1' in lines
    assert lines[-1] == 'probe_duration_seconds_count{worker="1",probe_target="b"} 2'


def test_a_missing_page_is_just_absent() -> None:
    assert merge_pages([("1", PAGE_1)], "worker") == merge_pages([("1", PAGE_1)], "worker")
    assert 'worker="0"' not in merge_pages([("1", PAGE_1)], "worker")
    assert merge_pages([], "worker") == ""


def test_label_goes_first_whatever_the_sample_looks_like() -> None:
    assert with_label("up 1", "worker", "0") == 'up{worker="0"} 1'
    assert with_label("up{} 1", "worker", "0") == 'up{worker="0"} 1'
    assert with_label('x{a="{ }"} 2 1700', "worker", "3") == 'x{worker="3",a="{ }"} 2 1700'
