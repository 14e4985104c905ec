"""SLOs scoped by tenant: `select: {tenants: [...]}` covers the series whose probes carry that tenant."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from otelprobe.attribution.slo import SeriesWindow, SLOEvaluator
from otelprobe.attribution.slo_file import load_slo_text

T0_NS = 1_795_443_980_000_000_000

SLOS = """
time_scale: 1/30
rules: [{long: 1h, short: 5m, factor: 14.4}]
slos:
  - {name: payments-avail, select: {tenants: [payments]}, availability: {objective: 0.999}}
  - {name: everyone, availability: {objective: 0.99}}
"""


@dataclass(frozen=True)
class Probe:
    target: str
    vantage: str
    total_s: float
    success: bool
    tenant: str | None


def _slos_by_series(windows: list[SeriesWindow]) -> dict[str, tuple[str, ...]]:
    return {w.target: tuple(s.slo for s in w.slos) for w in windows}


def test_a_tenant_scoped_slo_covers_only_that_tenants_series() -> None:
    evaluator = SLOEvaluator(load_slo_text(SLOS, "slo.yaml"), window_s=2.0)
    window = [
        Probe("checkout", "eu-1", 0.05, True, "payments"),
        Probe("docs", "eu-1", 0.05, True, "docs-team"),
        Probe("legacy", "eu-1", 0.05, True, None),  # a prober without tenants
    ]
    assert _slos_by_series(evaluator.evaluate(T0_NS, window)) == {
        "checkout": ("payments-avail", "everyone"),
        "docs": ("everyone",),
        "legacy": ("everyone",),
    }


def test_the_same_from_a_records_frame_with_a_tenant_column() -> None:
    evaluator = SLOEvaluator(load_slo_text(SLOS, "slo.yaml"), window_s=2.0)
    frame = pd.DataFrame(
        {
            "target": ["checkout", "docs"],
            "vantage": ["eu-1", "eu-1"],
            "total_s": [0.05, 0.05],
            "success": [True, False],
            "tenant": pd.Series(["payments", None], dtype="string"),
        }
    )
    assert _slos_by_series(evaluator.evaluate(T0_NS, frame)) == {
        "checkout": ("payments-avail", "everyone"),
        "docs": ("everyone",),
    }


def test_tenant_globs_and_an_empty_list_is_refused() -> None:
    slos = load_slo_text(SLOS.replace("tenants: [payments]", "tenants: ['pay*', billing]"), "slo.yaml")
    select = slos.slos[0].select
    assert (
        select.by_tenant
        and select.matches("x", "eu-1", "payments")
        and select.matches("x", "eu-1", "billing")
    )
    assert not select.matches("x", "eu-1", None) and not select.matches("x", "eu-1", "search")
    assert slos.slos[1].select.matches("x", "eu-1", None)
    with pytest.raises(Exception, match="at least one"):
        load_slo_text(SLOS.replace("tenants: [payments]", "tenants: []"), "slo.yaml")
