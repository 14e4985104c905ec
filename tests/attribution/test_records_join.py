"""JoinableRecord.join (phase spans that arrive after their root, sidecar/ingest.py) gives the
record build_record makes from the root and all the phases: checked on every probe of a lab
recording split in several ways, and on traces with what the recording lacks (racing connects,
redirect hops, several failures, equal start times, attributes only on the phases)."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from otelprobe.attribution.otlp_decode import SpanView
from otelprobe.attribution.otlp_files import iter_span_batches
from otelprobe.attribution.records import RECORD_KEYS, JoinableRecord, ProbeRecord, ReaderStats, build_record

RECORDING = Path(__file__).resolve().parents[2] / "data/lab/eval-202/traces.jsonl.gz"
MS = 1_000_000

Split = Callable[[list[SpanView]], list[list[SpanView]]]
SPLITS: dict[str, Split] = {
    "every other one late": lambda c: [c[0::2], c[1::2]],
    "second half late": lambda c: [c[: len(c) // 2], c[len(c) // 2 :]],
    "all late": lambda c: [[], c],
    "first late": lambda c: [c[1:], c[:1]],
    "two late requests": lambda c: [c[0::3], c[1::3], c[2::3]],
}


def joined(root: SpanView, parts: Sequence[list[SpanView]]) -> ProbeRecord:
    out: list[JoinableRecord] = []
    record = build_record(root, list(parts[0]), ReaderStats(), joinable=out)
    for part in parts[1:]:
        record = out[0].join(part, ReaderStats()) if part else record
    return record


def whole(root: SpanView, parts: Sequence[list[SpanView]]) -> ProbeRecord:
    """The record of all the parts' spans in the order they came (it breaks ties of start time)."""
    return build_record(root, [span for part in parts for span in part], ReaderStats())


def same(got: ProbeRecord, want: ProbeRecord) -> bool:
    """Equal, but for `other_s` summed in another order (equal within rounding)."""
    if math.isnan(got.other_s) or math.isnan(want.other_s):
        other_same = math.isnan(got.other_s) and math.isnan(want.other_s)
    else:
        other_same = math.isclose(got.other_s, want.other_s, rel_tol=1e-12)
    nan_other = {"other_s": math.nan}
    return other_same and repr(dataclasses.replace(got, **nan_other)) == repr(
        dataclasses.replace(want, **nan_other)
    )


def probes_of_recording() -> list[tuple[SpanView, list[SpanView]]]:
    traces: defaultdict[str, list[SpanView]] = defaultdict(list)
    for views in iter_span_batches(RECORDING, ReaderStats(), keys=RECORD_KEYS):
        for view in views:
            traces[view.trace_id].append(view)
    probes = []
    for spans in traces.values():
        roots = [span for span in spans if not span.parent_span_id]
        if len(roots) == 1 and roots[0].name.startswith("probe "):
            probes.append((roots[0], [span for span in spans if span.parent_span_id]))
    return probes


@pytest.mark.parametrize("split", SPLITS)
def test_joining_late_phases_gives_the_record_of_the_whole_trace_on_a_lab_recording(split: str) -> None:
    probes = probes_of_recording()
    assert len(probes) > 5_000 and sum(len(children) > 2 for _, children in probes) > 2_000
    for root, children in probes:
        parts = SPLITS[split](list(children))
        assert same(joined(root, parts), whole(root, parts)), (split, root.trace_id)


def span(
    name: str, start_ms: int, end_ms: int, n: int, *, error: bool = False, **attributes: object
) -> SpanView:
    return SpanView(
        "ab" * 16, f"{n:016x}", "f" * 16, name, start_ms * MS, end_ms * MS, error, "", attributes, {}
    )


ROOT = SpanView(
    "ab" * 16,
    "f" * 16,
    "",
    "probe http",
    0,
    100 * MS,
    True,
    "",
    {"probe.kind": "http", "probe.target": "api", "probe.success": False, "error.type": "timeout"},
    {"otelprobe.vantage": "v1"},
)
EDGE_CASES: dict[str, list[SpanView]] = {
    "racing connects, one abandoned": [
        span("dns.lookup", 0, 5, 1, **{"probe.dns.attempts": 2, "probe.dns.answered_attempt": 2}),
        span("tcp.connect", 5, 9, 2, **{"probe.connect.abandoned": True, "network.peer.address": "::1"}),
        span("tcp.connect", 6, 12, 3, **{"network.peer.address": "127.0.0.1"}),
        span("tcp.connect", 6, 30, 4, error=True, **{"probe.connect.abandoned": True}),
        span("tls.handshake", 12, 20, 5, **{"tls.protocol.version": "1.3"}),
        span("http.ttfb", 20, 60, 6),
    ],
    "redirect hops and two failures": [
        span("dns.lookup", 0, 3, 1, **{"probe.http.hop": 1}),
        span("tcp.connect", 3, 8, 2, **{"probe.http.hop": 1}),
        span("http.ttfb", 8, 20, 3, error=True, **{"probe.http.hop": 1}),
        span("dns.lookup", 20, 22, 4),
        span("tcp.connect", 22, 25, 5),
        span("http.ttfb", 25, 90, 6, error=True),
    ],
    "equal starts and repeated phases": [
        span("dns.lookup", 0, 4, 1),
        span("dns.lookup", 0, 7, 2, error=True),
        span("tcp.connect", 7, 9, 3),
        span("tcp.connect", 7, 11, 4),
        span("http.request", 11, 12, 5),
        span("http.request", 11, 13, 6, error=True),
    ],
    "other spans and absurd durations": [
        span("icmp.echo", 0, 10, 1),
        span("icmp.echo", 10, 25, 2),
        span("icmp.echo", 30, 20, 3),
        span("http.transfer", 40, 4_000_000_000, 4),
        span("icmp.echo", 25, 40, 5, error=True),
    ],
}


@pytest.mark.parametrize("case", EDGE_CASES)
@pytest.mark.parametrize("split", SPLITS)
def test_joining_late_phases_follows_build_records_rules_in_edge_cases(case: str, split: str) -> None:
    children = EDGE_CASES[case]
    for order in (children, children[::-1]):
        parts = SPLITS[split](list(order))
        got, want = joined(ROOT, parts), whole(ROOT, parts)
        assert same(got, want), (case, split, got, want)


def test_the_roots_tls_version_and_peer_address_win_over_the_phases() -> None:
    root = ROOT._replace(
        attributes={**ROOT.attributes, "tls.protocol.version": "1.2", "network.peer.address": "::1"}
    )
    late = [span("tcp.connect", 5, 9, 2, **{"network.peer.address": "127.0.0.1"})]
    late.append(span("tls.handshake", 9, 20, 3, **{"tls.protocol.version": "1.3"}))
    record = joined(root, [[], late])
    assert (record.tls_version, record.peer_address, record.tls_s) == ("1.2", "::1", 0.011)
