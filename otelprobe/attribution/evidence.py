"""Evidence in words: the features that pushed a cause up (LightGBM's own SHAP values,
`pred_contrib`), each said the way an SRE would say it, with the window's own numbers.

"TTFB p50 +182 ms over this series' baseline (p90 +190 ms)", "4 of 5 other targets seen from
eu-1 degraded in the same window", "2 of 2 probes failed: tls_error (certificate)".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

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


def describe(feature: str, row: Mapping[str, Any]) -> str:
    """One sentence about `feature` in the window `row` (features + context columns)."""
    if not math.isfinite(_num(row, feature)) and not _told_by_context(feature, row):
        return _missing(feature, row)
    target, vantage = row.get("target", "?"), row.get("vantage", "?")
    for side in ("vantage", "target"):
        prefix = f"{side}_"
        if feature.startswith(prefix) and feature.endswith("_share"):
            symptom = feature[len(prefix) : -len("_share")]
            count = int(_num(row, f"{side}_{symptom}_count") or 0)
            peers = int(_num(row, f"{side}_peers") or 0)
            recent = symptom.endswith("_recent")  # the neighbour's symptom in any of its last windows
            symptom_words = SYMPTOM_WORDS[symptom.removesuffix("_recent")]
            when = "in this or a recent window" if recent else "in this window"
            if side == "vantage":
                return f"{count} of {peers} other targets seen from {vantage} {symptom_words} {when}"
            return f"{count} of {peers} other vantages of {target} {symptom_words} {when}"
        if feature == f"{side}_peers_log":
            peers = int(_num(row, f"{side}_peers") or 0)
            neighbours = "targets from this vantage" if side == "vantage" else "vantages of this target"
            return f"{peers} other {neighbours}"
    for phase in PHASES:
        if feature.startswith(f"{phase}_") and feature[len(phase) + 1 :] in (
            "p50_mag",
            "p50_rtt",
            "uniformity",
            "spread_ratio",
            "present",
        ):
            rest = feature[len(phase) + 1 :]
            if rest == "p50_rtt":
                return f"{_phase_text(phase, row)}, {_num(row, feature):+.1f}× the series' round-trip time"
            if rest == "uniformity":
                return f"{_phase_text(phase, row)}, on every probe alike (p10/p90 {_num(row, feature):.2f})"
            if rest == "spread_ratio":
                return f"{PHASE_WORDS[phase]} spread {math.expm1(_num(row, feature)):.1f}× its usual jitter"
            if rest == "present":
                return f"{PHASE_WORDS[phase]} reached by {_share_of(row, feature)}"
            return _phase_text(phase, row)
    if feature.endswith("_delta_share") and feature[: -len("_delta_share")] in COMPONENT_PHASES:
        phase = feature[: -len("_delta_share")]
        share = _num(row, feature)
        added = _num(row, "added_ms")
        detail = _phase_text(phase, row)
        return f"{PHASE_WORDS[phase]} holds {share:.0%} of the {_ms(added)} added to the probe ({detail})"
    if feature.startswith("dominant_") and feature.endswith("_share"):
        phase = feature[len("dominant_") : -len("_share")]
        share = _num(row, feature)
        return f"{PHASE_WORDS.get(phase, phase)} is where most slowed probes lost their time ({share:.0%})"
    for cls in ERROR_CLASSES:
        if feature == f"{cls}_share":
            return f"{_share_of(row, feature)} failed with {cls}"
    for group in DETAIL_GROUPS:
        if feature == f"detail_{group}_share":
            return f"{_share_of(row, feature)} failed with a {group.replace('_', ' ')} error detail"
    if feature.startswith("failed_in_") and feature.endswith("_share"):
        phase = feature[len("failed_in_") : -len("_share")]
        return f"{_share_of(row, feature)} failed in the {PHASE_WORDS.get(phase, phase)} phase"
    if feature.startswith("status_") and feature.endswith("xx_share"):
        return f"{_share_of(row, feature)} answered {feature[len('status_') : -len('_share')]}"
    texts: dict[str, Callable[[], str]] = {
        "added_mag": lambda: f"{_ms(_num(row, 'added_ms'))} added to the probe over its baseline",
        "stall_share": lambda: (
            f"{_share_of(row, feature)} stalled ≥ 150 ms in one phase while others did not"
        ),
        "shift_coherence": lambda: _coherence_text(row, _num(row, feature)),
        "connect_retry_share": lambda: (
            f"{_share_of(row, feature)} had a TCP connect ≥ 0.9 s over baseline (SYN retransmit)"
        ),
        "dns_retry_share": lambda: f"{_share_of(row, feature)} needed a DNS retransmit or stalled in DNS",
        "success_ratio": lambda: f"{_num(row, feature):.0%} of probes succeeded",
        "body_bytes_rel": lambda: f"body size {_num(row, feature):+.0%} against the usual",
        "body_rate_rel": lambda: f"body fetch rate {math.exp(_num(row, feature)):.2f}× the usual",
        "address_changed": lambda: "the name resolved to an address this series never used",
        "cert_days_left": lambda: f"certificate expires in {_num(row, feature):.0f} days",
        "retry_share": lambda: f"{_share_of(row, feature)} were retries",
        "kind_code": lambda: f"a {row.get('kind', '?')} probe",
        "tls_connect_ratio_change": lambda: _ratio_text(row, "tls", "connect", _num(row, feature)),
        "ttfb_connect_ratio_change": lambda: _ratio_text(row, "ttfb", "connect", _num(row, feature)),
        "ttfb_tls_ratio_change": lambda: _ratio_text(row, "ttfb", "tls", _num(row, feature)),
    }
    if feature in texts:
        return texts[feature]()
    return f"{feature} = {_num(row, feature):.3g}"


def top_evidence(
    contributions: Mapping[str, float], row: Mapping[str, Any], limit: int = MAX_EVIDENCE
) -> list[Evidence]:
    """The features that raised this cause the most, in words (positive contributions only)."""
    ranked = sorted(
        ((name, value) for name, value in contributions.items() if value > 0 and math.isfinite(value)),
        key=lambda item: -item[1],
    )
    out = []
    for name, value in ranked[:limit]:
        raw = _num(row, name)
        out.append(Evidence(name, value, raw if math.isfinite(raw) else None, describe(name, row)))
    return out
