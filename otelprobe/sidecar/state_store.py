"""The sidecar's state on disk: one SQLite file in the state directory, written after every slot.

Beside the pipeline (service.py calls `save` after each closed slot and `load` at start-up). One
transaction per slot holds the pipeline snapshot (snapshot.py: baselines, burn-rate history, open
incidents), where windowing stopped, and the slot's attributions; SQLite's WAL journal makes each
write atomic, so a crash (or kill -9) leaves the last committed slot, never a torn file. Recent
attributions are trimmed to `max_recent` in the same transaction.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

_logger = logging.getLogger(__name__)
FILENAME: Final = "sidecar.sqlite3"
SCHEMA_VERSION: Final = 1
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS attributions ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, window_start_ns INTEGER NOT NULL, record TEXT NOT NULL)",
)


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

    def __init__(self, directory: str | Path, *, max_recent: int = 500) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.directory / FILENAME
        self.max_recent = max_recent
        # One writer (the service's worker thread at a time); check_same_thread off for it.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at each checkpoint, never torn
        for statement in _SCHEMA:
            self._db.execute(statement)
        self.saves = 0

    def load(self) -> SavedState | None:
        """The last committed state, or None for a new (or other-version) store."""
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
    ) -> None:
        """One slot's state, in one transaction (`pipeline` None keeps the saved baselines)."""
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
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.saves += 1

    def close(self) -> None:
        self._db.close()
