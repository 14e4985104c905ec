"""Lab profiles: the environments campaigns are recorded in (vantages, targets, server behaviour).

A profile is what differs between real deployments and stays fixed during a campaign: path RTTs,
jitter and background loss per vantage, how fast and how jittery each vantage's local resolver is,
whether servers write headers first or coalesce them with the body, how the TLS front cuts
records, body sizes (slow start shows on the larger ones) and how often backends stall for no
labeled reason. lab/dataset/generator.py draws campaigns on one profile and split:

- `standard` / `train` and `standard` / `eval`: the same kind of environment with different
  vantages (names and RTTs), targets (names, body sizes, server behaviour), seeds and magnitudes;
- `shifted` / `eval`: another environment (other RTTs, loss, resolver and server behaviour,
  unseen names), for checking that a model did not learn its training lab's quirks;
- `wide` / `train`: a second training environment unlike the standard one (a near-loopback and a
  40 ms path, jittery resolvers, slow and spiky backends, large bodies), so a model trained on
  both sees mechanisms under two sets of quirks (domain randomisation), not one lab's.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal

Profile = Literal["standard", "shifted", "wide"]
PROFILES: Final[tuple[Profile, ...]] = ("standard", "shifted", "wide")
Split = Literal["train", "eval"]
SPLITS: Final[tuple[Split, ...]] = ("train", "eval")

KiB: Final = 1024


def _vantage(name: str, delay_ms: float, jitter_ms: float, **extra: Any) -> dict[str, Any]:
    resolver = extra.pop("resolver", (0.0, 0.0))
    spec = {"name": name, "delay": delay_ms / 1000, "jitter": jitter_ms / 1000, **extra}
    if resolver != (0.0, 0.0):
        spec["resolver_delay"], spec["resolver_jitter"] = resolver[0] / 1000, resolver[1] / 1000
    return spec


_STANDARD_TRAIN_VANTAGES: Final = [
    _vantage("eu-1", 1, 0.2, resolver=(0.5, 0.5)),
    _vantage("us-1", 6, 0.6, loss=0.0005, resolver=(1.0, 1.0)),
    _vantage("ap-1", 14, 1.5, resolver=(0.8, 2.0)),
    _vantage("af-1", 30, 3, loss=0.002, resolver=(2.0, 1.0)),
]
_STANDARD_EVAL_VANTAGES: Final = [
    _vantage("eu-2", 2, 0.3, resolver=(0.7, 0.8)),
    _vantage("us-2", 10, 1, loss=0.001, resolver=(1.5, 1.0)),
    _vantage("sa-2", 24, 2.5, loss=0.001, resolver=(1.0, 2.5)),
]
_SHIFTED_VANTAGES: Final = [
    # Relatively more jitter, a lossier middle path, and slow, jittery resolvers.
    _vantage("lan-x", 0.5, 0.3, resolver=(6.0, 10.0)),
    _vantage("metro-x", 20, 5, loss=0.004, resolver=(12.0, 15.0)),
    _vantage("intl-x", 60, 8, loss=0.0005, resolver=(4.0, 20.0)),
]

_WIDE_TRAIN_VANTAGES: Final = [
    _vantage("eu-3", 0.3, 0.1, resolver=(2.0, 8.0)),
    _vantage("oc-3", 3, 1, resolver=(3.0, 3.0)),
    _vantage("as-3", 12, 2, loss=0.003, resolver=(0.5, 0.5)),
    _vantage("sa-3", 40, 4, loss=0.001, resolver=(8.0, 6.0)),
]

# Standard targets: small bodies behind headers-first servers, large ones coalesced or in small
# TLS records; shifted targets flip that and use other sizes and slower backends.
_STANDARD_TRAIN_TARGETS: Final[list[dict[str, Any]]] = [
    {"name": "web-a", "kind": "http", "body_size": 2 * KiB, "backend_delay": 0.002, "backend_jitter": 0.001,
     "think_spike_rate": 0.01, "think_spike": 0.25},
    {"name": "feed-a", "kind": "http", "body_size": 160 * KiB, "coalesce": True, "backend_delay": 0.001,
     "backend_jitter": 0.001},
    {"name": "api-a", "kind": "https", "body_size": 12 * KiB, "backend_delay": 0.004, "backend_jitter": 0.002,
     "think_spike_rate": 0.02, "think_spike": 0.15},
    {"name": "static-a", "kind": "https", "body_size": 96 * KiB, "coalesce": True, "tls_record": 1400},
    {"name": "dns-a", "kind": "dns"},
    {"name": "db-a", "kind": "tcp"},
    {"name": "auth-a", "kind": "tls"},
]  # fmt: skip
_STANDARD_EVAL_TARGETS: Final[list[dict[str, Any]]] = [
    {"name": "shop-b", "kind": "http", "body_size": 24 * KiB, "backend_delay": 0.003, "backend_jitter": 0.002,
     "think_spike_rate": 0.015, "think_spike": 0.2},
    {"name": "cdn-b", "kind": "https", "body_size": 64 * KiB, "coalesce": True},
    {"name": "pay-b", "kind": "https", "body_size": 6 * KiB, "tls_record": 1400, "backend_delay": 0.006,
     "backend_jitter": 0.003, "think_spike_rate": 0.02, "think_spike": 0.3},
    {"name": "ns-b", "kind": "dns"},
    {"name": "cache-b", "kind": "tcp", "tls": True},
    {"name": "sso-b", "kind": "tls"},
]  # fmt: skip
_SHIFTED_TARGETS: Final[list[dict[str, Any]]] = [
    {"name": "store-x", "kind": "http", "body_size": 48 * KiB, "coalesce": True, "backend_delay": 0.008,
     "backend_jitter": 0.006, "think_spike_rate": 0.04, "think_spike": 0.12},
    {"name": "media-x", "kind": "https", "body_size": 28 * KiB, "tls_record": 4096, "backend_delay": 0.002,
     "backend_jitter": 0.001},
    {"name": "login-x", "kind": "https", "body_size": 3 * KiB, "coalesce": True, "backend_delay": 0.015,
     "backend_jitter": 0.01, "think_spike_rate": 0.03, "think_spike": 0.4},
    {"name": "resolve-x", "kind": "dns"},
    {"name": "queue-x", "kind": "tcp"},
    {"name": "vault-x", "kind": "tls"},
]  # fmt: skip

_WIDE_TRAIN_TARGETS: Final[list[dict[str, Any]]] = [
    {"name": "news-c", "kind": "http", "body_size": 8 * KiB, "coalesce": True, "backend_delay": 0.02,
     "backend_jitter": 0.01, "think_spike_rate": 0.03, "think_spike": 0.5},
    {"name": "img-c", "kind": "https", "body_size": 200 * KiB, "tls_record": 1400, "backend_delay": 0.001,
     "backend_jitter": 0.001},
    {"name": "acct-c", "kind": "https", "body_size": 1 * KiB, "coalesce": True, "backend_delay": 0.03,
     "backend_jitter": 0.02, "think_spike_rate": 0.02, "think_spike": 0.2},
    {"name": "blob-c", "kind": "http", "body_size": 120 * KiB, "backend_delay": 0.005,
     "backend_jitter": 0.003},
    {"name": "zone-c", "kind": "dns"},
    {"name": "mq-c", "kind": "tcp", "tls": True},
    {"name": "idp-c", "kind": "tls"},
]  # fmt: skip

TOPOLOGIES: Final[Mapping[tuple[Profile, Split], tuple[list[dict[str, Any]], list[dict[str, Any]]]]] = (
    MappingProxyType(
        {
            ("standard", "train"): (_STANDARD_TRAIN_VANTAGES, _STANDARD_TRAIN_TARGETS),
            ("standard", "eval"): (_STANDARD_EVAL_VANTAGES, _STANDARD_EVAL_TARGETS),
            ("shifted", "eval"): (_SHIFTED_VANTAGES, _SHIFTED_TARGETS),
            ("wide", "train"): (_WIDE_TRAIN_VANTAGES, _WIDE_TRAIN_TARGETS),
        }
    )
)
"""(vantages, targets) as scenario data, for every profile and split there is."""

BAND_CENTRES: Final[Mapping[tuple[Profile, Split], float]] = MappingProxyType(
    {
        ("standard", "train"): 0.25,
        ("standard", "eval"): 0.75,
        ("shifted", "eval"): 0.5,
        ("wide", "train"): 0.05,
    }
)
"""Where in each magnitude band a campaign draws (± BAND_SPREAD): no two share a magnitude."""
BAND_SPREAD: Final = 0.11


def topology(profile: Profile, split: Split) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Copies of the (vantages, targets) of `profile` and `split`.

    Raises:
        ValueError: the profile has no such split (shifted is for evaluation only).
    """
    if (profile, split) not in TOPOLOGIES:
        have = ", ".join(s for p, s in TOPOLOGIES if p == profile)
        raise ValueError(f"profile {profile!r} has no {split} split (it has: {have})")
    vantages, targets = TOPOLOGIES[profile, split]
    return [dict(v) for v in vantages], [dict(t) for t in targets]
