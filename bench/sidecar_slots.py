"""Fixed slots through `SlotProcessor.process`: CPU per slot, a profile, and digests of what it made.

The ingest bench (sidecar_ingest.py) closes slots by the wall clock as well as event time, so two
runs see different slots. This script closes them by event time alone (the windower's clock held
still), so every run and every version of the code processes the same slots: the like-for-like
figure for a change to the slot processing, and the identity check that goes with it (`--digest`:
sha256 of each slot's feature table, SLO verdicts, incidents and attribution records, canonical
JSON; equal digests = identical outputs).

    .venv/bin/python bench/sidecar_slots.py --requests /tmp/sc_requests.bin --model models/default
    .venv/bin/python bench/sidecar_slots.py ... --digest /tmp/after.json   # outputs, not timed
    .venv/bin/python bench/sidecar_slots.py ... --profile /tmp/after.prof  # cProfile of process()

Requests are built by sidecar_ingest.py (`--requests FILE` there writes them).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import math
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)

from bench.sidecar_ingest import LATENESS_S, WINDOW_S, read_requests  # noqa: E402
from otelprobe.attribution.model import load_model  # noqa: E402
from otelprobe.sidecar import pipeline  # noqa: E402
from otelprobe.sidecar.ingest import Ingest  # noqa: E402
from otelprobe.sidecar.windower import EventTimeWindower, Slot  # noqa: E402


def slots_of(path: Path, count: int) -> Iterator[Slot]:
    """The first `count` slots of the requests, closed by event time only."""
    ingest = Ingest()
    windower = EventTimeWindower(WINDOW_S, LATENESS_S, clock=lambda: 0.0)
    ingest.attach(windower)
    made = 0
    for body in read_requests(path):
        windower.add(ingest.add(ExportTraceServiceRequest.FromString(body)))
        for slot in windower.close_ready():
            yield slot
            made += 1
            if made >= count:
                return


def canonical(value: Any) -> Any:
    """JSON-ready, NaN spelled out (json.dumps would write NaN, which is fine, but be explicit)."""
    if isinstance(value, float):
        return repr(value) if not math.isfinite(value) else value
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(repr(canonical(v)) for v in value)
    return value


def sha(value: Any) -> str:
    text = json.dumps(canonical(value), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def table_digest(table: Any) -> str:
    """sha256 over the table's columns (sorted by name): floats bit for bit, NaN as one pattern."""
    if table is None:
        return "none"
    digest = hashlib.sha256()
    for name in sorted(table.columns):
        digest.update(name.encode())
        values = table[name].to_numpy()
        if values.dtype.kind == "f":
            values = np.where(np.isnan(values), np.nan, values).astype(np.float64)
            digest.update(values.tobytes())
        elif values.dtype.kind in "biu":
            digest.update(values.astype(np.int64).tobytes())
        else:
            digest.update(repr([repr(v) for v in values.tolist()]).encode())
    return digest.hexdigest()


def verdict_json(window: Any) -> Any:
    return [
        window.target,
        window.vantage,
        window.window_start_ns,
        window.probes,
        [
            [
                s.slo,
                s.events,
                s.bad,
                s.threshold_s,
                [[r.rule.label, r.long_burn, r.short_burn] for r in s.rules],
            ]
            for s in window.slos
        ],
        list(window.violating_slos),
    ]


HEAVY_SLOT: Final = 1000
"""Attributed windows from which a slot's cost is read as a cost per window (a light slot's few
windows are lost in the noise of the quiet floor)."""


def per_window_cost(rows: list[dict[str, Any]], quiet_s: float | None) -> dict[str, Any]:
    """CPU per attributed window of the heavy slots, (cpu - quiet median) / attributed, and the
    envelope: how many attributed windows a slot can have with its last record still out within
    1 s of CPU, the quiet floor included (floor + windows x cost <= 1 s)."""
    if quiet_s is None:
        return {}
    heavy = {
        str(r["slot"]): round(1000 * (r["cpu_s"] - quiet_s) / r["attributed"], 3)
        for r in rows
        if r["attributed"] >= HEAVY_SLOT
    }
    if not heavy:
        return {}
    per_window_ms = statistics.median(heavy.values())
    return {
        "ms_per_attributed_window": heavy,
        "ms_per_attributed_window_median": round(per_window_ms, 3),
        "envelope_windows": max(0, math.floor((1.0 - quiet_s) * 1000 / per_window_ms)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=REPO / "models/default")
    parser.add_argument("--warm-slots", type=int, default=6)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--digest", type=Path, help="write per-slot output digests here (JSON)")
    parser.add_argument("--profile", type=Path, help="cProfile the measured slots' process() into this file")
    args = parser.parse_args()

    model = load_model(args.model)
    processor = pipeline.SlotProcessor(lambda: model, None, WINDOW_S, max_series=10_000)
    tables: list[Any] = []
    if args.digest:
        original = pipeline.slot_table  # type: ignore[attr-defined]

        def keeping(*a: Any, **k: Any) -> Any:
            table, verdicts = original(*a, **k)
            tables.append(table)
            return table, verdicts

        pipeline.slot_table = keeping  # type: ignore[attr-defined]
    profiler = cProfile.Profile() if args.profile else None
    rows: list[dict[str, Any]] = []
    digests = []
    for index, slot in enumerate(slots_of(args.requests, args.warm_slots + args.slots)):
        slot_closed_cpu = time.process_time()
        emitted: list[float] = []

        def out(_record: object, at: float = slot_closed_cpu, into: list[float] = emitted) -> None:
            into.append(time.process_time() - at)

        measured = index >= args.warm_slots
        if profiler is not None and measured:
            profiler.enable()
        result = processor.process(slot, emit=out)
        if profiler is not None and measured:
            profiler.disable()
        cpu_s = time.process_time() - slot_closed_cpu
        row = {
            "slot": index,
            "records": len(slot.records),
            "attributed": len(result.attributions),
            "cpu_s": round(cpu_s, 3),
            "first_record_s": round(emitted[0], 3) if emitted else None,
            "last_record_s": round(emitted[-1], 3) if emitted else None,
        }
        if args.digest:
            table = tables.pop()
            digests.append(
                {
                    "slot": index,
                    "table": table_digest(table),
                    "verdicts": sha([verdict_json(v) for v in result.verdicts]),
                    "incidents": sha(
                        [
                            list(result.incidents.opened),
                            [asdict(i) for i in result.incidents.open + result.incidents.closed],
                        ]
                    ),
                    "attributions": sha([a.to_json() for a in result.attributions]),
                    "incident_rows": sha(
                        [
                            list(map(repr, (r.incident_id, r.target, r.window_start_ns, r.values)))
                            for r in result.incident_rows
                        ]
                    ),
                }
            )
        print(json.dumps(row), file=sys.stderr, flush=True)
        if measured:
            rows.append(row)
    quiet = [r["cpu_s"] for r in rows if not r["attributed"]]
    summary = {
        "slots": rows,
        "quiet_cpu_s_median": statistics.median(quiet) if quiet else None,
        "all_cpu_s_mean": round(statistics.fmean(r["cpu_s"] for r in rows), 3),
        **per_window_cost(rows, statistics.median(quiet) if quiet else None),
    }
    print(json.dumps(summary, indent=1))
    if profiler is not None and args.profile:
        profiler.dump_stats(str(args.profile))
    if args.digest:
        args.digest.write_text(json.dumps(digests, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
