"""Evidence in words covers the whole feature schema: a feature the model can lean on must never
make `attribute` fail for want of words."""

from __future__ import annotations

from typing import Any

import pytest

from otelprobe.attribution.evidence import describe
from otelprobe.attribution.features import FEATURE_NAMES


def _window(value: float) -> dict[str, Any]:
    row: dict[str, Any] = {name: value for name in FEATURE_NAMES}
    for side in ("vantage", "target"):
        row[f"{side}_peers"] = 5
        for name in FEATURE_NAMES:
            if name.startswith(f"{side}_") and name.endswith("_share"):
                row[name.removesuffix("_share") + "_count"] = 2
    row.update({"target": "api", "vantage": "eu-1", "n": 4, "n_fail": 1})
    return row


@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_every_feature_has_words(name: str) -> None:
    text = describe(name, _window(0.5))
    assert isinstance(text, str) and text.strip()


def test_a_neighbours_recent_symptom_says_recent() -> None:
    row = _window(0.4)
    assert describe("vantage_fail_recent_share", row) == (
        "2 of 5 other targets seen from eu-1 failing in this or a recent window"
    )
    assert describe("target_slow_share", row) == "2 of 5 other vantages of api degraded in this window"
