"""What one confirmed incident teaches the sidecar about the next one, for the cause model's inputs
as this checkout has them: the offline twin of tests/sidecar/test_sidecar_learn.py's scenario.

The live model is train-101's at 30 rounds (as in that test). An operator confirms eval-402's
incident `--trained` (a vantage-wide bandwidth limit the live model calls packet loss) with its
labeled cause and scope; the candidate is trained as the sidecar's retraining job trains it
(`sidecar.retrain`: the same labeled-feedback rows, `feedback_weights` at weight 10, uncapped,
the lab rows alone setting the bins), and both models rank the causes of the teaching windows of
incident `--held-out` (the next bandwidth limit, on another vantage), which neither learned from.
Printed per seed: the share of those windows each model ranks the confirmed cause first on
(`promotion.feedback_scores`, as the promotion gate scores its feedback slice), and the median.

The windows are the lab's labeled ones (`sidecar.lab_feedback.confirmed_incidents`), not the
incident windows a replayed sidecar keeps, so the figures are close to the test's, not equal.
`--drop` blanks feature columns (as `experiments.without_features` does) to see which inputs a
lesson leans on; to compare two schemas, run it in both checkouts.

    .venv/bin/python bench/feedback_transfer.py [--seeds 1,2,3,4,5,7] [--drop COLUMN ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

ROUNDS = 30
FEEDBACK_WEIGHT = 10.0
CAMPAIGN = "eval-402"


def tables() -> tuple[Any, Any]:
    from otelprobe.attribution.table_cache import default_cache_dir, read_table_cached

    cache = default_cache_dir()
    lab = read_table_cached([REPO / "data/lab/train-101/traces.jsonl.gz"], cache)
    production = read_table_cached([REPO / f"data/lab/{CAMPAIGN}/traces.jsonl.gz"], cache)
    return lab, production


def feedback(production: Any, cause: str, trained: int, held_out: int) -> tuple[Any, Any]:
    """(trained rows, held-out rows): the two incidents' labeled windows as confirmed feedback."""
    from otelprobe.sidecar.lab_feedback import confirmed_incidents, incident_name
    from otelprobe.sidecar.retrain import labeled_feedback

    verdicts, windows = confirmed_incidents(production, cause, CAMPAIGN, by="bench")
    names = {incident_name(CAMPAIGN, trained), incident_name(CAMPAIGN, held_out)}
    missing = names - {v["incident"] for v in verdicts}
    if missing:
        raise SystemExit(f"no warm {cause} incident {', '.join(sorted(missing))} in {CAMPAIGN}")
    frame = labeled_feedback(
        [v for v in verdicts if v["incident"] in names], [w for w in windows if w["incident"] in names]
    )
    is_trained = frame["feedback_incident"] == incident_name(CAMPAIGN, trained)
    return frame[is_trained], frame[~is_trained]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3,4,5,7", help="comma-separated seeds (default: six)")
    parser.add_argument("--cause", default="bandwidth_limit")
    parser.add_argument("--trained", type=int, default=6, help="eval-402 incident confirmed and learned")
    parser.add_argument("--held-out", type=int, default=40, help="eval-402 incident scored, not learned")
    parser.add_argument("--drop", nargs="*", default=[], help="feature columns to blank")
    args = parser.parse_args(argv)

    import pandas as pd

    from otelprobe.attribution.train import BIN_COLUMN, WEIGHT_COLUMN, train_model
    from otelprobe.lab.dataset.experiments import without_features
    from otelprobe.sidecar.feedback_weights import FeedbackWeighting, feedback_weights, lab_label_weights
    from otelprobe.sidecar.promotion import feedback_scores

    lab, production = tables()
    trained, held = feedback(production.frame, args.cause, args.trained, args.held_out)
    weights = feedback_weights(
        trained, lab_label_weights(lab.frame), FeedbackWeighting(weight=FEEDBACK_WEIGHT, cap_share=None)
    )
    lab_rows, trained, held = (
        without_features(frame, args.drop) if args.drop else frame for frame in (lab.frame, trained, held)
    )
    lab_rows = lab_rows.assign(**{WEIGHT_COLUMN: 1.0, BIN_COLUMN: True})
    with_feedback = pd.concat(
        [lab_rows, trained.assign(**{WEIGHT_COLUMN: weights, BIN_COLUMN: False})], ignore_index=True
    ).copy()
    print(
        f"{CAMPAIGN} incident {args.trained} confirmed ({len(trained)} windows), "
        f"incident {args.held_out} held out; {args.cause} ranked first on its teaching windows:"
    )
    live_shares, candidate_shares = [], []
    for seed in (int(s) for s in args.seeds.split(",")):
        live = train_model(lab_rows, window_s=lab.window_s, rounds=ROUNDS, seed=seed)
        candidate = train_model(with_feedback, window_s=lab.window_s, rounds=ROUNDS, seed=seed)
        before, after = feedback_scores(live, held), feedback_scores(candidate, held)
        live_share = before.per_class_recall.get(args.cause, 0.0)
        candidate_share = after.per_class_recall.get(args.cause, 0.0)
        live_shares.append(live_share)
        candidate_shares.append(candidate_share)
        print(
            f"  seed {seed}: live {live_share:.3f}, candidate {candidate_share:.3f} ({after.cases} windows)"
        )
    print(
        f"median over {len(live_shares)} seeds: live {statistics.median(live_shares):.3f}, "
        f"candidate {statistics.median(candidate_shares):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
