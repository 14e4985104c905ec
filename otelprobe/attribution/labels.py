"""The truth of a series-window in a lab recording, from the `lab.fault.*` labels on its probes.

A window is labeled with a cause when at least `MIN_LABELED_SHARE` of its probes carry one (the
lab labels every attempt that overlapped an incident, so attempts at an incident's edges may not
have seen it); with no labeled probe it is healthy; in between it is ambiguous and left out of
training and scoring. Where faults overlapped (`lab.fault.causes`), every cause is kept, in order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

from otelprobe.attribution.windows import WINDOW_KEYS

if TYPE_CHECKING:
    import pandas as pd

MIN_LABELED_SHARE: Final = 0.5
HEALTHY: Final = "healthy"
AMBIGUOUS: Final = "ambiguous"


def _mode(values: pd.Series) -> object:
    counts = values.dropna().value_counts()
    return counts.index[0] if len(counts) else None


def _causes(values: pd.Series) -> str | None:
    seen: list[str] = []
    for value in values.dropna():
        for cause in str(value).split(","):
            if cause and cause not in seen:
                seen.append(cause)
    return ",".join(seen) if seen else None


def window_labels(records: pd.DataFrame) -> pd.DataFrame:
    """One row per series-window (WINDOW_KEYS) with `label` (a cause, HEALTHY or AMBIGUOUS),
    `label_scope`, `label_incident`, `label_causes` (comma-separated, compound faults) and
    `label_share` (labeled probes / probes)."""
    import pandas as pd

    keys = list(WINDOW_KEYS)
    rec = records[[*keys, "lab_cause", "lab_scope", "lab_incident", "lab_causes"]].copy()
    rec["_labeled"] = rec["lab_cause"].notna().astype(np.int64)
    rec["_all_causes"] = rec["lab_causes"].where(rec["lab_causes"].notna(), rec["lab_cause"])
    grouped = rec.groupby(keys, sort=False)
    out = pd.DataFrame(
        {
            "label_share": grouped["_labeled"].mean(),
            "label_cause": grouped["lab_cause"].agg(_mode),
            "label_scope": grouped["lab_scope"].agg(_mode),
            "label_incident": grouped["lab_incident"].agg(_mode),
            "label_causes": grouped["_all_causes"].agg(_causes),
        }
    ).reset_index()
    share = out["label_share"].to_numpy()
    out["label"] = np.where(
        share >= MIN_LABELED_SHARE, out["label_cause"], np.where(share == 0, HEALTHY, AMBIGUOUS)
    )
    return out
