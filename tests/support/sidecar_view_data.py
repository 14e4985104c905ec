"""Real pipeline output for the sidecar API and watch tests: SLO verdicts from the real
evaluator, incidents from the real tracker, and §6 attributions, fed into a MemoryView."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from aiohttp import web

from otelprobe.attribution.attribute import Attribution, RankedCause
from otelprobe.attribution.evidence import Evidence
from otelprobe.attribution.incidents import IncidentTracker
from otelprobe.attribution.slo import SLOEvaluator
from otelprobe.attribution.slo_file import DEFAULT_SLOS
from otelprobe.causes import ROOT_CAUSES, SCOPES
from otelprobe.sidecar.api import build_api_app
from otelprobe.sidecar.view import MemoryView

WINDOW_S = 2.0
WINDOW_NS = 2_000_000_000
T0_NS = 1_795_000_000_000_000_000  # 2026-11-18, a multiple of the window
TARGETS = ("api", "web", "db")
VANTAGES = ("eu-1", "us-1")
FAULTY = (("api", "eu-1"), ("api", "us-1"))  # one target seen failing from both vantages


@dataclass(frozen=True)
class Outcome:
    target: str
    vantage: str
    total_s: float
    success: bool


def ranked(top: str, scope: str, top_score: float = 0.82) -> tuple[RankedCause, ...]:
    """All eleven causes, `top` first with `top_score`, the rest sharing what is left."""
    rest = [c for c in ROOT_CAUSES if c != top]
    share = (1.0 - top_score) / len(rest)
    causes = [
        RankedCause(
            top,
            scope,
            top_score,
            {s: (0.9 if s == scope else 0.05) for s in SCOPES},
            (
                Evidence("ttfb_p50_z", 1.7, 41.0, "http.ttfb median 41 robust SDs above its baseline"),
                Evidence("fail_share", 0.4, 0.5, "half the probes failed"),
            ),
        )
    ]
    causes += [RankedCause(c, "path", share, {s: 1 / 3 for s in SCOPES}, ()) for c in rest]
    return tuple(causes)


def attribution(target: str, vantage: str, start_ns: int, top: str = "backend_slow") -> Attribution:
    return Attribution(
        slo="availability",
        slos=("availability",),
        target=target,
        vantage=vantage,
        window_start_ns=start_ns,
        window_end_ns=start_ns + WINDOW_NS,
        probes=4,
        failed=2,
        causes=ranked(top, "target"),
        model="train-101@0123456789ab",
    )


def fill(
    view: MemoryView,
    healthy: int = 4,
    faulty: int = 4,
    recovered: int = 3,
    top: str = "backend_slow",
    t0_ns: int = T0_NS,
) -> None:
    """Healthy windows for every series, then FAULTY series failing every probe, then healthy
    again until the incident closes (recovered >= 2) or stays open (recovered < 2)."""
    evaluator = SLOEvaluator(DEFAULT_SLOS, WINDOW_S)
    tracker = IncidentTracker(close_after_windows=2)
    view.set_slo_file(DEFAULT_SLOS)
    view.health_state.window_s = WINDOW_S
    view.health_state.model_version = "train-101@0123456789ab"
    view.health_state.model_path = "models/default"
    for index in range(healthy + faulty + recovered):
        start_ns = t0_ns + index * WINDOW_NS
        failing = healthy <= index < healthy + faulty
        outcomes = [
            Outcome(t, v, 0.05 + 0.001 * i, not (failing and (t, v) in FAULTY))
            for t in TARGETS
            for v in VANTAGES
            for i in range(4)
        ]
        verdicts = evaluator.evaluate(start_ns, outcomes)
        incidents = tracker.update(start_ns, start_ns + WINDOW_NS, verdicts)
        found = [attribution(w.target, w.vantage, start_ns, top) for w in verdicts if w.violating and failing]
        view.observe_window(incidents, verdicts, found)
    state = view.health_state
    state.series = len(TARGETS) * len(VANTAGES)
    state.warm_series = state.series
    state.counters.update(received_spans=1234, received_requests=56, records=264, late=2, duplicate=1)


class ThreadedAPI:
    """The real API app on a loopback port, served by its own event loop in a thread, for
    synchronous clients (schemathesis, urllib)."""

    def __init__(self, view: MemoryView, token: str | None = None) -> None:
        self.view = view
        self.token = token
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedAPI:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(build_api_app(self.view, token=self.token), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def __exit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
