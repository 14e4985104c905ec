"""The shipped model learns from operators (issue 16), at its own scale: models/default, retrained
by the sidecar's job (its child process, `python -m otelprobe.sidecar.retrain`) with the default learning
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

The shipped campaigns' window tables come from the session's cache that the notebooks read too
(conftest.py `shipped_table_cache`: built once, two at a time), and the two jobs run at once, each
in its own child process as the sidecar runs it (`python -m otelprobe.sidecar.retrain`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
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
from otelprobe.sidecar.retrain import job_spec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "default"
FEEDBACK = REPO / "data" / "lab" / "eval-202" / "traces.jsonl.gz"
CAUSE = "packet_loss"
DEFAULTS = LearningConfig()
"""The sidecar's default weighting, time split, folds and tolerance."""
JOB_TIMEOUT_S = 600.0


@pytest.fixture(scope="module")
def feedback_table(shipped_table_cache: Path) -> Any:
    return read_table_cached([FEEDBACK], shipped_table_cache).frame


@dataclass(frozen=True, slots=True)
class Job:
    """One retraining job: its spec and work directory, run as the sidecar runs it."""

    work: Path
    spec: dict[str, Any]

    @classmethod
    def of(
        cls,
        work: Path,
        table_cache: Path,
        verdicts: list[dict[str, Any]],
        windows: list[dict[str, Any]],
        **learning: Any,
    ) -> Job:
        """The sidecar's retraining job against the shipped model, its defaults changed by `learning`."""
        work.mkdir(parents=True)
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
        return cls(work, spec)

    def start(self) -> subprocess.Popen[str]:
        """`python -m otelprobe.sidecar.retrain SPEC RESULT`: the sidecar's niced child."""
        (self.work / "spec.json").write_text(json.dumps(self.spec))
        return subprocess.Popen(
            [sys.executable, "-m", "otelprobe.sidecar.retrain", "spec.json", "result.json"],
            cwd=self.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def packet_loss_confirmed(feedback_table: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The operator's verdicts: eval-202's packet-loss incidents confirmed as packet loss."""
    return confirmed_incidents(feedback_table, CAUSE, "eval-202", by="oncall")


def every_incident_as_the_next_cause(
    feedback_table: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deliberately wrong verdicts: every eval-202 incident confirmed as the next cause in the list."""
    verdicts, windows = [], []
    for cause in ROOT_CAUSES:
        confirmed, rows = confirmed_incidents(feedback_table, cause, "eval-202", by="intern")
        wrong = ROOT_CAUSES[(ROOT_CAUSES.index(cause) + 1) % len(ROOT_CAUSES)]
        verdicts += [{**verdict, "cause": wrong} for verdict in confirmed]
        windows += rows
    return verdicts, windows


@pytest.fixture(scope="module")
def results(
    feedback_table: Any, shipped_table_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """Both jobs' results. The two jobs are independent single-threaded fits, so they run at once
    (one per core), each in its own child process as the sidecar runs it."""
    root = tmp_path_factory.mktemp("shipped-learning")
    jobs = {
        "right": Job.of(root / "right", shipped_table_cache, *packet_loss_confirmed(feedback_table)),
        # No leave-one-out folds: the lab slice decides, and 59 incidents would make them slow.
        "wrong": Job.of(
            root / "wrong",
            shipped_table_cache,
            *every_incident_as_the_next_cause(feedback_table),
            crossfit_folds=0,
        ),
    }
    children = {name: job.start() for name, job in jobs.items()}
    out = {}
    for name, child in children.items():
        try:
            output, _ = child.communicate(timeout=JOB_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            output, _ = child.communicate()
        result_file = jobs[name].work / "result.json"
        assert result_file.exists(), f"the {name!r} job wrote no result (exit {child.returncode}):\n{output}"
        out[name] = {**json.loads(result_file.read_text()), "work": jobs[name].work, "output": output}
    return out


def result_of(results: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    result = results[name]
    assert "error" not in result, f"the job failed: {result['error']}\n{result['output']}"
    return result


def ranked_first(model_stem: Path, rows: Any) -> np.ndarray:
    """Whether each window's top cause is CAUSE."""
    top = np.array(ROOT_CAUSES)[score_windows(load_model(model_stem), rows).causes.argmax(1)]
    return np.asarray(top == CAUSE)


def score_of_cause(model_stem: Path, rows: Any) -> np.ndarray:
    """Each window's score for CAUSE."""
    return np.asarray(score_windows(load_model(model_stem), rows).causes[:, ROOT_CAUSES.index(CAUSE)])


def test_default_eval_campaigns_are_both_shipped_ones() -> None:
    assert {Path(p).name for p in DEFAULTS.eval_recordings} == {"eval-402", "shifted-503"}


def test_confirmed_packet_loss_is_learned_and_promoted(
    feedback_table: Any, results: dict[str, dict[str, Any]]
) -> None:
    verdicts, _ = packet_loss_confirmed(feedback_table)
    assert len(verdicts) >= 5
    result = result_of(results, "right")
    candidate = result["work"] / "v0002"
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
    # measured 0.61 -> 0.77 with the model of 2026-12-06, 0.645 -> 0.726 (45 of 62 windows, 5 more)
    # with session 18's, which already ranks more of them right, 0.613 -> 0.742 with session 19's
    assert before < 0.7 and after >= before + 0.06, (before, after)

    # The newest incidents, held out by time: the candidate scores the confirmed cause higher on
    # their windows and ranks it first on all but at most one of the windows the shipped model did
    # (6 windows; the shipped model already ranks it first on 4 or 5 of them, too few to demand
    # more; one window is what the gate lets a slice this small move: promotion.decide). Measured
    # with session 19's three-seed model: first on 5 -> 4 of 6 (one window's packet_loss score
    # 0.353 -> 0.340, now behind bandwidth_limit), mean score 0.590 -> 0.639.
    held = set(result["training"]["feedback"]["held_out_incidents"])
    assert held
    windows_of_cause = feedback_table[
        feedback_table["warm"] & feedback_table["symptomatic"] & (feedback_table["label"] == CAUSE)
    ]
    rows = windows_of_cause[windows_of_cause["label_incident"].map(lambda i: f"eval-202-{int(i)}" in held)]
    old, new = ranked_first(SHIPPED, rows), ranked_first(candidate, rows)
    assert (old & ~new).sum() <= 1 and new.sum() >= old.sum() - 1, (old.tolist(), new.tolist())
    before_scores, after_scores = score_of_cause(SHIPPED, rows), score_of_cause(candidate, rows)
    first, score = (
        f"{old.sum()} -> {new.sum()} of {len(rows)}",
        f"{before_scores.mean():.3f} -> {after_scores.mean():.3f}",
    )
    print(f"held out by time: first on {first}; mean score {score}")
    assert after_scores.mean() > before_scores.mean(), (before_scores.tolist(), after_scores.tolist())
    assert load_model(candidate).metadata.metrics["gate"]["passed"]


def test_every_incident_confirmed_as_the_wrong_cause_is_refused(
    feedback_table: Any, results: dict[str, dict[str, Any]]
) -> None:
    verdicts, _ = every_incident_as_the_next_cause(feedback_table)
    assert len(verdicts) >= 50
    result = result_of(results, "wrong")
    print(f"\n{result['reason']}", flush=True)
    assert not result["passed"], result["reason"]
    assert "lab AC@1" in result["reason"] and "worse by more than" in result["reason"]
    lab = result["metrics"]["lab"]
    assert lab["candidate"]["ac1"] < lab["live"]["ac1"] - 2 * DEFAULTS.tolerance.ac1  # measured 0.94 -> 0.83
