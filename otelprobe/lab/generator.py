"""Scenario generator: a balanced campaign of faults for training and held-out evaluation.

Every root-cause class gets about the same number of incidents, spread over the scopes it can
take, at magnitudes from barely visible to gross; some incidents get an overlapping second fault,
and every (target, vantage) has healthy periods between its incidents. The train and eval splits
differ in vantages (names and baseline RTTs), targets (names and body sizes), magnitudes (bands
drawn at different points) and seeds. The output is an ordinary scenario (lab/scenario.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from otelprobe.causes import ROOT_CAUSES, RootCause, Scope
from otelprobe.lab.faults import parse_fault
from otelprobe.lab.scenario import Scenario, affected_pairs, fault_fits

Split = Literal["train", "eval"]
SPLITS: Final[tuple[Split, ...]] = ("train", "eval")
MAGNITUDE_LEVELS: Final = 4
"""Bands from barely visible (0) to gross (3)."""


@dataclass(frozen=True, slots=True)
class Recipe:
    """How to inject one cause: a fault kind, fixed parameters, and the magnitude's range
    (first end barely visible, second gross); `weight` is how often this recipe is picked."""

    kind: str
    params: tuple[tuple[str, Any], ...] = ()
    magnitude: tuple[float, float] | None = None
    weight: float = 1.0
    scopes: tuple[Scope, ...] = ("vantage", "target", "path")


RECIPES: Final[dict[RootCause, tuple[Recipe, ...]]] = {
    "dns_latency": (Recipe("dns_delay", (("jitter", 0.002),), (0.004, 0.4), 4), Recipe("dns_truncate")),
    "dns_failure": (
        Recipe("dns_servfail", magnitude=(0.25, 1.0)),
        Recipe("dns_nxdomain", magnitude=(0.25, 1.0)),
        Recipe("dns_timeout", magnitude=(0.25, 1.0)),
        Recipe("dns_wrong_answer", magnitude=(0.25, 1.0)),
    ),
    "network_latency": (Recipe("network_latency", magnitude=(0.002, 0.15), scopes=("vantage",)),),
    "packet_loss": (Recipe("packet_loss", magnitude=(0.01, 0.3), scopes=("vantage",)),),
    "bandwidth_limit": (
        Recipe("bandwidth_limit", magnitude=(4_000_000, 24_000), scopes=("vantage",)),
        Recipe("trickle_body", (("chunk", 2048),), (4_000_000, 24_000), scopes=("target", "path")),
    ),
    "tls_slow": (Recipe("tls_delay", (("jitter", 0.002),), (0.004, 0.4)),),
    "certificate_invalid": tuple(
        Recipe("bad_certificate", (("problem", p),))
        for p in ("expired", "not_yet_valid", "wrong_host", "self_signed", "short_chain")
    ),
    "backend_slow": (
        Recipe("ttfb_delay", (("jitter", 0.004),), (0.006, 0.6), 5),
        Recipe("hang", magnitude=(0.1, 0.6)),
    ),
    "http_error": (
        Recipe("http_5xx", magnitude=(0.15, 1.0), weight=3),
        Recipe("reset_mid_body", magnitude=(0.2, 1.0)),
    ),
    "target_unreachable": (Recipe("refused"), Recipe("blackhole")),
    "content_mismatch": (Recipe("wrong_content", magnitude=(0.2, 1.0)),),
}
"""Every cause class of DESIGN §5 and the faults that produce it."""

_VANTAGES: Final[dict[Split, list[dict[str, Any]]]] = {
    "train": [
        {"name": "eu-1", "delay": 0.001, "jitter": 0.0002},
        {"name": "us-1", "delay": 0.008, "jitter": 0.001},
        {"name": "ap-1", "delay": 0.03, "jitter": 0.003, "loss": 0.001},
    ],
    "eval": [
        {"name": "eu-2", "delay": 0.002, "jitter": 0.0004},
        {"name": "us-2", "delay": 0.013, "jitter": 0.0015},
        {"name": "sa-2", "delay": 0.045, "jitter": 0.004, "loss": 0.001},
    ],
}
_TARGETS: Final[dict[Split, list[dict[str, Any]]]] = {
    "train": [
        {"name": "web-a", "kind": "http", "body_size": 4096, "backend_delay": 0.002, "backend_jitter": 0.001},
        {
            "name": "api-a",
            "kind": "https",
            "body_size": 16384,
            "backend_delay": 0.004,
            "backend_jitter": 0.002,
        },
        {"name": "static-a", "kind": "https", "body_size": 98304},
        {"name": "dns-a", "kind": "dns"},
        {"name": "db-a", "kind": "tcp"},
        {"name": "auth-a", "kind": "tls"},
    ],
    "eval": [
        {
            "name": "shop-b",
            "kind": "http",
            "body_size": 8192,
            "backend_delay": 0.003,
            "backend_jitter": 0.002,
        },
        {
            "name": "pay-b",
            "kind": "https",
            "body_size": 24576,
            "backend_delay": 0.006,
            "backend_jitter": 0.003,
        },
        {"name": "cdn-b", "kind": "https", "body_size": 65536, "coalesce": True},
        {"name": "ns-b", "kind": "dns"},
        {"name": "cache-b", "kind": "tcp", "tls": True},
        {"name": "sso-b", "kind": "tls"},
    ],
}
_BAND_OFFSET: Final[dict[Split, float]] = {"train": 0.25, "eval": 0.75}
"""Where in each magnitude band a split draws: eval magnitudes fall between train's."""


@dataclass(frozen=True, slots=True)
class CampaignShape:
    """Timing of a campaign, in seconds (compressed time: probes every `interval`)."""

    interval: float = 1.0
    timeout: float = 1.0
    lead_in: float = 8.0
    duration: tuple[float, float] = (5.0, 11.0)
    healthy_gap: tuple[float, float] = (4.0, 9.0)
    combined_share: float = 0.15
    tail: float = 6.0


def _magnitude(recipe: Recipe, level: int, split: Split, rng: random.Random) -> float | int | None:
    if recipe.magnitude is None:
        return None
    low, high = recipe.magnitude
    u = (level + _BAND_OFFSET[split] + rng.uniform(-0.15, 0.15)) / MAGNITUDE_LEVELS
    value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    if high > 1000:  # a rate in bytes per second
        return round(value)
    return round(value, 4)


def _pick(recipes: Sequence[Recipe], scope: Scope, rng: random.Random) -> Recipe:
    fitting = [r for r in recipes if scope in r.scopes]
    return rng.choices(fitting, weights=[r.weight for r in fitting])[0]


@dataclass(slots=True)
class _Planned:
    entry: dict[str, Any]
    pairs: frozenset[tuple[str, str]]
    offset: float  # start relative to its group's start
    duration: float


class _Occupancy:
    """Busy intervals per (target, vantage); finds the earliest start where a group fits."""

    def __init__(self) -> None:
        self.busy: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def earliest(
        self, pairs: frozenset[tuple[str, str]], length: float, gap: float, not_before: float
    ) -> float:
        candidates = sorted({not_before} | {end + gap for p in pairs for _, end in self.busy.get(p, ())})
        for start in candidates:
            if start < not_before:
                continue
            lo, hi = start - gap, start + length + gap
            if all(e <= lo + 1e-6 or s >= hi - 1e-6 for p in pairs for s, e in self.busy.get(p, ())):
                return start
        raise AssertionError("unreachable: the last candidate always fits")

    def take(self, pairs: frozenset[tuple[str, str]], start: float, end: float) -> None:
        for pair in pairs:
            self.busy.setdefault(pair, []).append((start, end))


def generate_campaign(
    seed: int,
    *,
    split: Split = "train",
    incidents: int = 120,
    shape: CampaignShape | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """A balanced campaign as scenario data (write it with yaml.safe_dump; load with lab.scenario).

    Args:
        seed: drives every choice; use different seeds for train and eval.
        split: picks the vantages, targets and magnitude bands of the split.
        incidents: about how many incidents (combined faults count one each).
        shape: timing (interval, incident durations, healthy gaps, share of combined faults).
    """
    shape = shape or CampaignShape()
    rng = random.Random(f"{split}:{seed}")
    skeleton: dict[str, Any] = {
        "name": name or f"campaign-{split}-{seed}",
        "seed": seed,
        "vantages": _VANTAGES[split],
        "targets": _TARGETS[split],
        "probe": {"interval": shape.interval, "timeout": shape.timeout},
        "timeline": [],
        "tail": shape.tail,
    }
    topology = Scenario.model_validate(skeleton)
    vantages = topology.vantage_names

    def plan(cause: RootCause, scope: Scope, level: int, near: tuple[str, str] | None) -> _Planned | None:
        recipe = _pick(RECIPES[cause], scope, rng)
        magnitude = _magnitude(recipe, level, split, rng)
        fault = parse_fault({"kind": recipe.kind, **dict(recipe.params), **_knob(recipe.kind, magnitude)})
        fitting = [t.name for t in topology.targets if fault_fits(fault, t)]
        if near is not None:
            fitting = [t for t in fitting if t == near[0]] if scope != "vantage" else fitting
        if not fitting:
            return None
        target = rng.choice(fitting) if scope != "vantage" else None
        vantage = (near[1] if near else rng.choice(vantages)) if scope != "target" else None
        entry: dict[str, Any] = {"fault": {"kind": recipe.kind, **dict(recipe.params)}, "scope": scope}
        if magnitude is not None:
            entry["magnitude"] = magnitude
        if target is not None:
            entry["target"] = target
        if vantage is not None:
            entry["vantage"] = vantage
        pairs = affected_pairs(topology, fault, scope, vantage, target)
        return _Planned(entry, pairs, 0.0, round(rng.uniform(*shape.duration), 1))

    groups: list[list[_Planned]] = []
    counts = dict.fromkeys(ROOT_CAUSES, 0)
    while sum(len(g) for g in groups) < incidents:
        cause = min(ROOT_CAUSES, key=lambda c: (counts[c], ROOT_CAUSES.index(c)))
        scopes = _scopes(cause)
        scope = scopes[counts[cause] % len(scopes)]
        level = (counts[cause] // len(scopes)) % MAGNITUDE_LEVELS
        counts[cause] += 1
        first = plan(cause, scope, level, None)
        if first is None:
            continue
        group = [first]
        if rng.random() < shape.combined_share:
            other = rng.choice([c for c in ROOT_CAUSES if c != cause])
            second = plan(
                other, rng.choice(_scopes(other)), rng.randrange(MAGNITUDE_LEVELS), min(first.pairs)
            )
            if second is not None:
                counts[other] += 1
                second.offset = round(first.duration * rng.uniform(0.25, 0.6), 1)
                group.append(second)
        groups.append(group)
    rng.shuffle(groups)
    occupancy = _Occupancy()
    for group in groups:
        pairs = frozenset().union(*(p.pairs for p in group))
        length = max(p.offset + p.duration for p in group)
        gap = rng.uniform(*shape.healthy_gap)
        start = occupancy.earliest(pairs, length, gap, shape.lead_in)
        occupancy.take(pairs, start, start + length)
        for planned in group:
            entry = {**planned.entry, "start": round(start + planned.offset, 1), "duration": planned.duration}
            skeleton["timeline"].append(entry)
    skeleton["timeline"].sort(key=lambda e: e["start"])
    Scenario.model_validate(skeleton)  # every generated campaign is a valid scenario
    return skeleton


def _scopes(cause: RootCause) -> list[Scope]:
    return sorted({s for r in RECIPES[cause] for s in r.scopes}, key=("vantage", "target", "path").index)


def _knob(kind: str, magnitude: float | int | None) -> dict[str, Any]:
    from otelprobe.lab.scenario import MAGNITUDE_KEYS

    key = MAGNITUDE_KEYS[kind]
    return {} if key is None or magnitude is None else {key: magnitude}
