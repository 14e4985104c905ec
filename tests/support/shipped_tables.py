"""The window tables of the shipped campaigns, built once per test session, two at a time.

The notebooks and the shipped-model learning tests read the same tables through table_cache.py
(keyed by the recordings' bytes, whatever their order). Building them is single-threaded pandas
work, ~80 s for the three training campaigns and ~40 s for the three evaluation ones and
train-101, so they are built by two child processes at once into the session's cache before any
reader needs them, instead of by whichever test comes first, one after another.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
LAB: Final = REPO / "data" / "lab"
TRAIN: Final = ("train-301", "wide-304", "high-305")
"""models/default's training campaigns (its metadata names them) = the notebooks' train role."""
EVALUATION: Final = ("eval-402", "shifted-503", "eval-202")
"""The held-out campaigns: the notebooks' held-out one, the gate's two, the learning test's feedback."""
LEARNING: Final = ("train-101",)
"""The small training recording the sidecar learning tests train their live models on (with
shifted-503 as the gate's campaign); built beside the evaluation ones, whose lane is the shorter."""
BUILD_TIMEOUT_S: Final = 600.0

_BUILD = """
import sys
from otelprobe.attribution.table_cache import read_table_cached
cache, groups = sys.argv[1], sys.argv[2:]
for group in groups:
    read_table_cached(group.split(","), cache)
"""


def traces(campaign: str) -> str:
    return str(LAB / campaign / "traces.jsonl.gz")


def table_cache_dir(xdg_cache_home: Path) -> Path:
    """Where table_cache.default_cache_dir() points under this XDG_CACHE_HOME (the notebooks' kernels)."""
    return xdg_cache_home / "otelprobe" / "window-tables"


def build_shipped_tables(cache_dir: Path) -> None:
    """Every shipped table into `cache_dir`: the training tables in one child, the rest in another."""
    lanes: Sequence[Sequence[str]] = (
        [",".join(traces(c) for c in TRAIN)],
        [traces(c) for c in (*EVALUATION, *LEARNING)],
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILD, str(cache_dir), *groups],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for groups in lanes
    ]
    failures = []
    for child, groups in zip(children, lanes, strict=True):
        try:
            output, _ = child.communicate(timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            output, _ = child.communicate()
        if child.returncode != 0:
            failures.append(f"{groups}: exit {child.returncode}\n{output[-4000:]}")
    assert not failures, "building the shipped window tables failed:\n" + "\n".join(failures)
