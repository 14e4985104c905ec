"""`make demo` without `--fault` injects a different fault each run: the one after the last run's."""

from __future__ import annotations

import itertools
from pathlib import Path

from otelprobe.cli.demo import LAST_FAULT_FILE, next_fault

KINDS = ["backend_slow", "dns_failure", "http_5xx", "tls_slow"]


def test_each_run_injects_the_fault_after_the_last_runs(tmp_path: Path) -> None:
    last = tmp_path / LAST_FAULT_FILE
    runs = [next_fault(KINDS, last) for _ in range(2 * len(KINDS))]
    assert all(a != b for a, b in itertools.pairwise(runs))
    assert sorted(runs[: len(KINDS)]) == KINDS  # every fault once before any repeats
    assert runs[len(KINDS) :] == runs[: len(KINDS)]
    assert last.read_text().strip() == runs[-1]


def test_an_unknown_or_missing_last_fault_starts_anywhere(tmp_path: Path) -> None:
    last = tmp_path / LAST_FAULT_FILE
    last.write_text("a fault this version no longer has\n")
    assert next_fault(KINDS, last) in KINDS
    assert next_fault(KINDS, tmp_path / "no such dir" / LAST_FAULT_FILE) in KINDS  # not writable: no crash
