"""docs/spans.md documents every span name, attribute key and metric that names.py defines."""

from __future__ import annotations

from pathlib import Path

from otelprobe import names

DOC = (Path(__file__).resolve().parents[2] / "docs" / "spans.md").read_text()
NOT_KEYS = {"ROOT_SPAN_PREFIX", "SYNTHETIC_TYPE_TEST", "HTTP_PHASES"}


def test_every_name_constant_is_documented() -> None:
    missing = [
        f"{const} = {value!r}"
        for const, value in vars(names).items()
        if const.isupper() and const not in NOT_KEYS and isinstance(value, str) and f"`{value}`" not in DOC
    ]
    assert not missing, "document these in docs/spans.md:\n" + "\n".join(missing)
