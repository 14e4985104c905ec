"""A lab recording's labels as operator feedback: the verdicts and incident windows a retraining
job reads (retrain.py's spec `verdicts` and `windows_file`), as if an operator had confirmed
every labeled incident of one cause the way the lab labels say. The bench and the tests feed the
sidecar's retraining with these, so they measure what confirmed incidents do, not a replay.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from otelprobe.sidecar.window_rows import COLUMNS

if TYPE_CHECKING:
    import pandas as pd


def incident_name(campaign: str, incident: float) -> str:
    return f"{campaign}-{int(incident)}"


def confirmed_incidents(
    table: pd.DataFrame, cause: str, campaign: str, by: str = "lab"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(verdicts, windows) confirming each of `table`'s warm `cause` incidents (a labeled window
    table, window_table's output) with its labeled scope, the windows' feature rows as the sidecar
    stores them."""
    verdicts: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    chosen = table[table["warm"] & (table["label"] == cause)]
    for incident, rows in chosen.groupby("label_incident"):
        name = incident_name(campaign, float(str(incident)))
        verdicts.append(
            {
                "incident": name,
                "verdict": "confirmed",
                "cause": cause,
                "scope": str(rows["label_scope"].mode()[0]),
                "not_an_incident": False,
                "by": by,
                "series": None,
                "at_unix_nano": 0,
                "incident_start_unix_nano": int(rows["window_start_ns"].min()),
            }
        )
        for row in rows.to_dict("records"):
            values = [row.get(column) for column in COLUMNS]
            windows.append(
                {
                    "incident": name,
                    "target": row["target"],
                    "vantage": row["vantage"],
                    "window_start_ns": int(row["window_start_ns"]),
                    "window_end_ns": int(row["window_end_ns"]),
                    "values": [
                        None if v is None or not math.isfinite(float(v)) else float(v) for v in values
                    ],
                }
            )
    return verdicts, windows
