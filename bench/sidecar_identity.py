"""Digests of what attribution makes from a lab recording, offline and live: the identity check for
changes to the slot processing (features, SLO verdicts, incidents, attributions must not move).

- offline: `dataset.window_table` over the whole recording (features, labels, detection) and
  `attribute.attribute` on it, as `otelprobe attribute` runs them; plus `slo.evaluate_windows`.
- live: the same records through a clock-free `EventTimeWindower` (200-record batches) and
  `pipeline.SlotProcessor`, slot by slot: each slot's feature table, verdicts, incidents,
  attributions (with links and incident ids) and kept feedback rows.

Floats are compared bit for bit (sha256 of canonical JSON / of the columns' bytes): run it on two
versions of the code and compare the printed JSON. `PYTHONHASHSEED=0` keeps set order out of it.

    PYTHONHASHSEED=0 .venv/bin/python bench/sidecar_identity.py [--recording data/lab/eval-402] [--windows N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

from bench.sidecar_slots import sha, table_digest, verdict_json  # noqa: E402
from otelprobe.attribution.attribute import attribute  # noqa: E402
from otelprobe.attribution.dataset import window_table  # noqa: E402
from otelprobe.attribution.model import load_model  # noqa: E402
from otelprobe.attribution.records import ProbeRecord, read_records  # noqa: E402
from otelprobe.attribution.slo import evaluate_windows  # noqa: E402
from otelprobe.sidecar import pipeline  # noqa: E402
from otelprobe.sidecar.windower import EventTimeWindower  # noqa: E402

WINDOW_S = 2.0


def digests(recording: Path, model_stem: Path, windows: int | None) -> dict[str, Any]:
    model = load_model(model_stem)
    frame, _ = read_records([str(recording / "traces.jsonl.gz")])
    frame = frame.sort_values("start_ns", kind="stable").reset_index(drop=True)
    if windows is not None:
        first = int(frame["start_ns"].min()) // 10**9 // 2 * 2
        frame = frame[frame["start_ns"] < (first + windows * WINDOW_S) * 10**9].reset_index(drop=True)
    table, _ = window_table(frame, WINDOW_S)
    offline = {
        "windows": len(table),
        "table": table_digest(table),
        "detection": table_digest(evaluate_windows(frame, WINDOW_S)),
        "attributions": sha([a.to_json() for a in attribute(model, table)]),
    }

    kept: list[Any] = []
    original = pipeline.slot_table

    def keeping(*args: Any, **kwargs: Any) -> Any:
        made = original(*args, **kwargs)
        kept.append(made[0])
        return made

    pipeline.slot_table = keeping  # type: ignore[assignment]
    records = [ProbeRecord(**row) for row in frame.to_dict("records")]
    windower = EventTimeWindower(WINDOW_S, allowed_lateness_s=1.0, clock=lambda: 0.0)
    processor = pipeline.SlotProcessor(lambda: model, None, WINDOW_S)
    live = hashlib.sha256()
    slots = attributed = 0

    def fold(slot: Any) -> None:
        nonlocal slots, attributed
        result = processor.process(slot)
        table_now = kept.pop()
        incidents = result.incidents
        live.update(table_digest(table_now).encode())
        live.update(sha([verdict_json(v) for v in result.verdicts]).encode())
        live.update(
            sha([list(incidents.opened), [repr(i) for i in incidents.open + incidents.closed]]).encode()
        )
        live.update(sha([a.to_json() for a in result.attributions]).encode())
        live.update(sha([repr(r) for r in result.incident_rows]).encode())
        slots += 1
        attributed += len(result.attributions)

    for start in range(0, len(records), 200):
        windower.add(records[start : start + 200])
        for slot in windower.close_ready():
            fold(slot)
    for slot in windower.drain():
        fold(slot)
    pipeline.slot_table = original  # type: ignore[assignment]
    return {
        "offline": offline,
        "live": {"slots": slots, "attributed": attributed, "digest": live.hexdigest()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recording", type=Path, default=REPO / "data/lab/eval-402")
    parser.add_argument("--model", type=Path, default=REPO / "models/default")
    parser.add_argument("--windows", type=int, help="only the first N windows of the recording")
    args = parser.parse_args()
    print(json.dumps(digests(args.recording, args.model, args.windows), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
