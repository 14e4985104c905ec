"""Renders attribution scores for people: markdown tables and a confusion-matrix PNG.

The presentation half of `otelprobe evaluate` (issue 8): `metrics.py` computes, this module only
formats what it computed, so a notebook and the CLI show the same numbers the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from otelprobe.attribution.metrics import AttributionScores

_MISSING: Final = "—"
_PNG_DPI: Final = 150


def confusion_markdown(confusion: npt.ArrayLike, classes: Sequence[str]) -> str:
    """A markdown table of a confusion matrix: rows the true cause, columns the top-1 prediction.

    Zero cells are blank and the diagonal is bold, so the mistakes stand out. Each row ends with
    its case count and recall; a last row gives each column's precision.

    Args:
        confusion: len(classes) x len(classes) counts.
        classes: the cause of each row and column.

    Returns:
        The table, one line per row, ending in a newline.
    """
    counts = _square_counts(confusion, len(classes))
    row_totals = counts.sum(axis=1)
    column_totals = counts.sum(axis=0)
    lines = [
        "| true \\ predicted | " + " | ".join(classes) + " | cases | recall |",
        "|---|" + "---:|" * (len(classes) + 2),
    ]
    for row, cause in enumerate(classes):
        cells = [
            "" if count == 0 else f"**{count}**" if column == row else str(count)
            for column, count in enumerate(counts[row])
        ]
        recall = _ratio(counts[row, row], row_totals[row])
        lines.append(f"| {cause} | " + " | ".join(cells) + f" | {row_totals[row]} | {recall} |")
    precisions = [_ratio(counts[column, column], column_totals[column]) for column in range(len(classes))]
    lines.append("| precision | " + " | ".join(precisions) + f" | {counts.sum()} | |")
    return "\n".join(lines) + "\n"


def save_confusion_png(
    confusion: npt.ArrayLike, classes: Sequence[str], path: Path | str, *, title: str | None = None
) -> None:
    """Draw a confusion matrix as a PNG: cells coloured by row share, annotated with counts.

    Colour is each row normalised to 1 (the fraction of a true cause's cases given each
    prediction), so a rare class's mistakes show as clearly as a common one's.

    Args:
        confusion: len(classes) x len(classes) counts, rows true, columns predicted.
        classes: the cause of each row and column.
        path: where to write the PNG (its directory must exist).
        title: a title above the matrix.
    """
    counts = _square_counts(confusion, len(classes))
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)
    side_in = 2.5 + 0.55 * len(classes)
    # A bare Figure on the Agg canvas: no pyplot global state, no display needed.
    figure = Figure(figsize=(side_in + 1.5, side_in), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of the true cause's cases", shrink=0.8)
    ticks = np.arange(len(classes))
    axes.set_xticks(ticks, labels=list(classes), rotation=45, ha="right", rotation_mode="anchor")
    row_labels = [f"{cause} ({total})" for cause, total in zip(classes, row_totals[:, 0], strict=True)]
    axes.set_yticks(ticks, labels=row_labels)
    axes.set_xlabel("predicted (top-1)")
    axes.set_ylabel("true cause (cases)")
    for (row, column), count in np.ndenumerate(counts):
        if count:
            dark = shares[row, column] > 0.5
            axes.text(column, row, str(count), ha="center", va="center", color="white" if dark else "black")
    if title:
        axes.set_title(title)
    figure.savefig(path, format="png", dpi=_PNG_DPI)


def scores_markdown(named_scores: Mapping[str, AttributionScores]) -> str:
    """One markdown table comparing attributors (the model and its baselines) on the same cases.

    The best value of each column is bold (lowest for ECE, highest otherwise); NaN shows as "—".

    Args:
        named_scores: attributor name -> its scores, in the order the rows should appear.

    Returns:
        The table, ending in a newline.
    """
    columns: list[tuple[str, Callable[[AttributionScores], float], bool]] = [
        ("AC@1", lambda s: s.ac1, True),
        ("AC@3", lambda s: s.ac3, True),
        ("Avg@5", lambda s: s.avg5, True),
        ("scope AC@1", lambda s: s.scope_ac1, True),
        ("macro-F1", lambda s: s.macro_f1, True),
        ("both@3", lambda s: s.compound_both_at3, True),
        ("ECE", lambda s: s.ece, False),
    ]
    best = {header: _best(named_scores.values(), value, higher) for header, value, higher in columns}
    lines = [
        "| attributor | cases | "
        + " | ".join(header for header, _, _ in columns)
        + " | worst class recall |",
        "|---|---:|" + "---:|" * len(columns) + "---|",
    ]
    for name, scores in named_scores.items():
        cells = []
        for header, value, _ in columns:
            text = _number(value(scores))
            is_best = text == best[header] and text != _MISSING and len(named_scores) > 1
            cells.append(f"**{text}**" if is_best else text)
        worst = scores.worst_class()
        worst_text = _MISSING if worst is None else f"{_number(worst.recall)} ({worst.cause})"
        lines.append(f"| {name} | {scores.n_cases} | " + " | ".join(cells) + f" | {worst_text} |")
    return "\n".join(lines) + "\n"


def _square_counts(confusion: npt.ArrayLike, n_classes: int) -> npt.NDArray[np.int64]:
    counts = np.asarray(confusion)
    if counts.shape != (n_classes, n_classes):
        raise ValueError(
            f"confusion must be {n_classes} x {n_classes} (one row per class), got {counts.shape}"
        )
    if not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise ValueError("confusion must hold non-negative integer counts")
    return counts.astype(np.int64)


def _ratio(numerator: int, denominator: int) -> str:
    return _number(numerator / denominator) if denominator else _MISSING


def _number(value: float) -> str:
    return _MISSING if math.isnan(value) else f"{value:.3f}"


def _best(
    all_scores: Iterable[AttributionScores],
    value: Callable[[AttributionScores], float],
    higher_is_better: bool,
) -> str:
    """The best value as displayed, so rows that print the same are all bold."""
    values = [value(scores) for scores in all_scores if not math.isnan(value(scores))]
    if not values:
        return _MISSING
    return _number(max(values) if higher_is_better else min(values))
