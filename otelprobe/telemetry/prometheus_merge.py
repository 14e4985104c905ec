"""Several processes' /metrics pages as one page: families grouped, series told apart by a label.

`otelprobe run --workers N` serves one Prometheus endpoint for its N probing processes. The text
format wants each family's HELP and TYPE once, with all its samples after them, and no two samples
with the same labels, so the pages are not simply concatenated: samples are regrouped under their
family (the one whose TYPE line they follow) and each gets the label naming its page.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class _Family:
    help: str = ""
    type: str = ""
    samples: list[str] = field(default_factory=list)


def with_label(sample: str, name: str, value: str) -> str:
    """`sample` (`metric{labels} value` or `metric value`) with `name="value"` as its first label."""
    pair = f'{name}="{value}"'
    brace = sample.find("{")
    space = sample.find(" ")
    if brace == -1 or (space != -1 and space < brace):
        return f"{sample[:space]}{{{pair}}}{sample[space:]}" if space != -1 else sample
    rest = sample[brace + 1 :]
    return f"{sample[: brace + 1]}{pair}{'' if rest.startswith('}') else ','}{rest}"


def merge_pages(pages: Iterable[tuple[str, str]], label: str) -> str:
    """One exposition page from (label value, page text) pairs, in the order families first appear."""
    families: dict[str, _Family] = {}
    for value, text in pages:
        current = families.setdefault("", _Family())  # samples before any TYPE line (none from us)
        for line in text.splitlines():
            if line.startswith(("# HELP ", "# TYPE ")):
                parts = line.split(" ", 3)
                if len(parts) < 3:
                    continue
                current = families.setdefault(parts[2], _Family())
                if line.startswith("# HELP "):
                    current.help = current.help or line
                else:
                    current.type = current.type or line
            elif line and not line.startswith("#"):
                current.samples.append(with_label(line, label, value))
    out: list[str] = []
    for family in families.values():
        out.extend(line for line in (family.help, family.type) if line)
        out.extend(family.samples)
    return "\n".join(out) + "\n" if out else ""
