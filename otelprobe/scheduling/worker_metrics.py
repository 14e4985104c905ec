"""The supervisor's /metrics: every live worker's page, fetched concurrently, as one page.

Each worker serves its own series on an ephemeral 127.0.0.1 port (`worker.py`). A scrape of the
configured address fetches them all at once and merges them (`telemetry.prometheus_merge`), each
series labelled `worker="<i>"`; a worker that is dead or does not answer in time is left out of
that scrape, not an error. The supervisor adds `otelprobe_worker_up` and
`otelprobe_worker_restarts_total` per worker.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Final

from otelprobe.telemetry.prometheus import MetricsPageHandler
from otelprobe.telemetry.prometheus_merge import merge_pages

log = logging.getLogger(__name__)

WORKER_LABEL: Final = "worker"
FETCH_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class WorkerView:
    """What the supervisor knows of one worker at scrape time."""

    index: int
    address: tuple[str, int] | None
    """Its metrics endpoint, None while it is not running (or has none)."""
    up: bool
    restarts: int


def fetch(address: tuple[str, int], timeout_s: float = FETCH_TIMEOUT_S) -> str | None:
    """One worker's page, or None (logged at debug) if it cannot be had."""
    url = f"http://{address[0]}:{address[1]}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bytes(response.read()).decode("utf-8", errors="replace")
    except (OSError, ValueError) as exc:
        log.debug("worker metrics at %s unavailable: %s", url, exc)
        return None


def _own_page(views: list[WorkerView]) -> str:
    lines = [
        "# HELP otelprobe_worker_up 1 if the worker process is running",
        "# TYPE otelprobe_worker_up gauge",
        *(f'otelprobe_worker_up{{{WORKER_LABEL}="{v.index}"}} {int(v.up)}' for v in views),
        "# HELP otelprobe_worker_restarts_total Times the worker process was restarted after it exited",
        "# TYPE otelprobe_worker_restarts_total counter",
        *(f'otelprobe_worker_restarts_total{{{WORKER_LABEL}="{v.index}"}} {v.restarts}' for v in views),
    ]
    return "\n".join(lines) + "\n"


def render(views: list[WorkerView], pool: ThreadPoolExecutor) -> str:
    """The merged page of every reachable worker, then the supervisor's own series."""
    live = [v for v in views if v.address is not None]
    texts = pool.map(lambda v: fetch(v.address) if v.address else None, live)
    pages = [(str(v.index), text) for v, text in zip(live, texts, strict=True) if text is not None]
    return merge_pages(pages, WORKER_LABEL) + _own_page(views)


class _Handler(MetricsPageHandler):
    server: _Server

    def page(self) -> str:
        return render(self.server.views(), self.server.pool)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], views: Callable[[], list[WorkerView]], pool: ThreadPoolExecutor
    ) -> None:
        self.views = views
        self.pool = pool
        super().__init__(address, _Handler)


class WorkerMetricsServer:
    """Serves the workers' merged metrics on http://host:port/metrics from a daemon thread.

    Raises:
        OSError: the address cannot be bound.
    """

    def __init__(self, host: str, port: int, views: Callable[[], list[WorkerView]], workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="otelprobe-scrape")
        self._server = _Server((host, port), views, self._pool)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otelprobe-prometheus", daemon=True
        )
        self._thread.start()
        bound_host, bound_port = self._server.server_address[:2]
        self.address = (str(bound_host), int(bound_port))

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(1.0)
        self._pool.shutdown(wait=False, cancel_futures=True)
