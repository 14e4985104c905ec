"""The expert rule tree: the rules an SRE writes from DESIGN §5 when asked why a probe's SLO broke.

The strongest baseline of `otelprobe evaluate` (issue 8) and the bar the model must beat:
published work (e.g. RCAEval's rule baselines) finds such rules rival learned models on clean
faults. It combines the robust z-scores of baselines.py (every phase against the series' own
baseline) with neighbour voting for the scope, and reads failures first:

1. a `tls_error` with a certificate detail -> certificate_invalid;
2. `dns_error`: NXDOMAIN / SERVFAIL -> dns_failure; resolver timeouts only -> packet_loss when
   connects suffer too (here: retransmit-shaped stalls; or on this vantage's other targets),
   else dns_failure;
3. `assertion_failed`: on a DNS probe or a DNS answer -> dns_failure, else content_mismatch;
   `http_status` -> http_error; `protocol_error`: DNS probe -> dns_failure, else http_error;
4. `connect_refused` -> target_unreachable, unless refused far sooner than the server's usual
   connect (an answer pointing elsewhere) -> dns_failure; `connect_timeout` -> packet_loss when
   some probes connected and the window shows loss or this vantage's neighbours fail too, else
   target_unreachable;
5. latency (and overall-deadline timeouts): retransmit-shaped stalls in some probes only (~1 s
   connects or lookups, 200 ms+ handshakes) -> packet_loss; the body took the added time while
   connects did not all slow (a saturated link) -> bandwidth_limit; connect up (only the path
   delays a SYN-ACK) -> network_latency, as is DNS up on a DNS probe whose vantage's other
   targets connect slower; else the slowed phase with the highest robust z among TLS ->
   tls_slow, transfer -> bandwidth_limit, TTFB -> backend_slow, DNS -> dns_latency; a deadline
   hit in TTFB / transfer -> backend_slow / bandwidth_limit; else the highest z (BARO's answer).

The ranking is the rule's pick, then every other cause with evidence (robust z >= 4, a failure
class) the pick does not account for (a longer path slows every phase) by strength, then the
pick's usual look-alikes (loss for latency, bandwidth for backend, ...), then the rest by z.
Scores halve from rank to rank (the rule tree has no probabilities); scopes come from neighbour
voting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from otelprobe.attribution.baselines import (
    CAUSE_INDEX,
    PHASE_CAUSES,
    Answer,
    voted_scopes,
    z_evidence,
)
from otelprobe.causes import ROOT_CAUSES

if TYPE_CHECKING:
    import pandas as pd

UP_Z: Final = 4.0
"""A phase is up when its median is this many robust z above the series' baseline ..."""
UP_MIN_MS: Final = 2.0
"""... and at least this many milliseconds (features.py's symptom thresholds)."""
RETRY_MS: Final = 800.0
"""A lost SYN or DNS query costs about 1 s (the retransmission / resolver retry timer; late
timers land at 1004-1032 ms): connects and lookups this much slower were retried."""
STALL_MS: Final = 200.0
"""A lost data segment costs at least TCP's minimum RTO, 200 ms."""
REFUSED_FAST_REL: Final = -0.3
"""A refusal this much faster than the series' usual connect did not come from its server."""
UNIFORM_SHARE: Final = 0.5
"""A shift is uniform when the window's fastest probe (p10) carries at least half the median's."""
NEIGHBOURS: Final = 0.5
"""Half of the neighbours with a symptom make it theirs too."""
EVIDENCE_Z: Final = UP_Z

LOOK_ALIKES: Final[Mapping[str, tuple[str, ...]]] = {
    "dns_latency": ("network_latency", "dns_failure"),
    "dns_failure": ("packet_loss", "dns_latency"),
    "network_latency": ("packet_loss", "dns_latency"),
    "packet_loss": ("network_latency", "target_unreachable", "dns_failure"),
    "bandwidth_limit": ("backend_slow", "packet_loss"),
    "tls_slow": ("network_latency", "backend_slow"),
    "certificate_invalid": ("tls_slow", "dns_failure"),
    "backend_slow": ("bandwidth_limit", "network_latency"),
    "http_error": ("content_mismatch", "backend_slow"),
    "target_unreachable": ("packet_loss", "network_latency"),
    "content_mismatch": ("http_error", "dns_failure"),
}
"""The causes an expert would name next when the first guess is wrong."""

EXPLAINS: Final[Mapping[str, frozenset[str]]] = {
    "network_latency": frozenset({"dns_latency", "tls_slow", "backend_slow", "bandwidth_limit"}),
    "packet_loss": frozenset({"dns_latency", "tls_slow", "backend_slow", "bandwidth_limit"}),
    "bandwidth_limit": frozenset({"backend_slow"}),
    "target_unreachable": frozenset({"network_latency"}),
    "dns_failure": frozenset({"dns_latency"}),
}
"""Signals the pick accounts for, which are no evidence of a second cause: a longer path slows
every phase by a round trip, loss stalls any of them, a refused or timed-out connect has no
normal connect time, a failed lookup no normal lookup time."""

# The order failures are read in when a window has several classes at the same share.
_ERROR_ORDER: Final = (
    "tls_error",
    "dns_error",
    "assertion_failed",
    "http_status",
    "protocol_error",
    "connect_refused",
    "connect_timeout",
    "timeout",
)


@dataclass(frozen=True, slots=True)
class _Window:
    """One window's row, read with NaN as 0 (a phase that did not happen did not slow down)."""

    row: Mapping[str, Any]

    def get(self, name: str) -> float:
        value = self.row.get(name)
        if value is None:
            return 0.0
        number = float(value)
        return number if math.isfinite(number) else 0.0

    def share(self, name: str) -> float:
        """A neighbour share, the larger of this window's and the recent windows'."""
        recent = f"{name.removesuffix('_share')}_recent_share"
        return max(self.get(name), self.get(recent))

    def up(self, phase: str) -> bool:
        return self.get(f"{phase}_p50_z") >= UP_Z and self.get(f"{phase}_p50_delta_ms") >= UP_MIN_MS

    def uniform(self, phase: str) -> bool:
        """Every probe of the window took longer (its fastest too), not a few stalled ones."""
        median = self.get(f"{phase}_p50_delta_ms")
        return self.up(phase) and self.get(f"{phase}_p10_delta_ms") >= UNIFORM_SHARE * median

    def stalled(self, phase: str, stall_ms: float) -> bool:
        """Some probes only (not the window's fastest) lost `stall_ms` or more in this phase."""
        worst = self.get(f"{phase}_max_delta_ms")
        return worst >= stall_ms and self.get(f"{phase}_p10_delta_ms") < UNIFORM_SHARE * worst

    def loss_signs(self) -> bool:
        """Retransmission-shaped stalls: ~1 s connects or lookups, 200 ms+ handshake stalls."""
        return (
            self.get("connect_retry_share") > 0
            or self.stalled("connect", RETRY_MS)
            or self.stalled("dns", RETRY_MS)
            or self.stalled("tls", STALL_MS)
        )


def expert_pick(row: Mapping[str, Any]) -> str:
    """The rule tree's cause for one window row (the module docstring lists the rules)."""
    w = _Window(row)
    failing = sorted(
        (error for error in _ERROR_ORDER if w.get(f"{error}_share") > 0),
        key=lambda error: -w.get(f"{error}_share"),
    )
    for error in failing:
        cause = _failure_rule(w, error, str(row.get("kind", "")))
        if cause is not None:
            return cause
    return _latency_rule(w)


def _failure_rule(w: _Window, error: str, kind: str) -> str | None:
    if error == "tls_error":
        return "certificate_invalid" if w.get("detail_cert_share") > 0 else None
    if error == "dns_error":
        if w.get("dns_error_share") > w.get("detail_dns_timeout_share"):
            return "dns_failure"  # the resolver answered: NXDOMAIN, SERVFAIL, no address
        # Lost queries time out too: loss also slows connects here or on the vantage's other
        # targets, where a resolver or zone fault leaves connects alone.
        connects_suffer = w.loss_signs() or w.get("vantage_connect_share") > 0
        return "packet_loss" if connects_suffer else "dns_failure"
    if error == "assertion_failed":
        return "dns_failure" if kind == "dns" or w.get("detail_answer_share") > 0 else "content_mismatch"
    if error == "http_status":
        return "http_error"
    if error == "protocol_error":
        return "dns_failure" if kind == "dns" else "http_error"
    if error == "connect_refused":
        if w.get("connect_p50_rel") <= REFUSED_FAST_REL:
            return "dns_failure"  # refused sooner than the server can answer: a wrong address
        return "target_unreachable"
    if error == "connect_timeout":
        partial = w.get("success_ratio") > 0  # some connected: lost SYNs if the rest shows loss
        vantage_failing = w.share("vantage_fail_share") >= NEIGHBOURS
        if partial and (w.loss_signs() or vantage_failing):
            return "packet_loss"
        return "target_unreachable"
    return None  # an overall deadline: the latency rules say where the time went


def _latency_rule(w: _Window) -> str:
    if w.loss_signs():
        return "packet_loss"
    body_time = w.get("transfer_p50_delta_ms") >= w.get("ttfb_p50_delta_ms")
    if w.up("transfer") and body_time and not w.uniform("connect"):
        # The body took the added time; a saturated link queues some connects, a longer path all.
        return "bandwidth_limit"
    if w.up("connect"):
        return "network_latency"  # only the path can delay a SYN-ACK
    if w.up("dns") and w.get("connect_present") == 0 and w.get("vantage_connect_share") >= NEIGHBOURS:
        return "network_latency"  # a DNS probe has no connect: its vantage's other targets do
    slowed = [phase for phase in ("tls", "transfer", "ttfb", "dns") if w.up(phase)]
    if slowed:
        return PHASE_CAUSES[max(slowed, key=lambda phase: w.get(f"{phase}_p50_z"))]
    if w.get("failed_in_ttfb_share") > 0:
        return "backend_slow"
    if w.get("failed_in_transfer_share") > 0:
        return "bandwidth_limit"
    if w.get("step_share") > 0:
        return "packet_loss"
    strongest = max(PHASE_CAUSES, key=lambda phase: w.get(f"{phase}_p50_z"))
    return PHASE_CAUSES[strongest]


def expert_ranking(pick: str, evidence: np.ndarray) -> list[int]:
    """Cause indices best first: the pick, causes with evidence, the pick's look-alikes, the rest."""
    order = [CAUSE_INDEX[pick]]
    by_strength = sorted(range(len(ROOT_CAUSES)), key=lambda index: -evidence[index])
    explained = {CAUSE_INDEX[cause] for cause in EXPLAINS.get(pick, ())}
    order += [i for i in by_strength if evidence[i] >= EVIDENCE_Z and i not in explained]
    order += [CAUSE_INDEX[cause] for cause in LOOK_ALIKES[pick]]
    order += by_strength
    return list(dict.fromkeys(order))


def halving_scores(order: list[int]) -> np.ndarray:
    """Scores for a strict ranking: each rank half the one before, summing to 1."""
    scores = np.zeros(len(order))
    scores[order] = 0.5 ** np.arange(len(order))
    return np.asarray(scores / scores.sum(), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class ExpertRules:
    """The hand-written rule tree (module docstring) with neighbour voting for the scope."""

    name: str = "expert rules"

    def answer(self, frame: pd.DataFrame) -> Answer:
        evidence = z_evidence(frame)
        scores = np.zeros((len(frame), len(ROOT_CAUSES)))
        for i, row in enumerate(frame.to_dict("records")):
            scores[i] = halving_scores(expert_ranking(expert_pick(row), evidence[i]))
        return Answer(scores, voted_scopes(frame))
