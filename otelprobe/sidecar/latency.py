"""Attribution latency: from the moment a window is closed (the watermark passed it) to the moment
one of its records is out (written to the JSON-lines file and handed to the OTLP exporters).

The sidecar's own answer to "how late are my attributions?", and what bench/sidecar_service.py
reads: a Prometheus histogram on /metrics (cumulative, never reset) and, in /healthz, exact
quantiles over the most recent records.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Any, Final

BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Histogram bucket bounds (s); 1 s is one of them (issue 9's p99 goal)."""
RECENT: Final = 10_000
"""Records whose latencies /healthz's quantiles are taken over."""
METRIC: Final = "otelprobe_sidecar_attribution_latency_seconds"


class LatencyRecorder:
    """Observed in the window worker's thread, read by the API on the loop's: one lock."""

    def __init__(self, recent: int = RECENT) -> None:
        self._lock = threading.Lock()
        self._buckets = [0] * len(BUCKETS_S)
        self._count = 0
        self._sum_s = 0.0
        self._recent: deque[float] = deque(maxlen=recent)

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._count += 1
            self._sum_s += seconds
            self._recent.append(seconds)
            for index, bound in enumerate(BUCKETS_S):
                if seconds <= bound:
                    self._buckets[index] += 1
                    break

    def summary(self) -> dict[str, Any]:
        """For /healthz: the count since start, and p50 / p99 / max of the recent records (s)."""
        with self._lock:
            recent = sorted(self._recent)
            count = self._count
        if not recent:
            return {"records": count, "recent": 0, "p50_s": None, "p99_s": None, "max_s": None}
        return {
            "records": count,
            "recent": len(recent),
            "p50_s": round(_quantile(recent, 0.50), 6),
            "p99_s": round(_quantile(recent, 0.99), 6),
            "max_s": round(recent[-1], 6),
        }

    def prometheus_lines(self) -> list[str]:
        with self._lock:
            buckets, count, total = list(self._buckets), self._count, self._sum_s
        lines = [
            f"# HELP {METRIC} Window close (watermark passed) to the record written and handed to "
            "the exporters, per attribution record.",
            f"# TYPE {METRIC} histogram",
        ]
        cumulative = 0
        for bound, in_bucket in zip(BUCKETS_S, buckets, strict=True):
            cumulative += in_bucket
            lines.append(f'{METRIC}_bucket{{le="{bound:g}"}} {cumulative}')
        lines.append(f'{METRIC}_bucket{{le="+Inf"}} {count}')
        lines.append(f"{METRIC}_sum {total!r}")
        lines.append(f"{METRIC}_count {count}")
        return lines


def _quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of sorted values (the value at or above a share q of them)."""
    rank = math.ceil(round(q * len(ordered), 9))  # rounded first: 0.99 * 100 is 99.00000000000001
    return ordered[min(max(rank, 1), len(ordered)) - 1]
