"""The public surface is pinned: a change to it is a decision, not an accident (httpx style)."""

from __future__ import annotations

import otelprobe
from otelprobe import errors


def test_exported_members() -> None:
    assert otelprobe.__all__ == ["__version__"]
    assert isinstance(otelprobe.__version__, str)


def test_error_classes_are_exported_from_errors() -> None:
    for cls in errors.ERROR_CLASSES:
        assert issubclass(cls, errors.ProbeError)
        assert getattr(errors, cls.__name__) is cls
