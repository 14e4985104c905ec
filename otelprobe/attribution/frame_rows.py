"""The rows of a window table as read-only mappings, for code that reads a few named values of
each row (evidence in words, the record's context).

`frame.to_dict("records")` converts every column of every row; evidence reads a dozen columns of a
row. Here a column is converted the first time any row reads it, once for all rows (`tolist`: the
same Python values `to_dict` gives), and a row is a view of those lists.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class FrameRows:
    """Lazily converted columns of `frame`; `rows[i]` is row i (by position) as a Mapping."""

    __slots__ = ("_frame", "_names", "converted")

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame
        self._names = frozenset(frame.columns)
        self.converted: dict[str, list[Any]] = {}
        """The columns read so far, by name."""

    def __len__(self) -> int:
        return len(self._frame)

    def __getitem__(self, position: int) -> FrameRow:
        return FrameRow(self, position)

    def column(self, name: str) -> list[Any] | None:
        """The column's values as Python objects (converted once), None when there is no such column."""
        values = self.converted.get(name)
        if values is None:
            if name not in self._names:
                return None
            values = self.converted[name] = self._frame[name].tolist()
        return values

    def has(self, name: str) -> bool:
        return name in self._names

    def names(self) -> Iterator[str]:
        return iter(self._frame.columns)


class FrameRow(Mapping[str, Any]):
    """One row of a FrameRows."""

    __slots__ = ("_converted", "_position", "_rows")

    def __init__(self, rows: FrameRows, position: int) -> None:
        self._rows = rows
        self._converted = rows.converted
        self._position = position

    def __getitem__(self, name: str) -> Any:
        values = self._rows.column(name)
        if values is None:
            raise KeyError(name)
        return values[self._position]

    def get(self, name: str, default: Any = None) -> Any:
        values = self._converted.get(name)  # most reads: a column some row already read
        if values is None:
            values = self._rows.column(name)
        return default if values is None else values[self._position]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._rows.has(name)

    def __iter__(self) -> Iterator[str]:
        return self._rows.names()

    def __len__(self) -> int:
        return sum(1 for _ in self._rows.names())
