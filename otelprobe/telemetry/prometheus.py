"""A Prometheus /metrics endpoint serving the metric store in the text exposition format.

Sits beside `metrics_otlp.py` as the other reader of `aggregation.MetricStore`. Names follow the
OpenTelemetry -> Prometheus conversion the SDK's reader used (dots to underscores, unit suffix
`_seconds` for "s", `_total` for counters, `otel_scope_*` labels, a `target_info` series with the
resource), so dashboards built on it keep working. The page is rendered in the server's thread,
chunk by chunk with pauses between chunks (see `aggregation`). Instruments without series yet are
left out, as the SDK's reader did.
"""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

from otelprobe.telemetry.aggregation import (
    HIST_BUCKETS,
    HIST_COUNT,
    HIST_SUM,
    Attrs,
    AttrValue,
    Instrument,
    MetricStore,
    State,
)

_logger = logging.getLogger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_UNIT_SUFFIXES: Final = {"s": "seconds", "ms": "milliseconds", "By": "bytes"}


def _name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def metric_name(instrument: Instrument) -> str:
    """The Prometheus name of an instrument: probe.duration (s) -> probe_duration_seconds."""
    name = _name(instrument.name)
    suffix = _UNIT_SUFFIXES.get(instrument.unit)
    if suffix and not name.endswith(suffix):
        name = f"{name}_{suffix}"
    if instrument.kind == "counter":
        name += "_total"
    return name


def _escape(value: AttrValue) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterator[tuple[str, AttrValue]] | tuple[tuple[str, AttrValue], ...]) -> str:
    return ",".join(f'{_name(key)}="{_escape(value)}"' for key, value in sorted(pairs))


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value)).replace("inf", "Inf")


class PrometheusText:
    """Renders the store (and the resource as `target_info`) in the text exposition format."""

    def __init__(self, store: MetricStore, resource: Mapping[str, AttrValue], scope: tuple[str, str]) -> None:
        self.store = store
        self._target_info = (
            "# HELP target_info Target metadata\n# TYPE target_info gauge\n"
            f"target_info{{{_labels(tuple(resource.items()))}}} 1\n"
        )
        self._scope = (("otel_scope_name", scope[0]), ("otel_scope_version", scope[1]))
        self._labels: dict[Attrs, str] = {}
        self._le: dict[str, list[str]] = {}

    def _series_labels(self, attrs: tuple[tuple[str, AttrValue], ...]) -> str:
        return _labels((*self._scope, *attrs))

    def _chunk(self, instrument: Instrument, chunk: list[tuple[Attrs, State]], now: int) -> str:
        """The lines of `chunk` (runs under the store's lock)."""
        name = metric_name(instrument)
        lines: list[str] = []
        for attrs, state in chunk:
            labels = self._labels.get(attrs)
            if labels is None:
                labels = self._labels[attrs] = self._series_labels(attrs)
            if instrument.kind != "histogram":
                value = int(state[0]) if instrument.integer else state[0]
                lines.append(f"{name}{{{labels}}} {_number(value)}\n")
                continue
            cumulative = 0
            for le, count in zip(self._les(instrument), state[HIST_BUCKETS:], strict=True):
                cumulative += int(count)
                lines.append(f"{name}_bucket{{{labels},{le}}} {cumulative}\n")
            lines.append(f"{name}_sum{{{labels}}} {_number(state[HIST_SUM])}\n")
            lines.append(f"{name}_count{{{labels}}} {int(state[HIST_COUNT])}\n")
        return "".join(lines)

    def _les(self, instrument: Instrument) -> list[str]:
        les = self._le.get(instrument.name)
        if les is None:
            les = self._le[instrument.name] = [
                *(f'le="{_number(b)}"' for b in instrument.bounds),
                'le="+Inf"',
            ]
        return les

    def render(self) -> Iterator[str]:
        """The page, in pieces (one per chunk of series)."""
        yield self._target_info
        current: Instrument | None = None
        for instrument, text in self.store.chunks(self._chunk):
            if instrument is not current:
                current, name = instrument, metric_name(instrument)
                yield f"# HELP {name} {instrument.description}\n# TYPE {name} {instrument.kind}\n"
            yield text


class MetricsPageHandler(BaseHTTPRequestHandler):
    """GET /metrics (or /): the text `page()` renders, gzipped when the scraper accepts it."""

    def page(self) -> str:
        raise NotImplementedError

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        body = self.page().encode()
        gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
        if gzipped:
            body = gzip.compress(body, compresslevel=1)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        _logger.debug("prometheus scrape: %s", format % args)


class _Handler(MetricsPageHandler):
    server: _Server

    def page(self) -> str:
        return "".join(self.server.text.render())


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], text: PrometheusText) -> None:
        self.text = text
        super().__init__(address, _Handler)


class PrometheusServer:
    """Serves `text` on http://host:port/metrics from a daemon thread until `shutdown`."""

    def __init__(self, text: PrometheusText, host: str, port: int) -> None:
        self._server = _Server((host, port), text)
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
