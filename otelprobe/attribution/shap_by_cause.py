"""LightGBM SHAP values (`pred_contrib`) for chosen causes only, identical to the full computation.

Evidence is worded for at most the top 3 causes of a window, but `pred_contrib` on the multiclass cause
booster computes all 11 (8.8 ms per window; a third of a 10,000-series sidecar slot in violation
made that the largest cost of a slot). A multiclass booster holds one tree per class per
iteration, tree `i` belonging to class `i % num_class`, and a class's SHAP values are the sum of
its own trees' values. So the booster is split once into one single-output booster per class,
each with that class's trees in their order: its `pred_contrib` is bit-for-bit the class's slice
of the full one (tests/attribution/test_shap_by_cause.py), at 1/11 of the cost per class asked.
"""

from __future__ import annotations

import re
import weakref
from typing import TYPE_CHECKING

import numpy as np

from otelprobe.attribution.booster_text import join_trees, split_trees

if TYPE_CHECKING:
    import lightgbm as lgb

_split_cache: weakref.WeakKeyDictionary[lgb.Booster, tuple[lgb.Booster, ...] | None] = (
    weakref.WeakKeyDictionary()
)


def class_boosters(booster: lgb.Booster) -> tuple[lgb.Booster, ...] | None:
    """One booster per class of a multiclass `booster` (cached per booster); None when its text
    is not the layout this split understands (the caller then uses the full computation)."""
    if booster not in _split_cache:
        _split_cache[booster] = _split(booster)
    return _split_cache[booster]


def _split(booster: lgb.Booster) -> tuple[lgb.Booster, ...] | None:
    import lightgbm as lgb

    parts = split_trees(booster.model_to_string())
    if parts is None:
        return None
    head, blocks, tail = parts
    classes = re.search(r"^num_class=(\d+)$", head, flags=re.M)
    per_iteration = re.search(r"^num_tree_per_iteration=(\d+)$", head, flags=re.M)
    if not (classes and per_iteration) or classes[1] != per_iteration[1]:
        return None
    count = int(classes[1])
    if count < 2 or len(blocks) % count:
        return None
    head = re.sub(r"^num_class=\d+$", "num_class=1", head, flags=re.M)
    head = re.sub(r"^num_tree_per_iteration=\d+$", "num_tree_per_iteration=1", head, flags=re.M)
    # A raw single output: pred_contrib never applies the objective's transform anyway.
    head = re.sub(r"^objective=.*$", "objective=regression", head, flags=re.M)
    out = []
    for k in range(count):
        try:
            out.append(lgb.Booster(model_str=join_trees(head, blocks[k::count], tail)))
        except lgb.basic.LightGBMError:
            return None
    return tuple(out)


def contributions_for(booster: lgb.Booster, features: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """SHAP values of row i for class `classes[i, j]`: an n × m × (features + 1) array (the last
    column the bias), equal to `booster.predict(features, pred_contrib=True)`'s slices; zeros
    where `classes[i, j]` is negative (not asked for, not computed)."""
    n, m = classes.shape
    width = features.shape[1] + 1
    split = class_boosters(booster)
    if split is None:
        full = np.asarray(booster.predict(features, pred_contrib=True, num_threads=1), dtype=np.float64)
        full = full.reshape(n, -1, width)
        taken = np.take_along_axis(full, np.maximum(classes, 0)[:, :, None], axis=1)
        return np.where(classes[:, :, None] >= 0, taken, 0.0)
    out = np.zeros((n, m, width), dtype=np.float64)
    for k, one in enumerate(split):
        rows, slots = np.nonzero(classes == k)
        if len(rows):
            values = np.asarray(one.predict(features[rows], pred_contrib=True, num_threads=1))
            out[rows, slots] = values
    return out
