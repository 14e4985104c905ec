"""One closed window slot -> its rows of the window table, incrementally (the live dataset.window_table).

dataset.window_table builds the table of a whole recording in one call; the sidecar builds it one
slot at a time with the same parts, kept alive between slots: one FeatureEngine (it holds every
series' baseline) and one SLOEvaluator (it holds every series' burn-rate counts). A slot's rows
are then exactly the rows the offline table has for that window, so attribute.attribute reads
them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from otelprobe.attribution.features import INPUT_COLUMNS
from otelprobe.attribution.records import ProbeRecord, records_frame
from otelprobe.attribution.windows import assign_windows

if TYPE_CHECKING:
    import pandas as pd

    from otelprobe.attribution.features import FeatureEngine
    from otelprobe.attribution.slo import SLOEvaluator, SlotVerdicts


def slot_table(
    engine: FeatureEngine,
    evaluator: SLOEvaluator,
    slot_start_ns: int,
    records: Sequence[ProbeRecord],
) -> tuple[pd.DataFrame | None, SlotVerdicts]:
    """Features (with `violating` / `violating_slos`) of every series with probes in the slot,
    and the SLO verdict of every known series (the violating ones built, the rest when read);
    None for the table of an empty slot.

    Raises:
        ValueError: a slot that starts before the previous one ended (the windower prevents it).
    """
    frame = records_frame(records, INPUT_COLUMNS)
    verdicts = evaluator.evaluate(slot_start_ns, frame)
    if frame.empty:
        return None, verdicts
    table = engine.features(assign_windows(frame, evaluator.window_s), evaluator.window_s)
    violating = {(v.target, v.vantage): ",".join(v.violating_slos) for v in verdicts.violating}
    slos = [""] * len(table)
    if violating:  # most windows: none
        keys = zip(table["target"].tolist(), table["vantage"].tolist(), strict=True)
        slos = [violating.get(key, "") for key in keys]
    table["violating_slos"] = slos
    table["violating"] = np.array([bool(s) for s in slos], dtype=bool)
    return table, verdicts
