"""The garbage collector's pace for the sidecar: young collections every 50,000 net allocations.

A slot's work allocates millions of short-lived objects (span views, records, rows) while the
sidecar holds millions of long-lived ones (every series' baselines and burn-rate history, the
records of the open slots). At CPython's default pace (a young collection every 700 net
allocations, older ones every 10 of those) the collector ran so often, and so often over the
long-lived objects, that it took 30-40 % of a 10,000-series slot's CPU (bench/sidecar_ingest.py:
1.8 s -> 1.1 s per quiet slot without it). Almost all of that garbage is freed by reference
counting; cycles are still collected, only in larger batches.
"""

from __future__ import annotations

import gc
from typing import Final

THRESHOLDS: Final = (50_000, 20, 100)


def pace_for_throughput() -> None:
    """Collect less often (process-wide; idempotent)."""
    if gc.get_threshold()[0] < THRESHOLDS[0]:
        gc.set_threshold(*THRESHOLDS)
