"""The shipped model learns from operators (issue 16), at its own scale: models/default, retrained
by the sidecar's job (retrain.run_job, as its child process runs it) with the default learning
settings, gated on both shipped lab evaluation campaigns (eval-402 and shifted-503).

The cause the shipped model confuses: packet loss seen by probers without DNS retransmits
(data/lab/eval-202, recorded before the prober's stub resolver retried lost queries — a fleet
still running that prober version is a real deployment). There a lost DNS query is a failed
lookup, not a ~0.5 s retransmit, and the shipped model ranks packet_loss first on only about 60 %
of those windows (models/evaluation/eval-202: recall 0.603). An operator confirms the incidents
as packet loss:

- the candidate ranks packet_loss first on confirmed incidents it did not train on (each scored
  by a model fit without it, and the newest incidents held out by time) where the shipped model
  did not, keeps AC@1 and false attributions on the lab evaluation campaigns within the default
  tolerance, and is promoted;
- every incident of that campaign confirmed as another cause (deliberately wrong: each as the
  next cause in the list) gives a candidate the gate refuses. (Six wrong confirmations of one
  cause are not enough: the per-cause cap on confirmed weight bounds what they can do, and the
  candidate stays within the default tolerance of 1 point on the lab campaigns.)

Reading the shipped campaigns into window tables takes 1-2 minutes the first time; the tables
go to the session's cache that the notebooks use too (conftest.py `xdg_cache_home`), so the suite
builds them once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from otelprobe.attribution.attribute import score_windows
from otelprobe.attribution.model import load_model
from otelprobe.attribution.table_cache import read_table_cached
from otelprobe.causes import ROOT_CAUSES
from otelprobe.sidecar.config import LearningConfig
from otelprobe.sidecar.lab_feedback import confirmed_incidents
from otelprobe.sidecar.retrain import job_spec, run_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "default"
FEEDBACK = REPO / "data" / "lab" / "eval-202" / "traces.jsonl.gz"
CAUSE = "packet_loss"
DEFAULTS = LearningConfig()
"""The sidecar's default weighting, time split, folds and tolerance."""


@pytest.fixture(scope="module")
def table_cache(xdg_cache_home: Path) -> Path:
    """Where the notebooks' kernels find it too (table_cache.default_cache_dir under XDG_CACHE_HOME)."""
    return xdg_cache_home / "otelprobe" / "window-tables"


@pytest.fixture(scope="module")
def feedback_table(table_cache: Path) -> Any:
    return read_table_cached([FEEDBACK], table_cache).frame


def job(
    work: Path,
    table_cache: Path,
    verdicts: list[dict[str, Any]],
    windows: list[dict[str, Any]],
    **learning: Any,
) -> dict[str, Any]:
    """The sidecar's retraining job against the shipped model, its defaults changed by `learning`."""
    shipped = load_model(SHIPPED)
    (work / "windows.json").write_text(json.dumps(windows))
    spec = job_spec(
        DEFAULTS.model_copy(update=learning),
        version="v0002",
        registry_dir=work,
        live_stem=SHIPPED,
        lab_recordings=[REPO / p for p in shipped.metadata.training["recordings"]],
        eval_recordings=[REPO / p for p in DEFAULTS.eval_recordings],
        table_cache=table_cache,
        verdicts=verdicts,
        windows_file=work / "windows.json",
    )
    return run_job(spec)


def ranked_first(model_stem: Path, rows: Any) -> np.ndarray:
    """Whether each window's top cause is CAUSE."""
    top = np.array(ROOT_CAUSES)[score_windows(load_model(model_stem), rows).causes.argmax(1)]
    return np.asarray(top == CAUSE)


def test_default_eval_campaigns_are_both_shipped_ones() -> None:
    assert {Path(p).name for p in DEFAULTS.eval_recordings} == {"eval-402", "shifted-503"}


def test_confirmed_packet_loss_is_learned_and_promoted(
    feedback_table: Any, table_cache: Path, tmp_path: Path
) -> None:
    verdicts, windows = confirmed_incidents(feedback_table, CAUSE, "eval-202", by="oncall")
    assert len(verdicts) >= 5
    result = job(tmp_path, table_cache, verdicts, windows)
    print(f"\n{result['reason']}", flush=True)  # the gate's comparison, for `pytest -s`
    assert result["passed"], result["reason"]
    lab, tolerance = result["metrics"]["lab"], DEFAULTS.tolerance
    assert {Path(p).name for p in result["training"]["eval_recordings"]} == {"eval-402", "shifted-503"}
    assert lab["candidate"]["ac1"] >= lab["live"]["ac1"] - tolerance.ac1
    assert (
        lab["candidate"]["false_attributions"]
        <= lab["live"]["false_attributions"] + tolerance.false_attributions
    )
    # Confirmed incidents the candidate did not learn from (leave one incident out): the shipped
    # model ranks packet_loss first on ~60 % of their windows, the candidate on clearly more.
    unseen = result["metrics"]["unseen_incidents"]
    assert unseen["candidate"]["cases"] == unseen["live"]["cases"] > 40
    before, after = unseen["live"]["recall"][CAUSE], unseen["candidate"]["recall"][CAUSE]
    assert before < 0.7 and after >= before + 0.1, (before, after)  # measured 0.61 -> 0.77

    # The newest incidents, held out by time: windows the shipped model got wrong are now right.
    held = set(result["training"]["feedback"]["held_out_incidents"])
    assert held
    windows_of_cause = feedback_table[
        feedback_table["warm"] & feedback_table["symptomatic"] & (feedback_table["label"] == CAUSE)
    ]
    rows = windows_of_cause[windows_of_cause["label_incident"].map(lambda i: f"eval-202-{int(i)}" in held)]
    old, new = ranked_first(SHIPPED, rows), ranked_first(tmp_path / "v0002", rows)
    assert (new & ~old).sum() > (old & ~new).sum(), (old.tolist(), new.tolist())
    assert load_model(tmp_path / "v0002").metadata.metrics["gate"]["passed"]


def test_every_incident_confirmed_as_the_wrong_cause_is_refused(
    feedback_table: Any, table_cache: Path, tmp_path: Path
) -> None:
    verdicts, windows = [], []
    for cause in ROOT_CAUSES:
        confirmed, rows = confirmed_incidents(feedback_table, cause, "eval-202", by="intern")
        wrong = ROOT_CAUSES[(ROOT_CAUSES.index(cause) + 1) % len(ROOT_CAUSES)]
        verdicts += [{**verdict, "cause": wrong} for verdict in confirmed]
        windows += rows
    assert len(verdicts) >= 50
    # No leave-one-out folds: the lab slice decides, and 59 incidents would make them slow.
    result = job(tmp_path, table_cache, verdicts, windows, crossfit_folds=0)
    print(f"\n{result['reason']}", flush=True)
    assert not result["passed"], result["reason"]
    assert "lab AC@1" in result["reason"] and "worse by more than" in result["reason"]
    lab = result["metrics"]["lab"]
    assert lab["candidate"]["ac1"] < lab["live"]["ac1"] - 2 * DEFAULTS.tolerance.ac1  # measured 0.94 -> 0.83
