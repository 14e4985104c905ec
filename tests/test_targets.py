"""Sharding targets across prober replicas and spreading them over their interval."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from otelprobe.targets import Shard, parse_shard, select, shard_of, spread_offset

NAMES = [f"svc-{i:05d}.example" for i in range(10_000)]


@dataclass(frozen=True)
class T:
    name: str


def test_parse_shard() -> None:
    assert parse_shard("2/5") == Shard(2, 5)
    assert parse_shard(" 0/1 ") == Shard(0, 1)
    assert str(parse_shard("2/5")) == "2/5"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("5/5", "0-based: 0..4"),
        ("1", "INDEX/COUNT"),
        ("a/3", "INDEX/COUNT"),
        ("0/0", "at least 1"),
        ("-1/3", "INDEX/COUNT"),
    ],
)
def test_parse_shard_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_shard(text)


def test_five_replicas_split_evenly() -> None:
    counts = Counter(shard_of(name, 5) for name in NAMES)
    assert set(counts) == set(range(5))
    for replica, n in counts.items():
        # 2000 expected each; binomial sd is 40, so 5% (100) is a 2.5-sigma band.
        assert abs(n - 2000) <= 100, (replica, n)


def test_growing_from_five_to_six_replicas_moves_about_one_sixth() -> None:
    moved = [name for name in NAMES if shard_of(name, 5) != shard_of(name, 6)]
    assert 0.15 <= len(moved) / len(NAMES) <= 0.185  # 1/6 = 0.1667
    # Everything that moved went to the new replica; no target shuffles between old ones.
    assert {shard_of(name, 6) for name in moved} == {5}


def test_select_partitions_targets_and_keeps_order() -> None:
    targets = [T(name) for name in NAMES[:500]]
    shards = [select(targets, i, 3) for i in range(3)]
    assert sorted(t.name for s in shards for t in s) == sorted(t.name for t in targets)
    for s in shards:
        assert s == [t for t in targets if t in s]
    assert select(targets, 0, 1) == targets
    with pytest.raises(ValueError):
        select(targets, 3, 3)


def test_deterministic_values() -> None:
    # Pinned so a change of hash function (which would reshuffle every fleet) fails loudly.
    assert PINNED == {name: shard_of(name, 7) for name in PINNED}


def test_spread_offset() -> None:
    offsets = [spread_offset(name, 30.0) for name in NAMES[:2000]]
    assert all(0.0 <= o < 30.0 for o in offsets)
    assert spread_offset("api", 30.0) == spread_offset("api", 30.0)
    assert spread_offset("api", 60.0) == pytest.approx(2 * spread_offset("api", 30.0))
    # Roughly uniform: each 3 s bucket holds about a tenth of the targets.
    buckets = Counter(int(o // 3.0) for o in offsets)
    assert all(150 <= buckets[b] <= 250 for b in range(10)), buckets
    assert spread_offset("api", 0.0) == 0.0


PINNED: dict[str, int] = {"api": 6, "web": 5, "db-primary": 1, "checkout.example.com": 1, "a": 0, "b": 1}
