"""A disk cache of window tables (dataset.read_window_table), so the notebooks that all start from
the same recordings build each table once.

Building a table replays every series' baseline and labels every window (10-25 s for train-101
on a shared 2-core machine); reading it back takes well under a second. An entry is keyed by the
recordings' bytes, the source of the code that builds tables (otelprobe/attribution/*.py and
otelprobe/causes.py) and the pandas version, so an edited feature or a re-recorded campaign never
reads a stale table. Entries are a numpy `.npz` read with `allow_pickle=False` plus a JSON side
file — never pickle. A damaged entry is rebuilt, not raised.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from otelprobe.attribution.dataset import WindowTable, read_window_table
from otelprobe.attribution.otlp_files import ReaderStats

CACHE_FORMAT: Final = 1
_TEXT: Final = "text"
UNUSABLE: Final = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)
"""What reading a missing, truncated or foreign cache entry raises."""
_CODE_DIRS: Final = (Path(__file__).parent,)
_CODE_FILES: Final = (Path(__file__).parent.parent / "causes.py",)


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/otelprobe/window-tables` (`~/.cache/...` when the variable is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "otelprobe" / "window-tables"


def cache_key(paths: Sequence[str | Path]) -> str:
    """Digest of the recordings' names and bytes, the table-building code and pandas' version."""
    import pandas as pd

    digest = hashlib.sha256(f"format {CACHE_FORMAT} pandas {pd.__version__}".encode())
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    code = sorted(f for d in _CODE_DIRS for f in d.glob("*.py")) + list(_CODE_FILES)
    for source in code:
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:32]


def read_table_cached(paths: Sequence[str | Path], cache_dir: str | Path | None) -> WindowTable:
    """`read_window_table(paths)` (automatic window, default SLOs), through the cache when
    `cache_dir` is given."""
    if cache_dir is None:
        return read_window_table(paths)
    stem = Path(cache_dir) / cache_key(paths)
    try:
        return load_table(stem)
    except UNUSABLE:
        pass  # missing or damaged: rebuild it
    table = read_window_table(paths)
    if table.frame.index.equals(_positions(len(table.frame))):  # the only index an entry rebuilds
        save_table(table, stem)
    return table


def save_table(table: WindowTable, stem: Path) -> None:
    """Write `stem.npz` and `stem.json` (each atomically: a reader never sees half a file)."""
    frame = table.frame
    arrays: dict[str, Any] = {}  # Any: numpy types savez **kwargs as bool (its allow_pickle)
    columns: list[dict[str, str]] = []
    for i, name in enumerate(frame.columns):
        column = frame[name]
        if column.dtype.kind in "biuf":
            arrays[f"c{i}"] = column.to_numpy()
            columns.append({"name": str(name), "dtype": str(column.dtype), "kind": "number"})
        else:
            missing = column.isna().to_numpy(dtype=bool)
            text = ["" if gone else str(value) for value, gone in zip(column.tolist(), missing, strict=True)]
            arrays[f"c{i}"] = np.array(text, dtype=str)
            arrays[f"m{i}"] = missing
            columns.append({"name": str(name), "dtype": str(column.dtype), "kind": _TEXT})
    meta = {
        "format": CACHE_FORMAT,
        "columns": columns,
        "window_s": table.window_s,
        "records": table.records,
        "reader": dataclasses.asdict(table.reader),
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(stem.with_suffix(".npz"), lambda handle: np.savez_compressed(handle, **arrays))
    _atomic_write(stem.with_suffix(".json"), lambda handle: handle.write(json.dumps(meta).encode()))


def load_table(stem: Path) -> WindowTable:
    """Read an entry written by `save_table`; raises one of UNUSABLE if it is missing or damaged."""
    import pandas as pd

    meta = json.loads(stem.with_suffix(".json").read_text())
    if meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"{stem}: cache format {meta.get('format')}, expected {CACHE_FORMAT}")
    data: dict[str, Any] = {}
    with open(stem.with_suffix(".npz"), "rb") as handle, np.load(handle, allow_pickle=False) as arrays:
        for i, column in enumerate(meta["columns"]):
            values = arrays[f"c{i}"]
            if column["kind"] == _TEXT:
                objects = np.where(arrays[f"m{i}"], None, values.astype(object))
                data[column["name"]] = pd.Series(objects, dtype=column["dtype"])
            else:
                data[column["name"]] = pd.Series(values, dtype=column["dtype"])
    frame = pd.DataFrame(data)
    return WindowTable(frame, float(meta["window_s"]), ReaderStats(**meta["reader"]), int(meta["records"]))


def _positions(n: int) -> Any:
    import pandas as pd

    return pd.RangeIndex(n)


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
