"""End to end, as a user would check it: a fresh loopback lab run (real servers, real probers, one
injected server fault) replayed by `otelprobe attribute` with the model trained on the shipped
training recording ranks the injected cause first on the faulty target, and not on healthy ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from otelprobe.cli import main
from otelprobe.lab.dataset.recording import read_labels
from otelprobe.lab.dataset.runner import run_scenario
from otelprobe.lab.scenario import load_scenario_text

# The first test to ask for the model may train it (conftest.py) on a shared machine.
pytestmark = pytest.mark.timeout(300)

# Two vantages probing three targets every 500 ms; after a 16 s healthy lead-in (baselines and the
# learned latency threshold warm up: 20 probes per series), web's backend answers 300 ms late for
# 7 s, from every vantage. About 25 s in all.
SCENARIO = """\
name: e2e-backend-slow
seed: 3
vantages: [{name: here}, {name: there}]
targets:
  - {name: web, kind: http, body_size: 4KiB}
  - {name: api, kind: https, body_size: 2KiB}
  - {name: shop, kind: http, body_size: 8KiB}
probe: {interval: 500ms, timeout: 500ms}
timeline:
  - fault: {kind: ttfb_delay, delay: 300ms, jitter: 5ms}
    target: web
    scope: target
    start: 16s
    duration: 7s
tail: 2s
"""


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lab-run")
    result = run_scenario(load_scenario_text(SCENARIO), out, mode="loopback", compress=True)
    assert result.incidents == 1 and result.traces > 250
    return out


@pytest.mark.slow
def test_a_lab_run_with_a_slow_backend_is_attributed_to_backend_slow(
    lab_run: Path, model_stem: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (label,) = read_labels(lab_run / "labels.jsonl")
    assert label["cause"] == "backend_slow"
    faulty = {tuple(pair) for pair in label["affected"]}
    assert faulty == {("web", "here"), ("web", "there")}
    start_ns, end_ns = int(label["start_unix_nano"]), int(label["end_unix_nano"])

    out = tmp_path / "attributions.jsonl"
    assert main(["attribute", "--model", str(model_stem), "--input", str(lab_run), "--out", str(out)]) == 0
    summary = capsys.readouterr().err
    assert "bad line" not in summary and "of 1 s" in summary  # two 500 ms probe intervals
    records: list[dict[str, Any]] = [json.loads(line) for line in out.read_text().splitlines()]

    def during_fault(record: dict[str, Any]) -> bool:
        return bool(start_ns <= record["window_start_unix_nano"] < end_ns)

    on_faulty = [r for r in records if (r["target"], r["vantage"]) in faulty and during_fault(r)]
    # The fault lasts 7 windows per series; detection takes a window or two.
    assert len(on_faulty) >= 6, summary
    top = [r["causes"][0] for r in on_faulty]
    backend = [c for c in top if c["cause"] == "backend_slow"]
    assert len(backend) >= 0.75 * len(top), ([c["cause"] for c in top], summary)
    scopes = [c["scope"] for c in backend]
    assert scopes.count("target") > len(scopes) / 2, scopes  # both vantages see it
    assert any("TTFB" in e["text"] and "ms" in e["text"] for c in backend for e in c["evidence"])
    # Healthy series: no window blamed on a slow backend (one stray from a noisy neighbour at most).
    on_healthy = [r for r in records if (r["target"], r["vantage"]) not in faulty]
    blamed = [
        (r["target"], r["vantage"], r["window_start"])
        for r in on_healthy
        if r["causes"][0]["cause"] == "backend_slow"
    ]
    assert len(blamed) <= 1, (blamed, summary)
