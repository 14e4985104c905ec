"""`otelprobe run --workers 2` as a user runs it: real processes, a loopback HTTP server counting the
requests, spans over OTLP/HTTP into a real receiver, the one /metrics endpoint, signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import pytest

from otelprobe.targets import worker_of
from tests.support.run_workers import received, roots, scrape, two_workers, wait_until, worker_pids

pytestmark = pytest.mark.timeout(180)


async def test_two_workers_probe_each_target_once_per_interval_as_one_prober(tmp_path: Path) -> None:
    names = [f"site-{i}" for i in range(6)]
    async with two_workers(tmp_path, names) as prober:
        hits, receiver, process = prober.hits, prober.receiver, prober.process
        await asyncio.sleep(1.0)
        window_start = time.monotonic()
        await asyncio.sleep(3.0)
        in_window = hits.count(window_start, window_start + 3.0)
        page = await scrape(prober.metrics_port)
    assert prober.code == 0, prober.log.read_text()[-4000:]
    served = hits.count()

    # Once per interval across the workers: 3 s / 0.5 s = 6 (+-1 for the jitter, +-1 more for a
    # busy machine's late starts), where a target probed by both workers would show about 12.
    assert all(4 <= in_window[n] <= 8 for n in names), in_window

    # Every probe the server answered became a span that reached the receiver before exit.
    spans = roots(received(receiver))
    by_target = Counter(str(s.attributes["probe.target"]) for s in spans)
    assert by_target == served, (by_target, served)

    # Each target's spans name the one worker that owns it; otherwise one prober.
    expected = {f"{socket.gethostname()}-{process.pid}/w{i}" for i in (0, 1)}
    instance_of: dict[str, set[object]] = {}
    for span in spans:
        resource = span.resource_attributes
        instance_of.setdefault(str(span.attributes["probe.target"]), set()).add(
            resource["service.instance.id"]
        )
        assert resource["service.name"] == "otelprobe"
        assert resource["otelprobe.vantage"] == spans[0].resource_attributes["otelprobe.vantage"]
    assert {n: instance_of[n] for n in names} == {
        n: {f"{socket.gethostname()}-{process.pid}/w{worker_of(n, 2)}"} for n in names
    }
    assert set().union(*instance_of.values()) == expected

    # One /metrics page: each family described once, every series labelled by its worker.
    described = re.findall(r"^# TYPE (\S+)", page, flags=re.M)
    assert len(described) == len(set(described)), page[:3000]
    for name in names:
        owners = set(
            re.findall(rf'probe_duration_seconds_count{{worker="(\d)",[^}}]*probe_target="{name}"', page)
        )
        assert owners == {str(worker_of(name, 2))}, (name, owners)
    assert 'otelprobe_worker_up{worker="0"} 1' in page and 'otelprobe_worker_up{worker="1"} 1' in page


def same_size_same_stamp_rewrite(path: Path, old: str, new: str) -> None:
    """Change the file without changing what the runtime's file watch looks at (mtime, size, inode),
    so that only SIGHUP can make the workers read it."""
    assert len(old) == len(new)
    stat = path.stat()
    text = path.read_text()
    assert old in text
    with path.open("r+", encoding="utf-8") as fh:
        fh.write(text.replace(old, new))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


async def test_a_killed_worker_comes_back_and_sighup_reaches_every_worker(tmp_path: Path) -> None:
    names = [f"svc-{i}" for i in range(4)]

    def added(port: int) -> str:
        return f'- {{name: added, kind: http, url: "http://127.0.0.1:{port}/added"}}\n'

    def placeholder(port: int) -> str:  # as long as the added target, so the file keeps its size
        return "#" + "x" * (len(added(port)) - 2) + "\n"

    async with two_workers(tmp_path, names, placeholder) as prober:
        hits, receiver, process, log = prober.hits, prober.receiver, prober.process, prober.log
        assert process.returncode is None

        # kill -9 worker 0: it is restarted and its targets are probed again.
        victim = worker_pids(process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        its_targets = [n for n in names if worker_of(n, 2) == 0]
        assert its_targets

        def back() -> bool:
            return all(hits.first_after(n, killed_at + 0.5) is not None for n in its_targets)

        await wait_until(back, 60, "worker 0's targets probed again", log)
        delay = max(hits.first_after(n, killed_at + 0.5) or 0.0 for n in its_targets) - killed_at
        print(f"worker 0's targets probed again {delay:.1f} s after kill -9")
        assert worker_pids(process.pid)[0] != victim
        page = await scrape(prober.metrics_port)
        assert 'otelprobe_worker_restarts_total{worker="0"} 1' in page, page[-800:]
        assert 'otelprobe_worker_restarts_total{worker="1"} 0' in page

        # SIGHUP: both workers reload; the added target is probed by the worker that owns it.
        same_size_same_stamp_rewrite(prober.config, placeholder(prober.port), added(prober.port))
        hup_at = time.monotonic()
        process.send_signal(signal.SIGHUP)
        await wait_until(lambda: hits.first_after("added", hup_at) is not None, 30, "the added target", log)
        await wait_until(
            lambda: all(
                f"[w{i}] otelprobe.scheduling.runtime: reload requested" in log.read_text() for i in (0, 1)
            ),
            10,
            "both workers' reload",
            log,
        )
    assert prober.code == 0, log.read_text()[-4000:]
    assert "worker 0 restarted" in log.read_text()

    owner = {
        str(s.resource_attributes["service.instance.id"])
        for s in roots(received(receiver))
        if s.attributes["probe.target"] == "added"
    }
    assert owner == {f"{socket.gethostname()}-{process.pid}/w{worker_of('added', 2)}"}
