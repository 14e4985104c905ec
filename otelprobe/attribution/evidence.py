"""Evidence in words: the features that pushed a cause up (LightGBM's own SHAP values,
`pred_contrib`), each said the way an SRE would say it, with the window's own numbers.

"TTFB p50 +182 ms over this series' baseline (p90 +190 ms)", "4 of 5 other targets seen from
eu-1 degraded in the same window", "2 of 2 probes failed: tls_error (certificate)".
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from otelprobe.attribution.aggregates import COMPONENT_PHASES, DETAIL_GROUPS, ERROR_CLASSES, PHASES

PHASE_WORDS: Final = {
    "dns": "DNS lookup",
    "connect": "TCP connect",
    "tls": "TLS handshake",
    "request": "request write",
    "ttfb": "TTFB",
    "transfer": "transfer",
    "other": "protocol exchange",
    "total": "total",
}
SYMPTOM_WORDS: Final = {
    "fail": "failing",
    "slow": "degraded",
    "connect": "with a slower TCP connect",
    "dns": "with a slower DNS lookup",
    "ttfb": "with a slower TTFB",
    "tls": "with a slower TLS handshake",
    "transfer": "with a slower body transfer",
}
MAX_EVIDENCE: Final = 4


@dataclass(frozen=True, slots=True)
class Evidence:
    feature: str
    contribution: float
    value: float | None
    text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "contribution": round(self.contribution, 4),
            "value": None if self.value is None else round(self.value, 4),
            "text": self.text,
        }


def _num(row: Mapping[str, Any], key: str) -> float:
    value = row.get(key)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return number


def _ms(value: float) -> str:
    if not math.isfinite(value):
        return "an unknown amount"
    if abs(value) >= 1000:
        return f"{value / 1000:+.2f} s"
    if abs(value) >= 10:
        return f"{value:+.0f} ms"
    return f"{value:+.1f} ms"


def _phase_text(phase: str, row: Mapping[str, Any]) -> str:
    words = PHASE_WORDS[phase]
    p50, p90 = _num(row, f"{phase}_p50_delta_ms"), _num(row, f"{phase}_p90_delta_ms")
    if not math.isfinite(p50):
        return f"no {words} this window"
    text = f"{words} p50 {_ms(p50)} over this series' baseline"
    if math.isfinite(p90) and abs(p90 - p50) >= 1:
        text += f" (p90 {_ms(p90)})"
    return text


def _share_of(row: Mapping[str, Any], feature: str) -> str:
    n = int(_num(row, "n")) if math.isfinite(_num(row, "n")) else 0
    share = _num(row, feature)
    count = round(share * n) if math.isfinite(share) else 0
    return f"{count} of {n} probes"


def _missing(feature: str, row: Mapping[str, Any]) -> str:
    """Words for a feature the window has no value of (LightGBM scores missing values too)."""
    for side, neighbours in (("vantage", "targets from this vantage"), ("target", "vantages of this target")):
        if feature.startswith(f"{side}_"):
            return f"no other {neighbours} to compare with in this window"
    if feature.endswith("_delta_share") or feature.startswith("dominant_"):
        return "no phase took added time in this window"
    if feature.endswith("_ratio_change"):
        return "the phase ratio could not be compared with the usual (a phase was not reached)"
    if feature == "shift_coherence":
        return "DNS, connect and TLS did not move in this window"
    if feature == "cert_days_left":
        return "no server certificate seen in this window"
    if feature.startswith("body_"):
        return "no response body to compare with the usual in this window"
    for phase in PHASES:
        if feature.startswith(f"{phase}_"):
            reached = _share_of(row, f"{phase}_present")
            return f"{PHASE_WORDS[phase]} completed by {reached}: no change to compare with the usual"
    return "not measurable in this window"


def _ratio_text(row: Mapping[str, Any], num: str, den: str, log_change: float) -> str:
    """A server fault adds to one phase, a path fault scales every round trip: say both phases."""
    a, b = _num(row, f"{num}_p50_delta_ms"), _num(row, f"{den}_p50_delta_ms")
    return (
        f"{PHASE_WORDS[num]} {_ms(a)} while {PHASE_WORDS[den]} {_ms(b)}: "
        f"{PHASE_WORDS[num]}/{PHASE_WORDS[den]} ×{math.exp(log_change):.2f} against the usual"
    )


def _coherence_text(row: Mapping[str, Any], coherence: float) -> str:
    moved = [
        f"{PHASE_WORDS[p]} {_ms(_num(row, f'{p}_p10_delta_ms'))}"
        for p in ("dns", "connect", "tls")
        if math.isfinite(_num(row, f"{p}_p10_delta_ms"))
    ]
    return (
        f"{', '.join(moved)} on every probe: the round-trip phases moved together (coherence {coherence:.2f})"
    )


def _told_by_context(feature: str, row: Mapping[str, Any]) -> bool:
    """Features whose words come from the window's context columns (the phase's own change in ms,
    the added time), which may be there when the feature itself is not."""
    if feature == "added_mag":
        return math.isfinite(_num(row, "added_ms"))
    phase, _, rest = feature.partition("_")
    return phase in PHASE_WORDS and rest == "p50_mag"


Words = Callable[[Mapping[str, Any]], str]
"""The sentence of one feature, given the window's row."""


def describe(feature: str, row: Mapping[str, Any]) -> str:
    """One sentence about `feature` in the window `row` (features + context columns)."""
    return _describe(feature, row, _num(row, feature))


def _describe(feature: str, row: Mapping[str, Any], value: float) -> str:
    if not math.isfinite(value) and not _told_by_context(feature, row):
        return _missing(feature, row)
    return _words_of(feature)(row)


@functools.cache
def _words_of(feature: str) -> Words:
    """Which sentence `feature` gets depends on its name only: decided once per feature, not once
    per window (the string matching cost more than the words)."""
    for side in ("vantage", "target"):
        prefix = f"{side}_"
        if feature.startswith(prefix) and feature.endswith("_share"):
            return _neighbour_words(side, feature[len(prefix) : -len("_share")])
        if feature == f"{side}_peers_log":
            return _peers_words(side)
    for phase in PHASES:
        if feature.startswith(f"{phase}_") and feature[len(phase) + 1 :] in (
            "p50_mag",
            "p50_rtt",
            "uniformity",
            "spread_ratio",
            "present",
        ):
            return _phase_words(phase, feature[len(phase) + 1 :], feature)
    if feature.endswith("_delta_share") and feature[: -len("_delta_share")] in COMPONENT_PHASES:
        return _delta_share_words(feature[: -len("_delta_share")], feature)
    if feature.startswith("dominant_") and feature.endswith("_share"):
        phase = feature[len("dominant_") : -len("_share")]
        return lambda row: (
            f"{PHASE_WORDS.get(phase, phase)} is where most slowed probes lost their time "
            f"({_num(row, feature):.0%})"
        )
    for cls in ERROR_CLASSES:
        if feature == f"{cls}_share":
            return lambda row: f"{_share_of(row, feature)} failed with {cls}"
    for group in DETAIL_GROUPS:
        if feature == f"detail_{group}_share":
            words = group.replace("_", " ")
            return lambda row: f"{_share_of(row, feature)} failed with a {words} error detail"
    if feature.startswith("failed_in_") and feature.endswith("_share"):
        phase = feature[len("failed_in_") : -len("_share")]
        return lambda row: f"{_share_of(row, feature)} failed in the {PHASE_WORDS.get(phase, phase)} phase"
    if feature.startswith("status_") and feature.endswith("xx_share"):
        status = feature[len("status_") : -len("_share")]
        return lambda row: f"{_share_of(row, feature)} answered {status}"
    if feature in _TEXTS:
        text = _TEXTS[feature]
        return lambda row: text(row, feature)
    return lambda row: f"{feature} = {_num(row, feature):.3g}"


def _neighbour_words(side: str, symptom: str) -> Words:
    count_column, peers_column = f"{side}_{symptom}_count", f"{side}_peers"
    recent = symptom.endswith("_recent")  # the neighbour's symptom in any of its last windows
    symptom_words = SYMPTOM_WORDS[symptom.removesuffix("_recent")]
    when = "in this or a recent window" if recent else "in this window"

    def words(row: Mapping[str, Any]) -> str:
        count = int(_num(row, count_column) or 0)
        peers = int(_num(row, peers_column) or 0)
        if side == "vantage":
            vantage = row.get("vantage", "?")
            return f"{count} of {peers} other targets seen from {vantage} {symptom_words} {when}"
        return f"{count} of {peers} other vantages of {row.get('target', '?')} {symptom_words} {when}"

    return words


def _peers_words(side: str) -> Words:
    neighbours = "targets from this vantage" if side == "vantage" else "vantages of this target"
    return lambda row: f"{int(_num(row, f'{side}_peers') or 0)} other {neighbours}"


def _phase_words(phase: str, rest: str, feature: str) -> Words:
    if rest == "p50_rtt":
        return lambda row: (
            f"{_phase_text(phase, row)}, {_num(row, feature):+.1f}× the series' round-trip time"
        )
    if rest == "uniformity":
        return lambda row: (
            f"{_phase_text(phase, row)}, on every probe alike (p10/p90 {_num(row, feature):.2f})"
        )
    if rest == "spread_ratio":
        return lambda row: (
            f"{PHASE_WORDS[phase]} spread {math.expm1(_num(row, feature)):.1f}× its usual jitter"
        )
    if rest == "present":
        return lambda row: f"{PHASE_WORDS[phase]} reached by {_share_of(row, feature)}"
    return lambda row: _phase_text(phase, row)


def _delta_share_words(phase: str, feature: str) -> Words:
    def words(row: Mapping[str, Any]) -> str:
        share = _num(row, feature)
        added = _num(row, "added_ms")
        detail = _phase_text(phase, row)
        return f"{PHASE_WORDS[phase]} holds {share:.0%} of the {_ms(added)} added to the probe ({detail})"

    return words


_TEXTS: Final[dict[str, Callable[[Mapping[str, Any], str], str]]] = {
    "added_mag": lambda row, feature: f"{_ms(_num(row, 'added_ms'))} added to the probe over its baseline",
    "stall_share": lambda row, feature: (
        f"{_share_of(row, feature)} stalled ≥ 150 ms in one phase while others did not"
    ),
    "shift_coherence": lambda row, feature: _coherence_text(row, _num(row, feature)),
    "connect_retry_share": lambda row, feature: (
        f"{_share_of(row, feature)} had a TCP connect ≥ 0.9 s over baseline (SYN retransmit)"
    ),
    "dns_retry_share": lambda row, feature: (
        f"{_share_of(row, feature)} needed a DNS retransmit or stalled in DNS"
    ),
    "success_ratio": lambda row, feature: f"{_num(row, feature):.0%} of probes succeeded",
    "body_bytes_rel": lambda row, feature: f"body size {_num(row, feature):+.0%} against the usual",
    "body_rate_rel": lambda row, feature: f"body fetch rate {math.exp(_num(row, feature)):.2f}× the usual",
    "address_changed": lambda row, feature: "the name resolved to an address this series never used",
    "own_recent_through_after_stall": lambda row, feature: (
        "in its last two windows a probe stalled and still got through"
        if _num(row, feature) > 0
        else "no probe of its last two windows stalled and still got through"
    ),
    "own_recent_all_failed": lambda row, feature: (
        "every probe failed in one of its last two windows"
        if _num(row, feature) > 0
        else "no window of its last two had every probe fail"
    ),
    "cert_days_left": lambda row, feature: f"certificate expires in {_num(row, feature):.0f} days",
    "retry_share": lambda row, feature: f"{_share_of(row, feature)} were retries",
    "kind_code": lambda row, feature: f"a {row.get('kind', '?')} probe",
    "tls_connect_ratio_change": lambda row, feature: _ratio_text(row, "tls", "connect", _num(row, feature)),
    "ttfb_connect_ratio_change": lambda row, feature: _ratio_text(row, "ttfb", "connect", _num(row, feature)),
    "ttfb_tls_ratio_change": lambda row, feature: _ratio_text(row, "ttfb", "tls", _num(row, feature)),
}
"""Features with a sentence of their own (the rest are worded by family above)."""


def strongest_positive(values: np.ndarray, limit: int = MAX_EVIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """For every row of `values` (... × features): the columns of its up to `limit` largest finite
    positive values, largest first, equal values in column order (a stable sort on the negated
    value, as `sorted(key=-value)` over the columns in order); and how many of them there are."""
    keep = np.isfinite(values) & (values > 0)
    key = np.where(keep, -values, np.inf)  # kept values first; the rest sort last, unread
    columns = np.argsort(key, axis=-1, kind="stable")[..., :limit]
    return columns, np.minimum(keep.sum(axis=-1), limit)


def evidence_of(
    names: Sequence[str], columns: Sequence[int], values: Sequence[Any], row: Mapping[str, Any]
) -> tuple[Evidence, ...]:
    """Evidence in words for the features `names[columns[k]]`, contributing `values[k]`."""
    out = []
    for j, value in zip(columns, values, strict=True):
        name = names[j]
        raw = _num(row, name)
        out.append(Evidence(name, value, raw if math.isfinite(raw) else None, _describe(name, row, raw)))
    return tuple(out)


def top_evidence(
    contributions: Mapping[str, float], row: Mapping[str, Any], limit: int = MAX_EVIDENCE
) -> list[Evidence]:
    """The features that raised this cause the most, in words (positive contributions only)."""
    names, values = list(contributions), list(contributions.values())
    columns, count = strongest_positive(np.array(values, dtype=np.float64).reshape(1, -1), limit)
    chosen = columns[0, : int(count[0])].tolist()
    return list(evidence_of(names, chosen, [values[j] for j in chosen], row))
