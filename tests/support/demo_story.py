"""What `otelprobe demo` prints that a user reads to see the loop worked: the violation detected,
the injected cause in the first window's top 3 and first by the incident's verdict, the incident
closed."""

from __future__ import annotations

import re


def assert_story_told(out: str, cause: str) -> None:
    assert "SLO violation detected" in out, out
    # The first window may straddle the fault's start: its top 3 name the cause; the incident's
    # windows, by mean score, rank it first.
    ranked = [line.split() for line in out.splitlines() if line.lstrip().startswith(("1. ", "2. ", "3. "))]
    assert cause in {rank[1] for rank in ranked[:3]}, out
    assert re.search(
        r"ranked first in \d+ of \d+ windows attributed so far, and first by mean score over them "
        rf"\((?:0\.\d\d|1\.00)\): {cause}, which matches",  # a score of 1 shows as 1.00
        out,
    ), out
    assert " closed: " in out, out
