"""How well SLO violations find labeled lab incidents: recall, delay from fault onset, false alarms.

Scores `slo.evaluate_windows` output against a lab recording's labels.jsonl (what was injected,
where and when), so the default objectives can be tuned on one recording and reported on
another: `python -m otelprobe.attribution.detection data/lab/eval-202`.

- An incident is detected when one of its affected series violates in a window that overlaps
  the fault [start, end); its delay is that window's end minus the fault's start (a window is
  only evaluated once closed).
- A series-window is healthy when no fault on that series overlaps it, and quiet when moreover
  none ended within `quiet_s` before it (so an alert still draining a fault's burn is not
  counted as false); the false-alarm rate is the share of those windows that violate.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class DetectionReport:
    incidents: int
    detected: int
    series_incidents: int  # (incident, affected series) pairs
    series_detected: int
    delay_median_s: float
    delay_p90_s: float
    healthy_windows: int
    false_alarm_windows: int
    quiet_windows: int
    quiet_false_alarm_windows: int
    recall_by_cause: dict[str, float]

    @property
    def recall(self) -> float:
        return self.detected / self.incidents if self.incidents else float("nan")

    @property
    def series_recall(self) -> float:
        return self.series_detected / self.series_incidents if self.series_incidents else float("nan")

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarm_windows / self.healthy_windows if self.healthy_windows else float("nan")

    @property
    def quiet_false_alarm_rate(self) -> float:
        return self.quiet_false_alarm_windows / self.quiet_windows if self.quiet_windows else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "recall": round(self.recall, 4),
            "series_recall": round(self.series_recall, 4),
            "false_alarm_rate": round(self.false_alarm_rate, 5),
            "quiet_false_alarm_rate": round(self.quiet_false_alarm_rate, 5),
        }


def score_detection(
    windows: pd.DataFrame, labels: Sequence[Mapping[str, Any]], quiet_s: float = 10.0
) -> DetectionReport:
    """Score series-windows (`evaluate_windows` output) against lab incident labels."""
    by_series = {key: frame for key, frame in windows.groupby(["target", "vantage"], sort=False)}
    faults: dict[tuple[str, str], list[tuple[int, int]]] = {}
    detected_incidents, delays_s = 0, []
    pairs = pairs_detected = 0
    by_cause: dict[str, list[bool]] = {}
    for label in labels:
        start_ns, end_ns = int(label["start_unix_nano"]), int(label["end_unix_nano"])
        first_alarm_ns: int | None = None
        for target, vantage in label["affected"]:
            faults.setdefault((target, vantage), []).append((start_ns, end_ns))
            frame = by_series.get((target, vantage))
            pairs += 1
            if frame is None:
                continue
            overlapping = (frame["window_start_ns"] < end_ns) & (frame["window_end_ns"] > start_ns)
            alarms = frame.loc[overlapping & frame["violating"], "window_end_ns"]
            if len(alarms):
                pairs_detected += 1
                alarm_ns = int(alarms.min())
                first_alarm_ns = alarm_ns if first_alarm_ns is None else min(first_alarm_ns, alarm_ns)
        found = first_alarm_ns is not None
        by_cause.setdefault(str(label["cause"]), []).append(found)
        if first_alarm_ns is not None:
            detected_incidents += 1
            delays_s.append(max(0, first_alarm_ns - start_ns) / _NS)
    healthy = quiet = healthy_alarms = quiet_alarms = 0
    quiet_ns = int(quiet_s * _NS)
    for key, frame in by_series.items():
        starts = frame["window_start_ns"].to_numpy(dtype=np.int64)
        ends = frame["window_end_ns"].to_numpy(dtype=np.int64)
        faulty = np.zeros(len(frame), dtype=bool)
        recent = np.zeros(len(frame), dtype=bool)
        for start_ns, end_ns in faults.get(key, ()):
            faulty |= (starts < end_ns) & (ends > start_ns)
            recent |= (starts < end_ns + quiet_ns) & (ends > start_ns)
        violating = frame["violating"].to_numpy(dtype=bool)
        healthy += int((~faulty).sum())
        healthy_alarms += int((~faulty & violating).sum())
        quiet += int((~recent).sum())
        quiet_alarms += int((~recent & violating).sum())
    return DetectionReport(
        incidents=len(labels),
        detected=detected_incidents,
        series_incidents=pairs,
        series_detected=pairs_detected,
        delay_median_s=float(np.median(delays_s)) if delays_s else float("nan"),
        delay_p90_s=float(np.quantile(delays_s, 0.9)) if delays_s else float("nan"),
        healthy_windows=healthy,
        false_alarm_windows=healthy_alarms,
        quiet_windows=quiet,
        quiet_false_alarm_windows=quiet_alarms,
        recall_by_cause={
            cause: round(sum(found) / len(found), 3) for cause, found in sorted(by_cause.items())
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Print the detection report of a lab recording directory as JSON."""
    from otelprobe.attribution.records import read_records
    from otelprobe.attribution.slo import evaluate_windows
    from otelprobe.attribution.slo_file import load_slo_file

    parser = argparse.ArgumentParser(prog="python -m otelprobe.attribution.detection", description=__doc__)
    parser.add_argument("recording", type=Path, help="a lab recording directory (traces + labels.jsonl)")
    parser.add_argument("--window", type=float, default=2.0, help="window length in seconds (lab: 2)")
    parser.add_argument("--slo", type=Path, help="an SLO file (default: the default objectives)")
    args = parser.parse_args(argv)
    traces = sorted(args.recording.glob("traces.jsonl*"))
    if not traces:
        print(f"{args.recording}: no traces.jsonl(.gz) found", file=sys.stderr)
        return 2
    records, _ = read_records(traces)
    slos = load_slo_file(args.slo) if args.slo else None
    windows = evaluate_windows(records, args.window, slos)
    labels_text = (args.recording / "labels.jsonl").read_text(encoding="utf-8")
    labels = [json.loads(line) for line in labels_text.splitlines() if line.strip()]
    report = score_detection(windows, labels)
    print(json.dumps(report.summary(), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
