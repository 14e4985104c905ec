"""Scenario generator: a balanced campaign of faults for training and held-out evaluation.

Every root-cause class gets about the same number of incidents, spread over the scopes it can
take, at magnitudes from near the noise floor to gross. Campaign features mix what real incidents
do: compound incidents (a second cause on the same series while the first is on), incidents on
different series at the same time, gradual ramps (a magnitude stepping up over the incident) and
subtle magnitudes; every (target, vantage) has healthy periods between its incidents. The
environment comes from a profile (lab/dataset/profiles.py): the standard profile's train and eval splits
share no vantage, target, magnitude or seed, and the shifted profile is another environment
altogether. The output is an ordinary scenario (lab/scenario.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from otelprobe.causes import ROOT_CAUSES, RootCause, Scope
from otelprobe.lab.dataset.incidents import affected_pairs
from otelprobe.lab.dataset.profiles import BAND_CENTRES, BAND_SPREAD, Profile, Split, topology
from otelprobe.lab.faults import parse_fault
from otelprobe.lab.scenario import BANDS, MAGNITUDE_KEYS, Band, Scenario, fault_fits

MAGNITUDE_LEVELS: Final = 4
"""Bands from barely visible (0, "low") to gross (3); "subtle" lies below them."""
_LEVEL_BANDS: Final[tuple[Band, ...]] = BANDS[1:]
_RAMP_BANDS: Final[tuple[Band, ...]] = ("medium", "high", "gross")
"""Bands that ramp up from the low band (a ramp within the low band would be invisible)."""


@dataclass(frozen=True, slots=True)
class Recipe:
    """How to inject one cause: a fault kind, fixed parameters, and the magnitude's range
    (first end barely visible, second gross); `weight` is how often this recipe is picked."""

    kind: str
    params: tuple[tuple[str, Any], ...] = ()
    magnitude: tuple[float, float] | None = None
    weight: float = 1.0
    scopes: tuple[Scope, ...] = ("vantage", "target", "path")
    subtle: tuple[float, float] | None = None
    """Magnitudes near the noise floor (jitter, resolver tails, background loss), same order."""
    ramps: bool = False
    """Whether the magnitude can ramp up over an incident (a gradual onset)."""


_PROBABILITY: Final = (0.25, 1.0)
_RARE: Final = (0.06, 0.15)
_DELAY: Final = (0.004, 0.4)
_FAINT_DELAY: Final = (0.0008, 0.003)
_RATE: Final = (4_000_000, 24_000)
_LINK: Final[tuple[Scope, ...]] = ("vantage",)
_SERVER: Final[tuple[Scope, ...]] = ("target", "path")
_FAINT_RATE: Final = (16_000_000, 6_000_000)
RECIPES: Final[dict[RootCause, tuple[Recipe, ...]]] = {
    "dns_latency": (
        Recipe("dns_delay", (("jitter", 0.002),), _DELAY, 4, subtle=_FAINT_DELAY, ramps=True),
        Recipe("dns_truncate"),
    ),
    "dns_failure": tuple(
        Recipe(kind, magnitude=_PROBABILITY, subtle=_RARE, ramps=True)
        for kind in ("dns_servfail", "dns_nxdomain", "dns_timeout", "dns_wrong_answer")
    ),
    "network_latency": (
        Recipe("network_latency", magnitude=(0.002, 0.15), scopes=_LINK, subtle=(0.0004, 0.0015), ramps=True),
    ),
    "packet_loss": (
        Recipe("packet_loss", magnitude=(0.01, 0.3), scopes=_LINK, subtle=(0.002, 0.008), ramps=True),
    ),
    "bandwidth_limit": (
        Recipe("bandwidth_limit", magnitude=_RATE, scopes=_LINK, subtle=_FAINT_RATE, ramps=True),
        Recipe("trickle_body", (("chunk", 2048),), _RATE, scopes=_SERVER, subtle=_FAINT_RATE, ramps=True),
    ),
    "tls_slow": (Recipe("tls_delay", (("jitter", 0.002),), _DELAY, subtle=_FAINT_DELAY, ramps=True),),
    "certificate_invalid": tuple(
        Recipe("bad_certificate", (("problem", p),))
        for p in ("expired", "not_yet_valid", "wrong_host", "self_signed", "short_chain")
    ),
    "backend_slow": (
        Recipe("ttfb_delay", (("jitter", 0.004),), (0.006, 0.6), 5, subtle=(0.001, 0.004), ramps=True),
        Recipe("hang", magnitude=(0.1, 0.6), subtle=(0.03, 0.08)),
    ),
    "http_error": (
        Recipe("http_5xx", magnitude=(0.15, 1.0), weight=3, subtle=(0.04, 0.1), ramps=True),
        Recipe("reset_mid_body", magnitude=(0.2, 1.0), subtle=(0.04, 0.1)),
    ),
    "target_unreachable": (Recipe("refused"), Recipe("blackhole")),
    "content_mismatch": (Recipe("wrong_content", magnitude=(0.2, 1.0), subtle=(0.04, 0.1)),),
}  # fmt: skip
"""Every cause class of DESIGN §5 and the faults that produce it."""


@dataclass(frozen=True, slots=True)
class CampaignShape:
    """Timing of a campaign, in seconds (compressed time: probes every `interval`)."""

    interval: float = 1.0
    timeout: float = 1.0
    lead_in: float = 8.0
    duration: tuple[float, float] = (5.0, 11.0)
    healthy_gap: tuple[float, float] = (4.0, 9.0)
    compound_share: float = 0.2
    """Incidents that get a second cause on one of their series while they are on."""
    subtle_share: float = 0.15
    """Incidents (of faults with an intensity) whose magnitude lies near the noise floor."""
    ramp_share: float = 0.35
    """Medium to gross incidents whose magnitude steps up from the low band instead of starting there."""
    ramp_duration: tuple[float, float] = (9.0, 15.0)
    ramp_steps: tuple[int, int] = (3, 4)
    tail: float = 6.0


def _magnitude(recipe: Recipe, band: Band, centre: float, rng: random.Random) -> float | int | None:
    """A magnitude of `band`, drawn log-uniformly around `centre` (0..1) within the band."""
    if recipe.magnitude is None:
        return None
    if band == "subtle":
        low, high = recipe.subtle or recipe.magnitude
        u = centre + rng.uniform(-BAND_SPREAD, BAND_SPREAD)
    else:
        low, high = recipe.magnitude
        level = _LEVEL_BANDS.index(band)
        u = (level + centre + rng.uniform(-BAND_SPREAD, BAND_SPREAD)) / MAGNITUDE_LEVELS
    value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    if high > 1000:  # a rate in bytes per second
        return round(value)
    return round(value, 5)


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
    profile: Profile = "standard",
    band_centre: float | None = None,
) -> dict[str, Any]:
    """A balanced campaign as scenario data (write it with yaml.safe_dump; load with lab.scenario).

    Args:
        seed: drives every choice; use different seeds for train and eval.
        split: picks the vantages, targets and magnitude bands of the split.
        incidents: about how many incidents (a compound incident counts two).
        shape: timing (interval, incident durations, healthy gaps) and the shares of compound,
            subtle and ramping incidents.
        name: the scenario's name (default campaign-SPLIT-SEED, or campaign-PROFILE-SPLIT-SEED).
        profile: the environment (lab/dataset/profiles.py).
        band_centre: where in each magnitude band to draw (0..1); default: the profile's and
            split's own (BAND_CENTRES). A training campaign drawn high in every band (0.9) puts
            magnitudes above the evaluation campaigns' into training, so a model meets the regimes
            that only gross faults reach (probes timing out behind a 300 ms round trip).

    Raises:
        ValueError: the profile has no such split, or band_centre lies outside 0..1.
    """
    shape = shape or CampaignShape()
    vantage_specs, target_specs = topology(profile, split)
    centre = BAND_CENTRES[profile, split] if band_centre is None else band_centre
    if not 0.0 <= centre <= 1.0:
        raise ValueError(f"band centre {centre} is outside 0..1")
    stem = split if profile == "standard" else f"{profile}-{split}"
    rng = random.Random(f"{stem}:{seed}")
    skeleton: dict[str, Any] = {
        "name": name or f"campaign-{stem}-{seed}",
        "seed": seed,
        "vantages": vantage_specs,
        "targets": target_specs,
        "probe": {"interval": shape.interval, "timeout": shape.timeout},
        "timeline": [],
        "tail": shape.tail,
    }
    topo = Scenario.model_validate(skeleton)
    vantages = topo.vantage_names

    def plan(cause: RootCause, scope: Scope, band: Band, near: tuple[str, str] | None) -> _Planned | None:
        recipe = _pick(RECIPES[cause], scope, rng)
        if band == "subtle" and recipe.subtle is None:
            band = "low"
        magnitude = _magnitude(recipe, band, centre, rng)
        fault = parse_fault({"kind": recipe.kind, **dict(recipe.params), **_knob(recipe.kind, magnitude)})
        fitting = [t.name for t in topo.targets if fault_fits(fault, t)]
        if near is not None:
            fitting = [t for t in fitting if t == near[0]] if scope != "vantage" else fitting
        if not fitting:
            return None
        target = rng.choice(fitting) if scope != "vantage" else None
        vantage = (near[1] if near else rng.choice(vantages)) if scope != "target" else None
        entry: dict[str, Any] = {"fault": {"kind": recipe.kind, **dict(recipe.params)}, "scope": scope}
        duration = round(rng.uniform(*shape.duration), 1)
        if magnitude is not None:
            entry["magnitude"] = magnitude
            entry["band"] = band
            ramp_from = _magnitude(recipe, "low", centre, rng)
            if recipe.ramps and band in _RAMP_BANDS and rng.random() < shape.ramp_share:
                entry["ramp"] = {"from": ramp_from, "steps": rng.randint(*shape.ramp_steps)}
                duration = round(rng.uniform(*shape.ramp_duration), 1)
        if target is not None:
            entry["target"] = target
        if vantage is not None:
            entry["vantage"] = vantage
        pairs = affected_pairs(topo, fault, scope, vantage, target)
        return _Planned(entry, pairs, 0.0, duration)

    def band_of(count: int) -> Band:
        if rng.random() < shape.subtle_share:
            return "subtle"
        # Every run of four incidents of a cause visits every band (in a rotating order), so
        # small campaigns are balanced over bands as well as over scopes.
        return _LEVEL_BANDS[(count + count // MAGNITUDE_LEVELS) % MAGNITUDE_LEVELS]

    groups: list[list[_Planned]] = []
    counts = dict.fromkeys(ROOT_CAUSES, 0)
    while sum(len(g) for g in groups) < incidents:
        cause = min(ROOT_CAUSES, key=lambda c: (counts[c], ROOT_CAUSES.index(c)))
        scopes = _scopes(cause)
        scope = scopes[counts[cause] % len(scopes)]
        band = band_of(counts[cause])
        counts[cause] += 1
        first = plan(cause, scope, band, None)
        if first is None:
            continue
        group = [first]
        if rng.random() < shape.compound_share:
            other = rng.choice([c for c in ROOT_CAUSES if c != cause])
            other_scopes = _scopes(other)
            second = plan(
                other,
                rng.choice(other_scopes),
                band_of(rng.randrange(MAGNITUDE_LEVELS**2)),
                rng.choice(sorted(first.pairs)),
            )
            if second is not None:
                counts[other] += 1
                # On while the first is on: starts within it and lasts at least until a third of
                # the way through what is left of it.
                second.offset = round(first.duration * rng.uniform(0.2, 0.6), 1)
                second.duration = max(second.duration, round((first.duration - second.offset) * 0.6, 1))
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
    key = MAGNITUDE_KEYS[kind]
    return {} if key is None or magnitude is None else {key: magnitude}
