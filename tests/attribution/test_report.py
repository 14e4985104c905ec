"""otelprobe.attribution.report: the markdown tables read right and the PNG is a real image."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from otelprobe.attribution.metrics import score_cases
from otelprobe.attribution.report import confusion_markdown, save_confusion_png, scores_markdown
from otelprobe.causes import ROOT_CAUSES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_confusion_markdown_of_a_tiny_case() -> None:
    confusion = np.array([[3, 1, 0], [0, 0, 2], [0, 0, 0]])
    table = confusion_markdown(confusion, ["dns_latency", "backend_slow", "tls_slow"])
    assert table == (
        "| true \\ predicted | dns_latency | backend_slow | tls_slow | cases | recall |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        "| dns_latency | **3** | 1 |  | 4 | 0.750 |\n"
        "| backend_slow |  |  | 2 | 2 | 0.000 |\n"
        "| tls_slow |  |  |  | 0 | — |\n"
        "| precision | 1.000 | 0.000 | 0.000 | 6 | |\n"
    )


def test_confusion_markdown_refuses_a_matrix_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="2 x 2"):
        confusion_markdown(np.zeros((3, 3), dtype=int), ["a", "b"])
    with pytest.raises(ValueError, match="integer counts"):
        confusion_markdown(np.full((2, 2), 0.5), ["a", "b"])


def test_confusion_png_is_a_readable_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    confusion = rng.integers(0, 40, size=(len(ROOT_CAUSES), len(ROOT_CAUSES)))
    path = tmp_path / "confusion.png"
    save_confusion_png(confusion, ROOT_CAUSES, path, title="model")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert 20_000 < len(data) < 2_000_000
    image = matplotlib.image.imread(path)
    height, width, channels = image.shape
    # 11 classes: a (2.5 + 0.55 * 11 + 1.5) x (2.5 + 0.55 * 11) inch figure at 150 dpi.
    assert width == pytest.approx(10.05 * 150, abs=1) and height == pytest.approx(8.55 * 150, abs=1)
    assert channels == 4
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_confusion_png_survives_empty_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    save_confusion_png(np.zeros((2, 2), dtype=int), ["dns_latency", "tls_slow"], path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_scores_markdown_compares_attributors_and_bolds_the_best() -> None:
    scores = np.full((2, len(ROOT_CAUSES)), 0.01)
    scores[0, ROOT_CAUSES.index("backend_slow")] = 0.9
    scores[1, ROOT_CAUSES.index("dns_latency")] = 0.9
    truth = ["backend_slow", "dns_latency"]
    model = score_cases(scores, truth)
    flat = score_cases(np.full((2, len(ROOT_CAUSES)), 1 / len(ROOT_CAUSES)), truth)
    table = scores_markdown({"model": model, "uniform": flat}).splitlines()
    assert table[0] == (
        "| attributor | cases | AC@1 | AC@3 | Avg@5 | scope AC@1 | macro-F1 | both@3 | ECE"
        " | worst class recall |"
    )
    assert table[2] == (
        "| model | 2 | **1.000** | **1.000** | **1.000** | — | **1.000** | — | **0.100**"
        " | 1.000 (dns_latency) |"
    )
    # The flat answer ranks every true cause last; its top-1 is dns_latency for both cases.
    assert table[3] == (
        "| uniform | 2 | 0.000 | 0.000 | 0.000 | — | 0.333 | — | 0.409 | 0.000 (backend_slow) |"
    )
