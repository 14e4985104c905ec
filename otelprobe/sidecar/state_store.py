"""The sidecar's state on disk: one SQLite file in the state directory, written after every slot.

Beside the pipeline (service.py calls `save` after each closed slot and `load` at start-up). One
transaction per slot holds the pipeline snapshot (snapshot.py: baselines, burn-rate history, open
incidents), where windowing stopped, the slot's attributions and the feature rows of the windows
of open incidents (window_rows.py); SQLite's WAL journal makes each write atomic, so a crash (or
kill -9) leaves the last committed slot, never a torn file. Recent attributions are trimmed to
`max_recent` and window rows to `max_window_rows` in the same transaction.

Operator feedback (feedback.py) is one more transaction: the verdict and a copy of the incident's
window rows, so trimming never takes a confirmed window away. One incident gets one verdict (the
table's primary key): a second is refused and changes nothing. Every method takes one lock: the
service's worker thread saves slots while the API's thread records feedback.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from otelprobe.sidecar.window_rows import COLUMNS, WindowRow

_logger = logging.getLogger(__name__)
FILENAME: Final = "sidecar.sqlite3"
SCHEMA_VERSION: Final = 1
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS attributions ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, window_start_ns INTEGER NOT NULL, record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS incident_windows ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, incident TEXT NOT NULL, target TEXT NOT NULL,"
    " vantage TEXT NOT NULL, window_start_ns INTEGER NOT NULL, window_end_ns INTEGER NOT NULL,"
    " columns INTEGER NOT NULL, row_values TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS incident_windows_incident ON incident_windows (incident)",
    "CREATE INDEX IF NOT EXISTS incident_windows_series"
    " ON incident_windows (target, vantage, window_start_ns)",
    "CREATE TABLE IF NOT EXISTS row_columns (id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS feedback ("
    " incident TEXT PRIMARY KEY, seq INTEGER NOT NULL, record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS feedback_windows ("
    " incident TEXT NOT NULL, target TEXT NOT NULL, vantage TEXT NOT NULL,"
    " window_start_ns INTEGER NOT NULL, window_end_ns INTEGER NOT NULL, columns INTEGER NOT NULL,"
    " row_values TEXT NOT NULL, PRIMARY KEY (incident, target, vantage, window_start_ns))",
)


class FeedbackExists(Exception):
    """The incident already has a verdict."""


@dataclass(frozen=True, slots=True)
class SavedState:
    window_s: float
    closed_until_ns: int | None
    pipeline: dict[str, Any]
    attributions: list[dict[str, Any]]  # oldest first


class StateStore:
    """Args:
    directory: created if missing (mode 0700: the state names targets and vantages).
    max_recent: attributions kept.
    """

    def __init__(
        self, directory: str | Path, *, max_recent: int = 500, max_window_rows: int = 20_000
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.directory / FILENAME
        self.max_recent = max_recent
        self.max_window_rows = max_window_rows
        self._lock = threading.RLock()
        # One writer (the service's worker thread at a time); check_same_thread off for it.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at each checkpoint, never torn
        for statement in _SCHEMA:
            self._db.execute(statement)
        self.saves = 0
        self._columns_id = self._column_set(COLUMNS)

    def _column_set(self, names: Sequence[str]) -> int:
        """The id of a row layout (rows of another otelprobe version keep theirs and are skipped)."""
        text = json.dumps(list(names))
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO row_columns (names) VALUES (?)", (text,))
            (found,) = self._db.execute("SELECT id FROM row_columns WHERE names = ?", (text,)).fetchone()
        return int(found)

    def load(self) -> SavedState | None:
        """The last committed state, or None for a new (or other-version) store."""
        with self._lock:
            return self._load()

    def _load(self) -> SavedState | None:
        values = dict(self._db.execute("SELECT key, value FROM kv").fetchall())
        if int(values.get("schema", 0)) != SCHEMA_VERSION or "pipeline" not in values:
            return None
        rows = self._db.execute("SELECT record FROM attributions ORDER BY seq").fetchall()
        closed = values.get("closed_until_ns")
        return SavedState(
            window_s=float(values["window_s"]),
            closed_until_ns=None if closed in (None, "") else int(closed),
            pipeline=json.loads(values["pipeline"]),
            attributions=[json.loads(record) for (record,) in rows],
        )

    def save(
        self,
        *,
        window_s: float,
        closed_until_ns: int | None,
        pipeline: Mapping[str, Any] | None,
        attributions: Iterable[Mapping[str, Any]] = (),
        incident_rows: Iterable[WindowRow] = (),
    ) -> None:
        """One slot's state, in one transaction (`pipeline` None keeps the saved baselines)."""
        with self._lock:
            self._save(window_s, closed_until_ns, pipeline, attributions, incident_rows)

    def _save(
        self,
        window_s: float,
        closed_until_ns: int | None,
        pipeline: Mapping[str, Any] | None,
        attributions: Iterable[Mapping[str, Any]],
        incident_rows: Iterable[WindowRow],
    ) -> None:
        values = {
            "schema": str(SCHEMA_VERSION),
            "window_s": repr(window_s),
            "closed_until_ns": "" if closed_until_ns is None else str(closed_until_ns),
        }
        if pipeline is not None:
            values["pipeline"] = json.dumps(pipeline, separators=(",", ":"))
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", values.items())
            db.executemany(
                "INSERT INTO attributions (window_start_ns, record) VALUES (?, ?)",
                [
                    (int(a.get("window_start_unix_nano", 0)), json.dumps(a, separators=(",", ":")))
                    for a in attributions
                ],
            )
            db.execute(
                "DELETE FROM attributions WHERE seq <= (SELECT MAX(seq) FROM attributions) - ?",
                (self.max_recent,),
            )
            rows = [
                (
                    r.incident_id,
                    r.target,
                    r.vantage,
                    r.window_start_ns,
                    r.window_end_ns,
                    self._columns_id,
                    json.dumps(r.values, separators=(",", ":")),
                )
                for r in incident_rows
            ]
            if rows:
                db.executemany(
                    "INSERT INTO incident_windows (incident, target, vantage, window_start_ns,"
                    " window_end_ns, columns, row_values) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                db.execute(
                    "DELETE FROM incident_windows WHERE seq <= (SELECT MAX(seq) FROM incident_windows) - ?",
                    (self.max_window_rows,),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.saves += 1

    # --- feedback ---------------------------------------------------------------------------------

    def incident_known(self, incident_id: str) -> bool:
        """Whether window rows of this incident are kept (it was open while this store saved)."""
        with self._lock:
            found = self._db.execute(
                "SELECT 1 FROM incident_windows WHERE incident = ? LIMIT 1", (incident_id,)
            ).fetchone()
        return found is not None

    def incident_start_ns(self, incident_id: str) -> int | None:
        """The start of the first kept window of the incident (None: none kept)."""
        with self._lock:
            (found,) = self._db.execute(
                "SELECT MIN(window_start_ns) FROM incident_windows WHERE incident = ?", (incident_id,)
            ).fetchone()
        return None if found is None else int(found)

    def feedback_of(self, incident_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._db.execute(
                "SELECT record FROM feedback WHERE incident = ?", (incident_id,)
            ).fetchone()
        return None if found is None else dict(json.loads(found[0]))

    def add_feedback(
        self,
        incident_id: str,
        record: Mapping[str, Any],
        series: Iterable[tuple[str, str, int, int | None]] = (),
    ) -> int:
        """Record a verdict with a copy of the incident's window rows, in one transaction: the rows
        stored under its id plus those of `series` (target, vantage, start, end or None) in their
        time range (a merged incident's members were kept under their first id).

        Returns: the number of window rows stored with it.
        Raises: FeedbackExists (nothing changed).
        """
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM feedback").fetchone()
                db.execute(
                    "INSERT INTO feedback (incident, seq, record) VALUES (?, ?, ?)",
                    (incident_id, seq, json.dumps(dict(record), separators=(",", ":"))),
                )
                copy = (
                    "INSERT OR IGNORE INTO feedback_windows (incident, target, vantage, window_start_ns,"
                    " window_end_ns, columns, row_values) SELECT ?, target, vantage, window_start_ns,"
                    " window_end_ns, columns, row_values FROM incident_windows"
                )
                db.execute(copy + " WHERE incident = ? ORDER BY seq DESC", (incident_id, incident_id))
                for target, vantage, start_ns, end_ns in series:
                    db.execute(
                        copy + " WHERE target = ? AND vantage = ? AND window_start_ns >= ?"
                        " AND window_start_ns < ? ORDER BY seq DESC",
                        (incident_id, target, vantage, start_ns, end_ns if end_ns is not None else 2**63 - 1),
                    )
                (count,) = db.execute(
                    "SELECT COUNT(*) FROM feedback_windows WHERE incident = ?", (incident_id,)
                ).fetchone()
                stored = {**record, "windows": int(count)}
                db.execute(
                    "UPDATE feedback SET record = ? WHERE incident = ?",
                    (json.dumps(stored, separators=(",", ":")), incident_id),
                )
                db.execute("COMMIT")
            except sqlite3.IntegrityError:
                db.execute("ROLLBACK")
                raise FeedbackExists(incident_id) from None
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return int(count)

    def feedback(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Every verdict, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM feedback ORDER BY seq DESC LIMIT ?", (-1 if limit is None else limit,)
            ).fetchall()
        return [dict(json.loads(record)) for (record,) in rows]

    def feedback_windows(self) -> list[dict[str, Any]]:
        """The window rows of every verdict, with the verdict's incident (rows of another layout
        are skipped)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT incident, target, vantage, window_start_ns, window_end_ns, row_values"
                " FROM feedback_windows WHERE columns = ?"
                " ORDER BY incident, target, vantage, window_start_ns",
                (self._columns_id,),
            ).fetchall()
        return [
            {
                "incident": incident,
                "target": target,
                "vantage": vantage,
                "window_start_ns": int(start),
                "window_end_ns": int(end),
                "values": json.loads(values),
            }
            for incident, target, vantage, start, end, values in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()
