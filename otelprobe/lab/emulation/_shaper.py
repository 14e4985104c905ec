"""The per-direction link model: loss, a token-bucket bottleneck with a bounded queue, then delay.

Pure timing arithmetic on packets handed in with their arrival time; `_forwarder.py` moves the
bytes between TUN devices and asks this model when each packet may leave. Kept free of I/O so the
model can be unit-tested without root.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from otelprobe.lab.emulation.link import LinkParams, LinkStats

_NS: Final = 1_000_000_000
_LATENESS_WINDOW: Final = 2048


@dataclass(order=True, slots=True)
class _Packet:
    release_ns: int
    seq: int
    arrival_ns: int = field(compare=False)
    departure_ns: int = field(compare=False)  # leaves the bottleneck (before propagation delay)
    data: bytes = field(compare=False)


class DirectionShaper:
    """One direction of one link: decides which packets drop and when the others are released."""

    def __init__(self, params: LinkParams, rng: random.Random | None = None) -> None:
        self.params = params
        self._rng = rng or random.Random()
        self._heap: list[_Packet] = []
        self._bottleneck: deque[tuple[int, int]] = deque()  # (departure_ns, size) still queued
        self._queued_bytes = 0
        self._tat_ns = 0  # GCRA theoretical arrival time of the token bucket
        self._last_release_ns = 0
        self._seq = 0
        self._bad = False  # Gilbert loss state
        self.stats = LinkStats()
        self._lateness_ns: deque[int] = deque(maxlen=_LATENESS_WINDOW)
        self._delay_ns: deque[int] = deque(maxlen=_LATENESS_WINDOW)

    # -- ingress ---------------------------------------------------------------------------------

    def offer(self, data: bytes, now_ns: int) -> bool:
        """Accept a packet that arrived at `now_ns`; False if it was dropped (loss or full queue)."""
        self.stats.packets_in += 1
        self.stats.bytes_in += len(data)
        if self._lost():
            self.stats.dropped_loss += 1
            return False
        departure = self._shape(len(data), now_ns)
        if departure is None:
            self.stats.dropped_queue += 1
            return False
        self._seq += 1
        pkt = _Packet(0, self._seq, now_ns, departure, data)
        pkt.release_ns = self._release_time(departure, now_ns)
        heapq.heappush(self._heap, pkt)
        return True

    def _lost(self) -> bool:
        p = self.params
        if p.loss <= 0.0:
            return False
        if p.loss >= 1.0:
            return True
        if p.loss_burst <= 1.0:
            return self._rng.random() < p.loss
        # Gilbert model: stay bad with 1 - 1/burst, so bad runs average `loss_burst` packets and
        # the stationary share of bad packets is `loss` (go_bad clamps only for loss near 1).
        leave_bad = 1.0 / p.loss_burst
        go_bad = min(1.0, p.loss * leave_bad / (1.0 - p.loss))
        self._bad = self._rng.random() >= leave_bad if self._bad else self._rng.random() < go_bad
        return self._bad

    def _shape(self, size: int, now_ns: int, *, bounded: bool = True) -> int | None:
        """Departure time from the bottleneck, or None when its queue is full (drop-tail)."""
        rate = self.params.rate_bps
        if rate is None or rate <= 0:
            return now_ns
        while self._bottleneck and self._bottleneck[0][0] <= now_ns:
            self._queued_bytes -= self._bottleneck.popleft()[1]
        if bounded and self._bottleneck and self._queued_bytes + size > self.params.queue_bytes:
            return None
        # GCRA shaping: a packet may leave once the bucket holds `size` tokens; `burst_bytes`
        # of credit let a burst through at line speed after an idle period.
        cost_ns = size * 8 * _NS // int(rate)
        tolerance_ns = self.params.burst_bytes * 8 * _NS // int(rate)
        departure = max(now_ns, self._tat_ns - tolerance_ns)
        self._tat_ns = max(self._tat_ns, departure) + cost_ns
        if departure > now_ns:
            self._bottleneck.append((departure, size))
            self._queued_bytes += size
        return departure

    def _release_time(self, departure_ns: int, now_ns: int) -> int:
        p = self.params
        delay = p.delay_s
        if p.jitter_s > 0:
            if p.jitter_dist == "uniform":
                delay += self._rng.uniform(-p.jitter_s, p.jitter_s)
            else:
                delay += self._rng.gauss(0.0, p.jitter_s)
        release = departure_ns + max(0, int(delay * _NS))
        if not p.reorder:
            # A real wire keeps order: a packet never overtakes the one before it.
            release = max(release, self._last_release_ns)
        self._last_release_ns = max(self._last_release_ns, release)
        return max(release, now_ns)

    # -- egress ----------------------------------------------------------------------------------

    def next_release_ns(self) -> int | None:
        return self._heap[0].release_ns if self._heap else None

    def pop_due(self, now_ns: int) -> list[bytes]:
        """Packets whose release time has come, in release order; records achieved timing."""
        out: list[bytes] = []
        heap = self._heap
        while heap and heap[0].release_ns <= now_ns:
            pkt = heapq.heappop(heap)
            out.append(pkt.data)
            self._lateness_ns.append(now_ns - pkt.release_ns)
            self._delay_ns.append(now_ns - pkt.arrival_ns)
        self.stats.packets_out += len(out)
        self.stats.bytes_out += sum(len(d) for d in out)
        return out

    # -- control ---------------------------------------------------------------------------------

    def configure(self, params: LinkParams, now_ns: int, *, retime: bool = True) -> None:
        """Apply new settings; with `retime`, packets already queued are re-timed under them.

        Without re-timing, packets queued under a long delay would hold back (order is kept) the
        first packets sent after the delay was lowered (LAB-NOTES pitfall 6). Re-timing replays the
        queued packets, in arrival order, as if the new settings had applied when they arrived,
        never releasing one before `now_ns`.
        """
        self.params = params
        self._bad = False
        if not retime or not self._heap:
            if not self._heap:
                self._last_release_ns = 0
            return
        queued = sorted(self._heap, key=lambda pkt: pkt.seq)
        self._heap = []
        self._bottleneck.clear()
        self._queued_bytes = 0
        self._tat_ns = queued[0].arrival_ns
        self._last_release_ns = 0
        for pkt in queued:
            # Already accepted packets are never dropped by a re-time, hence unbounded.
            departure = self._shape(len(pkt.data), pkt.arrival_ns, bounded=False)
            assert departure is not None
            pkt.departure_ns = departure
            pkt.release_ns = self._release_time(departure, now_ns)
            heapq.heappush(self._heap, pkt)
        while self._bottleneck and self._bottleneck[0][0] <= now_ns:
            self._queued_bytes -= self._bottleneck.popleft()[1]

    def snapshot(self) -> LinkStats:
        """Counters plus achieved-delay and lateness quantiles over the last packets."""
        stats = LinkStats(**{**self.stats.as_dict(), "queued": len(self._heap)})
        delays = sorted(self._delay_ns)
        late = sorted(self._lateness_ns)
        if delays:
            stats.delay_p50_s = delays[len(delays) // 2] / _NS
            stats.delay_p99_s = delays[min(len(delays) - 1, int(len(delays) * 0.99))] / _NS
        if late:
            stats.lateness_mean_s = sum(late) / len(late) / _NS
            stats.lateness_p99_s = late[min(len(late) - 1, int(len(late) * 0.99))] / _NS
        return stats

    def reset_stats(self) -> None:
        self.stats = LinkStats()
        self._lateness_ns.clear()
        self._delay_ns.clear()
