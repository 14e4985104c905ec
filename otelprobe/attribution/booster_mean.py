"""One LightGBM booster that is the mean of several: a seed ensemble saved in LightGBM's own text.

Boosters fit on the same rows with different seeds (bagging, feature sampling) disagree by a point
or two of AC@1 on held-out labs; their mean far less (models/MODEL_CARD.md, the session-19 step).
A booster's raw score is the sum of its trees' leaf values, so the mean of k boosters' raw scores
is the raw score of one booster holding all their trees with every leaf value divided by k. That
booster is an ordinary LightGBM text model: `predict` (raw, or through the objective's link),
`pred_contrib` (TreeSHAP is additive over trees, so its values are the members' mean too),
feature importance, saving, loading and the per-class split of shap_by_cause.py all work on it
unchanged. A multiclass booster keeps its layout: tree `i` of class `i % num_class`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from otelprobe.attribution.booster_text import join_trees, split_trees

if TYPE_CHECKING:
    import lightgbm as lgb

_SCALED_LINES: Final = re.compile(r"^(leaf_value|internal_value)=(.*)$", flags=re.M)


class BoosterMeanError(ValueError):
    """The boosters cannot be averaged: none given, or different features, classes or layout."""


def mean_booster(boosters: Sequence[lgb.Booster]) -> lgb.Booster:
    """A booster whose raw score is the mean of `boosters`' raw scores (one booster: itself).

    Raises:
        BoosterMeanError: no booster, or boosters with other features, classes or objectives.
    """
    import lightgbm as lgb

    if not boosters:
        raise BoosterMeanError("no booster to average")
    if len(boosters) == 1:
        return boosters[0]
    parts = [_parts(booster.model_to_string()) for booster in boosters]
    head, _, tail = parts[0]
    if any(_shape(other_head) != _shape(head) for other_head, _, _ in parts[1:]):
        raise BoosterMeanError("the boosters differ in features, classes or objective")
    if any("\nis_linear=1" in block for _, trees, _ in parts for block in trees):
        # A linear tree's leaves are linear models (leaf_const, leaf_coeff), not one value.
        raise BoosterMeanError("linear trees cannot be averaged here")
    scale = 1.0 / len(boosters)
    text = join_trees(head, [_scaled(block, scale) for _, trees, _ in parts for block in trees], tail)
    try:
        return lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:  # a layout this module does not understand
        raise BoosterMeanError(f"LightGBM refused the averaged model: {exc}") from None


def _parts(text: str) -> tuple[str, list[str], str]:
    parts = split_trees(text)
    if parts is None:
        raise BoosterMeanError("a booster's text has no trees, or not LightGBM's text layout")
    return parts


def _shape(head: str) -> tuple[str, ...]:
    keys = ("num_class", "num_tree_per_iteration", "max_feature_idx", "objective", "feature_names")
    found = (re.search(rf"^{key}=(.*)$", head, flags=re.M) for key in keys)
    return tuple(match[1] if match else "" for match in found)


def _scaled(block: str, scale: float) -> str:
    def scaled_line(match: re.Match[str]) -> str:
        values = " ".join(repr(float(value) * scale) for value in match[2].split())
        return f"{match[1]}={values}"

    return _SCALED_LINES.sub(scaled_line, block)
