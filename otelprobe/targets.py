"""Which replica probes which target, and when within its interval: consistent hashing of target names.

Sits between config loading and the scheduler (DESIGN §8): each prober replica knows its shard
("i/n") and keeps the targets whose name hashes to it; the scheduler uses `spread_offset` so that
targets with the same interval do not all fire at the same instant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

_HASH_BYTES: Final = 8
_HASH_SPACE: Final = float(1 << (8 * _HASH_BYTES))
# Domain separation, so the shard hash and the phase hash of the same name are unrelated.
_SHARD_KEY: Final = b"otelprobe.shard"
_SPREAD_KEY: Final = b"otelprobe.spread"
# The split of one replica's share over its worker processes (`otelprobe run --workers`): its own
# key, so that it is independent of the replica split (with the same key, replica k of M would
# hand every target to worker k whenever k < N).
_WORKER_KEY: Final = b"otelprobe.worker"


class Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


@dataclass(frozen=True, slots=True)
class Shard:
    """Replica `index` (0-based, like a StatefulSet ordinal) of `count` replicas."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"shard count must be at least 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"shard index {self.index} is out of range for {self.count} replicas "
                f"(indexes are 0-based: 0..{self.count - 1})"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """Parse "i/n" (0-based index i of n replicas).

    Raises:
        ValueError: the text is not "i/n" with 0 <= i < n.
    """
    index_text, sep, count_text = text.strip().partition("/")
    if not sep or not index_text.strip().isdigit() or not count_text.strip().isdigit():
        raise ValueError(f"invalid shard {text!r}: expected 'INDEX/COUNT', e.g. '0/3'")
    return Shard(int(index_text), int(count_text))


def _hash64(key: bytes, *parts: str) -> int:
    digest = hashlib.blake2b(digest_size=_HASH_BYTES, key=key)
    for part in parts:
        # Length-prefix each part so ("a", "bc") and ("ab", "c") never collide.
        data = part.encode()
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    return int.from_bytes(digest.digest(), "big")


def shard_of(name: str, count: int) -> int:
    """The replica (0..count-1) that owns target `name`.

    Rendezvous (highest-random-weight) hashing: every replica gets a stable pseudo-random weight
    per name and the highest wins. Targets spread evenly, and going from n to n+1 replicas moves
    only the ~1/(n+1) of targets that the new replica wins; nothing else moves.
    """
    if count < 1:
        raise ValueError(f"shard count must be at least 1, got {count}")
    if count == 1:
        return 0
    return max(range(count), key=lambda replica: _hash64(_SHARD_KEY, str(replica), name))


def worker_of(name: str, count: int) -> int:
    """The worker process (0..count-1) of one replica that probes target `name`.

    The same rendezvous hashing as `shard_of` under its own key: a replica keeps its share
    whatever its worker count, and each of its N workers gets ~1/N of that share.
    """
    if count < 1:
        raise ValueError(f"worker count must be at least 1, got {count}")
    if count == 1:
        return 0
    return max(range(count), key=lambda worker: _hash64(_WORKER_KEY, str(worker), name))


def select(targets: Iterable[T], index: int, count: int) -> list[T]:
    """The targets replica `index` of `count` probes, in their original order."""
    Shard(index, count)  # validates the pair
    return [target for target in targets if shard_of(target.name, count) == index]


def spread_offset(name: str, interval_s: float) -> float:
    """A stable phase in [0, interval_s) for target `name`.

    The scheduler starts a target's first probe this long after start-up, so targets are spread
    evenly over their interval and a restart keeps each target's rhythm.
    """
    if interval_s <= 0:
        return 0.0
    return _hash64(_SPREAD_KEY, name) / _HASH_SPACE * interval_s
