"""The per-chunk attribution path against the per-row code it replaced, on a real window table
(eval-202): the same evidence order, the same row values, the same scope inputs. The records
themselves are pinned bit for bit by bench/sidecar_slots.py --digest and bench/sidecar_identity.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from otelprobe.attribution.attribute import EVIDENCE_MIN_SCORE, attributable, attribute, attributed
from otelprobe.attribution.dataset import WindowTable
from otelprobe.attribution.evidence import strongest_positive, top_evidence
from otelprobe.attribution.features import FEATURE_NAMES, feature_matrix
from otelprobe.attribution.frame_rows import FrameRows
from otelprobe.attribution.model import AttributionModel, scope_inputs, scope_inputs_per_cause
from otelprobe.causes import ROOT_CAUSES

pytestmark = pytest.mark.timeout(300)


def _sorted_reference(values: list[float], limit: int = 4) -> list[int]:
    """The per-row selection this replaced: positive finite values, sorted(key=-value), stable."""
    ranked = sorted(
        ((j, v) for j, v in enumerate(values) if v > 0 and math.isfinite(v)),
        key=lambda item: -item[1],
    )
    return [j for j, _ in ranked[:limit]]


def test_evidence_is_chosen_as_sorted_chose_it_ties_nan_and_negatives_included() -> None:
    rng = np.random.default_rng(3)
    # Few distinct values, so ties are common; NaN, ±inf, zeros and negatives never chosen.
    pool = np.array([0.5, 0.25, 0.25, 1.0, 0.0, -0.0, -0.5, math.nan, math.inf, -math.inf, 1e-300])
    values = rng.choice(pool, size=(400, 3, len(FEATURE_NAMES)), p=[0.01] * 10 + [0.9])
    values[:50] = rng.choice(pool[:4], size=(50, 3, len(FEATURE_NAMES)))  # all ties, all positive
    columns, counts = strongest_positive(values)
    for i in range(values.shape[0]):
        for k in range(values.shape[1]):
            expected = _sorted_reference(values[i, k].tolist())
            assert columns[i, k, : counts[i, k]].tolist() == expected


def test_rows_read_the_values_to_dict_gives(eval_table: WindowTable) -> None:
    frame = eval_table.frame.iloc[:300]
    records = frame.to_dict("records")
    rows = FrameRows(frame)
    for i in (0, 1, 150, 299):
        row = rows[i]
        assert list(row) == list(records[i])
        for name, expected in records[i].items():
            got = row[name]
            assert type(got) is type(expected), name
            assert got == expected or (got != got and expected != expected), name
        assert row.get("no such column") is None
        assert "target" in row and "no such column" not in row


def test_scope_inputs_of_every_cause_are_the_per_cause_inputs(eval_table: WindowTable) -> None:
    frame = eval_table.frame.iloc[:500]
    together = scope_inputs_per_cause(frame)
    for c in range(len(ROOT_CAUSES)):
        one = scope_inputs(frame, np.full(len(frame), float(c)))
        np.testing.assert_array_equal(together[:, c, :], one)  # NaN in the same places too
    assert scope_inputs_per_cause(frame.iloc[:0]).shape == (0, len(ROOT_CAUSES), together.shape[2])


def test_records_carry_the_top_evidence_of_their_shap_values(
    trained_model: AttributionModel, eval_table: WindowTable
) -> None:
    """Each window's evidence is what `top_evidence` makes of the cause's SHAP values and the row,
    for the top cause and the next two when scored at least EVIDENCE_MIN_SCORE; none for the rest."""
    frame = eval_table.frame
    candidates = frame[attributable(frame)].iloc[:120]
    rows = candidates[attributed(trained_model, candidates)]
    made = list(attribute(trained_model, candidates))
    assert made and len(made) == len(rows)
    shap = trained_model.cause_contributions(feature_matrix(rows))
    records = rows.to_dict("records")
    for i, attribution in enumerate(made):
        for rank, ranked in enumerate(attribution.causes[:3]):
            if rank and ranked.score < EVIDENCE_MIN_SCORE:
                assert ranked.evidence == ()
                continue
            c = ROOT_CAUSES.index(ranked.cause)
            contributions = dict(zip(FEATURE_NAMES, shap[i, c, :-1].tolist(), strict=True))
            assert ranked.evidence == tuple(top_evidence(contributions, records[i]))
        assert all(ranked.evidence == () for ranked in attribution.causes[3:])
