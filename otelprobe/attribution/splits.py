"""Train/test splits that keep each incident whole, and a check that nothing leaks between them.

Evaluation's first step (issue 8): windows of one incident share its fault, so a split that put
some of them in training would let the model recognise the incident instead of the cause. The
split is scikit-learn's GroupShuffleSplit over incident ids with a fixed seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

_SHOWN_VALUES: Final = 5


class SplitError(ValueError):
    """The frame or the arguments cannot be split as asked."""


class LeakError(SplitError):
    """A value that must stay on one side of the split appears in both train and test."""


def split_by_incident(
    frame: pd.DataFrame, incident_col: str, test_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into train and test so that every incident lands wholly on one side.

    Incidents, not rows, are shuffled: ceil(test_fraction x incidents) of them go to test. The
    result depends only on the set of incident ids and the seed, not on the row order, and each
    side keeps the frame's row order and index.

    Args:
        frame: one row per window; `incident_col` names its incident.
        incident_col: the column of incident ids (no missing values: give healthy windows an id,
            e.g. their series, so they are grouped too).
        test_fraction: the share of incidents for test, in (0, 1).
        seed: the shuffle's seed.

    Returns:
        (train, test).

    Raises:
        SplitError: the column is missing or has gaps, or the fraction leaves a side empty.
    """
    if incident_col not in frame.columns:
        raise SplitError(f"no column {incident_col!r} to split by; columns: {list(frame.columns)}")
    incidents = frame[incident_col]
    n_missing = int(incidents.isna().sum())
    if n_missing:
        raise SplitError(
            f"{n_missing} rows have no {incident_col!r}; give every window an incident id"
            " (healthy windows: e.g. their series) so none is split from its neighbours"
        )
    if not 0.0 < test_fraction < 1.0:
        raise SplitError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    n_incidents = int(incidents.nunique())
    n_test = math.ceil(test_fraction * n_incidents)
    if n_test >= n_incidents:
        raise SplitError(
            f"{n_incidents} incidents with test_fraction {test_fraction} leave no incident for training"
        )
    splitter = GroupShuffleSplit(n_splits=1, test_size=n_test, random_state=seed)
    # Codes of the sorted unique ids: the split then ignores row order and the ids' own type.
    _, groups = np.unique(incidents.to_numpy(), return_inverse=True)
    train_rows, test_rows = next(splitter.split(np.zeros(len(frame)), groups=groups))
    return frame.iloc[train_rows], frame.iloc[test_rows]


def check_no_leak(train: pd.DataFrame, test: pd.DataFrame, cols: Sequence[str]) -> None:
    """Raise if any value of the given columns (incident id, target, vantage, ...) is on both sides.

    Missing values (healthy windows without an incident) are not values and never leak.

    Args:
        train: the training rows.
        test: the test rows.
        cols: the columns whose values must not be shared.

    Raises:
        LeakError: naming each leaking column and a few of its shared values.
        SplitError: a column is missing from either side.
    """
    leaks: list[str] = []
    for col in cols:
        for side, frame in (("train", train), ("test", test)):
            if col not in frame.columns:
                raise SplitError(f"{side} has no column {col!r} to check for leaks")
        shared = sorted(_present(train[col]) & _present(test[col]), key=str)
        if shared:
            shown = ", ".join(repr(value) for value in shared[:_SHOWN_VALUES])
            more = f" and {len(shared) - _SHOWN_VALUES} more" if len(shared) > _SHOWN_VALUES else ""
            leaks.append(f"{col}: {len(shared)} values in both train and test ({shown}{more})")
    if leaks:
        raise LeakError("train and test share values: " + "; ".join(leaks))


def _present(column: pd.Series) -> set[Any]:
    return set(column.dropna().unique().tolist())


def series_overlap(
    training: Mapping[str, Any], eval_frame: pd.DataFrame, train_frame: pd.DataFrame
) -> list[str]:
    """Warnings for targets and vantages the evaluated windows share with the model's training
    series (`training.targets`/`vantages`, stored by train_model since they exist) and with the
    `--train` table (splits.check_no_leak); empty when none is shared."""
    columns = ["target", "vantage"]
    stored = {col: [str(v) for v in training.get(f"{col}s") or []] for col in columns}
    longest = max(len(values) for values in stored.values())
    padded = {
        col: pd.Series(values + [None] * (longest - len(values)), dtype=object)
        for col, values in stored.items()
    }
    sides = {
        "the model's training series (its metadata)": pd.DataFrame(padded),
        "the --train recordings": train_frame,
    }
    notes = []
    for side, frame in sides.items():
        if frame.empty or not set(columns) <= set(frame.columns):
            continue
        try:
            check_no_leak(frame, eval_frame, columns)
        except LeakError as exc:
            shared = str(exc).removeprefix("train and test share values: ")
            notes.append(f"the evaluated windows share series names with {side}: {shared}")
    return notes
