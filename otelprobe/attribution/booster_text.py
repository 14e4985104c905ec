"""LightGBM's text model format taken apart into its trees and put back together.

Two modules rebuild boosters from a booster's own text: shap_by_cause.py (one booster per class of
a multiclass one) and booster_mean.py (one booster of several boosters' trees). A text model is a
header, one `Tree=N` block per tree (tree `i` of class `i % num_tree_per_iteration`), the line
`end of trees`, and a tail (feature importances, parameters) that LightGBM rewrites on saving.
"""

from __future__ import annotations

import re
from typing import Final

_TREE_START: Final = re.compile(r"\n(?=Tree=\d+\n)")


def split_trees(text: str) -> tuple[str, list[str], str] | None:
    """(header, tree blocks in order, tail) of a booster's text; None if it is not that layout."""
    head, found, rest = text.partition("\nTree=0\n")
    trees, ended, tail = rest.partition("\nend of trees")
    if not (found and ended):
        return None
    blocks = [block.strip("\n") for block in _TREE_START.split("Tree=0\n" + trees.strip("\n"))]
    return head, blocks, tail


def join_trees(head: str, blocks: list[str], tail: str) -> str:
    """A booster's text of `head` and `blocks`, renumbered in their order. The header's
    `tree_sizes` (byte sizes of the original trees) is dropped: LightGBM reads the trees in order
    without it and writes it anew when the booster is saved."""
    head = re.sub(r"^tree_sizes=.*\n?", "", head, flags=re.M)
    numbered = [re.sub(r"^Tree=\d+", f"Tree={i}", block, count=1) for i, block in enumerate(blocks)]
    return head + "\n" + "\n\n\n".join(numbered) + "\n\n\nend of trees" + tail
