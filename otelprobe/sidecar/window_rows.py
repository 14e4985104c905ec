"""The feature rows of incident windows, kept so an operator's feedback can teach the model later.

After each closed slot the pipeline hands over the rows of the series that are members of an open
incident (`incident_rows`); state_store.py keeps them (bounded) and copies an incident's rows beside
its feedback. A row holds exactly what training and the promotion gate read: the cause features,
the gate's z-scores, the scope model's neighbour shares and the detection context — as a list of
floats in `COLUMNS` order (compact JSON in SQLite), never pickle. `frame_of` turns stored rows back
into a window table that train.py and attribute.py accept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from otelprobe.attribution.features import FEATURE_NAMES
from otelprobe.attribution.model import GATE_FEATURES, SCOPE_FEATURES
from otelprobe.attribution.scope_evidence import CAUSE_EVIDENCE_FEATURES, column_of
from otelprobe.causes import ROOT_CAUSES

if TYPE_CHECKING:
    import pandas as pd

CONTEXT: Final = ("warm", "symptomatic", "violating", "n", "n_fail")
COLUMNS: Final[tuple[str, ...]] = tuple(
    dict.fromkeys(
        [
            *FEATURE_NAMES,
            *GATE_FEATURES,
            *(c for c in SCOPE_FEATURES if c != "cause_code" and c not in CAUSE_EVIDENCE_FEATURES),
            # the scope model reads these per candidate cause (attribution/scope_evidence.py)
            *(column_of(feature, cause) for feature in CAUSE_EVIDENCE_FEATURES for cause in ROOT_CAUSES),
            *CONTEXT,
        ]
    )
)
"""What a kept row holds, in order (the feature schema first)."""
BOOLEAN: Final = frozenset({"warm", "symptomatic", "violating"})


@dataclass(frozen=True, slots=True)
class WindowRow:
    """One series-window of an open incident."""

    incident_id: str
    target: str
    vantage: str
    window_start_ns: int
    window_end_ns: int
    values: tuple[float | None, ...]  # COLUMNS order; None for NaN (JSON has no NaN)


def incident_rows(table: pd.DataFrame, incident_of: Mapping[tuple[str, str], str]) -> list[WindowRow]:
    """The rows of `table` (a slot's window table) whose series is in an open incident."""
    if table.empty or not incident_of:
        return []
    # .tolist(): iterating a pandas string column boxes each value (~0.1 s per 10,000-series slot)
    keys = list(zip(table["target"].astype(str).tolist(), table["vantage"].astype(str).tolist(), strict=True))
    chosen = [i for i, key in enumerate(keys) if key in incident_of]
    if not chosen:
        return []
    present = [c for c in COLUMNS if c in table.columns]
    block = table.iloc[chosen]
    matrix = np.full((len(chosen), len(COLUMNS)), np.nan)
    index = {c: i for i, c in enumerate(COLUMNS)}
    for column in present:
        matrix[:, index[column]] = block[column].to_numpy(dtype=np.float64, na_value=np.nan)
    starts = block["window_start_ns"].to_numpy(dtype=np.int64)
    ends = block["window_end_ns"].to_numpy(dtype=np.int64)
    cells = matrix.astype(object)  # Python floats, None for NaN: at once, not cell by cell
    cells[~np.isfinite(matrix)] = None
    rows = []
    for k, i in enumerate(chosen):
        target, vantage = keys[i]
        values = tuple(cells[k].tolist())
        rows.append(
            WindowRow(incident_of[(target, vantage)], target, vantage, int(starts[k]), int(ends[k]), values)
        )
    return rows


def frame_of(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Stored rows (`target`, `vantage`, `window_start_ns`, `window_end_ns`, `values`, and any label
    columns) as a window table: the feature columns as floats, the flags as booleans."""
    import pandas as pd

    rows = list(rows)
    matrix = np.array(
        [[np.nan if v is None else float(v) for v in row["values"]] for row in rows], dtype=np.float64
    ).reshape(len(rows), len(COLUMNS))
    columns: dict[str, Any] = {name: matrix[:, i] for i, name in enumerate(COLUMNS)}
    for column in BOOLEAN:
        columns[column] = np.nan_to_num(columns[column], nan=0.0) > 0.5
    for column in ("n", "n_fail"):
        columns[column] = np.nan_to_num(columns[column], nan=0.0).astype(np.int64)
    for key in sorted({key for row in rows for key in row} - {"values"}):
        columns[key] = [row.get(key) for row in rows]
    return pd.DataFrame(columns)  # built at once: a frame grown column by column is fragmented


def check_columns(names: Sequence[str]) -> bool:
    """True when rows stored with these columns can be read by this code (same schema)."""
    return tuple(names) == COLUMNS
