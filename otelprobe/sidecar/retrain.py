"""One retraining job, run in its own low-priority process: lab data + confirmed windows ->
a candidate model, scored against the live one by the promotion gate.

The sidecar (learning.py) writes a job spec (JSON) and starts `python -m otelprobe.sidecar.retrain
SPEC` as a fresh process (spawned, never forked from the running service), at the lowest CPU
priority, with LightGBM on one thread: ingest keeps its core. The job

1. reads the lab recordings the model learns from and the lab evaluation campaigns as window
   tables (through the table cache: only the first job pays for windowing them);
2. turns the operators' verdicts into labeled windows (a confirmed cause and scope, or healthy for
   "not an incident"), holds out the newest incidents (a time split) and weights the others
   (feedback_weights.py: `feedback_weight` against a lab window, the same total per incident,
   each cause's confirmed windows capped to a share of its lab weight);
3. trains a candidate with `train_model` on the same schema, with the hyper-parameters, seed and
   rounds the live model's metadata records (the spec's `rounds` and `seed` only where it records
   none): on the same lab data, a candidate then differs from the live model by the feedback
   alone — with no feedback it is the live model, bit for bit — so the gate measures what the
   feedback does, not a reseeded retrain's noise (about 1 AC@1 point on shifted-503);
4. scores the candidate and the live model on the held-out slices (promotion.py) and decides;
5. saves the candidate into the registry directory under its reserved version (LightGBM text +
   JSON metadata, the metrics and the decision in it) and writes the result JSON.

The sidecar reads the result and promotes or refuses; the job itself never touches the live model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from otelprobe.attribution.labels import HEALTHY
from otelprobe.sidecar.feedback_weights import FeedbackWeighting

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from otelprobe.attribution.model import AttributionModel
    from otelprobe.sidecar.config import LearningConfig

FEEDBACK_INCIDENT_BASE: Final = 1_000_000_000
"""Confirmed incidents get label_incident ids from here (lab incidents are small numbers)."""
LOW_PRIORITY: Final = 19
CROSSFIT_FOLDS: Final = 5
"""The trained confirmed incidents are also scored out of fold (learning.crossfit_folds; 0: not):
each fold is one more cause fit, about half of the candidate's `train_model` (measured: five
folds 69-85 s beside a 27-38 s fit at the shipped model's scale, bench/README.md)."""


def job_spec(
    learning: LearningConfig,
    *,
    version: str,
    registry_dir: str | Path,
    live_stem: str | Path,
    lab_recordings: Sequence[str | Path],
    eval_recordings: Sequence[str | Path],
    table_cache: str | Path | None,
    verdicts: Sequence[Mapping[str, Any]],
    windows_file: str | Path,
) -> dict[str, Any]:
    """The spec `run_job` reads: the sidecar's learning settings and where the job's inputs are."""
    return {
        "version": version,
        "registry_dir": str(registry_dir),
        "live_stem": str(live_stem),
        "lab_recordings": [str(p) for p in lab_recordings],
        "eval_recordings": [str(p) for p in eval_recordings],
        "table_cache": None if table_cache is None else str(table_cache),
        "verdicts": list(verdicts),
        "windows_file": str(windows_file),
        "holdout_share": learning.holdout_share,
        "feedback_weight": learning.feedback_weight,
        "feedback_per_incident": learning.feedback_per_incident,
        "feedback_cap_share": learning.feedback_cap_share,
        "rounds": learning.rounds,
        "seed": learning.seed,
        "crossfit_folds": learning.crossfit_folds,
        "tolerance": learning.tolerance.model_dump(),
    }


def labeled_feedback(
    verdicts: Sequence[Mapping[str, Any]], windows: Sequence[Mapping[str, Any]]
) -> pd.DataFrame:
    """The verdicts' window rows as a labeled window table (label, label_scope, label_incident,
    feedback_incident, incident_order)."""
    import pandas as pd

    from otelprobe.sidecar.window_rows import frame_of

    order = sorted(
        verdicts, key=lambda v: (v.get("incident_start_unix_nano") or v["at_unix_nano"], v["at_unix_nano"])
    )
    rank = {str(v["incident"]): i for i, v in enumerate(order)}
    by_incident = {str(v["incident"]): v for v in verdicts}
    rows = []
    for window in windows:
        verdict = by_incident.get(str(window["incident"]))
        if verdict is None:
            continue
        only = verdict.get("series")
        if only and {"target": window["target"], "vantage": window["vantage"]} not in only:
            continue
        start, end = verdict.get("start_unix_nano"), verdict.get("end_unix_nano")
        if (start is not None and window["window_end_ns"] <= start) or (
            end is not None and window["window_start_ns"] >= end
        ):
            continue
        confirmed = not verdict.get("not_an_incident")
        rows.append(
            {
                **window,
                "label": verdict["cause"] if confirmed else HEALTHY,
                "label_scope": verdict["scope"] if confirmed else None,
                "label_causes": None,
                "label_incident": float(FEEDBACK_INCIDENT_BASE + rank[str(window["incident"])]),
                "feedback_incident": str(window["incident"]),
                "incident_order": rank[str(window["incident"])],
            }
        )
    if not rows:
        return pd.DataFrame()
    frame = frame_of(rows)
    return frame.rename(columns={"incident": "feedback_incident_id"})


def time_split(frame: pd.DataFrame, holdout_share: float) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(train, held out, incidents held out): the newest incidents by start are held out."""
    if frame.empty:
        return frame, frame, 0
    incidents = sorted(set(frame["incident_order"]))
    held = (
        0 if len(incidents) < 2 else min(len(incidents) - 1, math.floor(len(incidents) * holdout_share + 0.5))
    )
    cut = incidents[len(incidents) - held] if held else math.inf
    newest = frame["incident_order"] >= cut
    return frame[~newest], frame[newest], held


def incident_folds(frame: pd.DataFrame, folds: int) -> list[np.ndarray]:
    """Row masks of `frame` (trained confirmed windows), one per fold of its incidents: incidents
    in start order dealt round-robin, so each fold spans the whole time range. None below two
    incidents (a fold needs others to learn from)."""
    import numpy as np

    if frame.empty or folds < 2:
        return []
    incidents = sorted(set(frame["incident_order"]))
    if len(incidents) < 2:
        return []
    count = min(folds, len(incidents))
    order = frame["incident_order"].to_numpy()
    return [np.isin(order, incidents[k::count]) for k in range(count)]


def weighting_of(spec: Mapping[str, Any]) -> FeedbackWeighting:
    """The job's feedback weighting; a spec without the newer keys gets their defaults."""
    default = FeedbackWeighting()
    cap = spec.get("feedback_cap_share", default.cap_share)
    return FeedbackWeighting(
        weight=float(spec.get("feedback_weight", default.weight)),
        cap_share=None if cap is None else float(cap),
        per_incident=bool(spec.get("feedback_per_incident", default.per_incident)),
    )


def hyper_parameters(live: AttributionModel, spec: Mapping[str, Any]) -> tuple[dict[str, Any], int, int, int]:
    """(LightGBM params, rounds, seed, members) for the candidate: the live model's as recorded, the
    spec's where it records none (members: 1, a model from before seed averaging). One LightGBM
    thread per fit whatever the live model was trained with (ingest's core; the job is niced)."""
    params = {k: v for k, v in live.metadata.params.items() if k not in ("seed", "verbosity")}
    params["num_threads"] = 1
    rounds = int(live.metadata.training.get("rounds") or spec["rounds"])
    recorded_seed = live.metadata.params.get("seed")
    seed = int(spec["seed"] if recorded_seed is None else recorded_seed)
    members = int(live.metadata.training.get("members") or 1)
    return params, rounds, seed, members


def run_job(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Train, score and save one candidate; returns the result (see the module docstring)."""
    import numpy as np
    import pandas as pd

    from otelprobe.attribution.model import load_model
    from otelprobe.attribution.table_cache import read_table_cached
    from otelprobe.attribution.train import BIN_COLUMN, WEIGHT_COLUMN, fit_cause_booster, train_model
    from otelprobe.sidecar.feedback_weights import feedback_weights, lab_label_weights
    from otelprobe.sidecar.promotion import (
        Tolerance,
        decide,
        feedback_scores,
        lab_scores,
        out_of_fold_scores,
    )

    started = time.perf_counter()
    took: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        took[name] = round(now - since, 2)
        return now

    from otelprobe.attribution.otlp_files import recording_files

    cache = spec.get("table_cache")
    # A recording directory or its traces file (as `otelprobe train` takes them).
    lab = read_table_cached(recording_files(spec["lab_recordings"]), cache)
    evals = [read_table_cached([path], cache) for path in recording_files(spec["eval_recordings"])]
    eval_frame = pd.concat([t.frame for t in evals], ignore_index=True)
    mark = lap("read_tables_s", started)

    windows = json.loads(Path(spec["windows_file"]).read_text()) if spec.get("windows_file") else []
    verdicts = list(spec.get("verdicts", []))
    feedback = labeled_feedback(verdicts, windows)
    train_part, held_part, held = time_split(feedback, float(spec["holdout_share"]))
    rule = weighting_of(spec)
    # The lab rows alone set the feature bins, as they did the live model's (BIN_COLUMN).
    frames = [lab.frame.assign(**{WEIGHT_COLUMN: 1.0, BIN_COLUMN: True})]
    weights = np.zeros(0)
    if not train_part.empty:
        weights = feedback_weights(train_part, lab_label_weights(lab.frame), rule)
        frames.append(train_part.assign(**{WEIGHT_COLUMN: weights, BIN_COLUMN: False}))
    # One consolidated frame (a cached table's columns are separate blocks; pandas warns of it).
    frame = (pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]).copy()
    digest = hashlib.sha256(str(lab.reader).encode())
    digest.update(json.dumps([str(Path(p).name) for p in spec["lab_recordings"]]).encode())
    digest.update(json.dumps(sorted(verdicts, key=lambda v: str(v["incident"])), sort_keys=True).encode())
    digest.update(json.dumps(windows, sort_keys=True).encode())
    train_incidents = sorted(set(train_part["feedback_incident"])) if not train_part.empty else []
    held_incidents = sorted(set(held_part["feedback_incident"])) if not held_part.empty else []
    live = load_model(spec["live_stem"])
    params, rounds, seed, members = hyper_parameters(live, spec)
    info = {
        "name": spec["version"],
        "digest": digest.hexdigest(),
        "recordings": [str(p) for p in spec["lab_recordings"]],
        "feedback": {
            "verdicts": len(verdicts),
            "trained_incidents": train_incidents,
            "held_out_incidents": held_incidents,
            "trained_windows": len(train_part),
            "held_out_windows": len(held_part),
            "weight": rule.weight,
            "cap_share": rule.cap_share,
            "per_incident": rule.per_incident,
            "total_weight": round(float(weights.sum()), 2),
        },
        "hyper_parameters_from": "live" if "rounds" in live.metadata.training else "spec",
    }
    candidate = train_model(
        frame,
        window_s=lab.window_s,
        rounds=rounds,
        params=params,
        seed=seed,
        members=members,
        training_info=info,
    )
    mark = lap("train_s", mark)

    fold_models = []
    folds = incident_folds(train_part, int(spec.get("crossfit_folds", CROSSFIT_FOLDS)))
    if folds:
        for in_fold in folds:
            # The candidate's data without this fold's incidents (lab rows come first in `frame`).
            keep = np.concatenate([np.ones(len(frame) - len(train_part), dtype=bool), ~in_fold])
            booster = fit_cause_booster(frame[keep], rounds=rounds, params=params, seed=seed, members=members)
            fold_model = dataclasses.replace(candidate, cause_booster=booster)
            fold_models.append((fold_model, train_part[in_fold]))
        mark = lap("crossfit_s", mark)

    slices = {
        "lab": (
            lab_scores(live, eval_frame, lab.frame, lab.window_s),
            lab_scores(candidate, eval_frame, lab.frame, lab.window_s),
        )
    }
    if not held_part.empty:
        slices["feedback"] = (feedback_scores(live, held_part), feedback_scores(candidate, held_part))
    if fold_models:
        slices["unseen_incidents"] = out_of_fold_scores(live, fold_models)
    tolerance = Tolerance(**spec["tolerance"])
    passed, reason = decide(slices, tolerance)
    lap("gate_s", mark)
    metrics = {
        name: {"live": live_scores.to_json(), "candidate": cand_scores.to_json()}
        for name, (live_scores, cand_scores) in slices.items()
    }
    gate = {"passed": passed, "reason": reason, "tolerance": dict(spec["tolerance"])}
    candidate = dataclasses.replace(
        candidate, metadata=dataclasses.replace(candidate.metadata, metrics={"gate": gate, "slices": metrics})
    )
    candidate.save(Path(spec["registry_dir"]) / spec["version"])
    took["total_s"] = round(time.perf_counter() - started, 2)
    return {
        "version": spec["version"],
        "passed": passed,
        "reason": reason,
        "metrics": metrics,
        "training": {
            "lab_windows": len(lab.frame),
            "windows": int(candidate.metadata.training.get("windows", 0)),
            "feedback": info["feedback"],
            "eval_recordings": [str(p) for p in spec["eval_recordings"]],
            "held_out_incidents": held,
        },
        "took": took,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m otelprobe.sidecar.retrain SPEC RESULT`: run the job, write the result JSON."""
    args = list(sys.argv[1:] if argv is None else argv)
    spec_path, result_path = Path(args[0]), Path(args[1])
    try:
        os.nice(LOW_PRIORITY)  # ingest first: this process takes only an idle core's time
    except OSError:
        pass
    spec = json.loads(spec_path.read_text())
    try:
        result = run_job(spec)
    except Exception as exc:  # reported to the sidecar as a failed job, with the reason
        import traceback

        traceback.print_exc()
        result = {"version": spec.get("version"), "error": f"{type(exc).__name__}: {exc}"}
    tmp = result_path.with_name(result_path.name + ".tmp")
    tmp.write_text(json.dumps(result, allow_nan=False, default=str))
    os.replace(tmp, result_path)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
