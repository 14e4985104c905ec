"""The arithmetic of `--shard k/M` with `--workers N`: replica k of M keeps exactly the targets
`shard_of(name, M) == k` (whatever its worker count), and worker i of N of that replica probes
those with `worker_of(name, N) == i`."""

from __future__ import annotations

from collections import Counter

from otelprobe.targets import shard_of, worker_of

NAMES = [f"target-{i}" for i in range(3000)]


def test_every_target_is_probed_by_exactly_one_worker_of_one_replica() -> None:
    for replicas, workers in ((1, 2), (2, 2), (3, 2), (2, 4), (1, 1)):
        owners = Counter((shard_of(name, replicas), worker_of(name, workers)) for name in NAMES)
        assert sum(owners.values()) == len(NAMES)
        # Each (replica, worker) gets its fair share: the two hashes are independent, so replica
        # k < N does not hand everything to worker k.
        fair = len(NAMES) / (replicas * workers)
        assert len(owners) == replicas * workers
        assert all(0.8 * fair <= n <= 1.2 * fair for n in owners.values()), owners


def test_a_replica_keeps_its_share_whatever_its_worker_count() -> None:
    share = {n for n in NAMES if shard_of(n, 3) == 1}
    for workers in (1, 2, 3, 8):
        union = {
            n for i in range(workers) for n in NAMES if shard_of(n, 3) == 1 and worker_of(n, workers) == i
        }
        assert union == share


def test_going_from_two_workers_to_three_moves_only_the_new_workers_share() -> None:
    moved = sum(worker_of(n, 2) != worker_of(n, 3) for n in NAMES)
    assert all(worker_of(n, 3) == 2 for n in NAMES if worker_of(n, 2) != worker_of(n, 3))
    assert 0.25 * len(NAMES) <= moved <= 0.42 * len(NAMES)
