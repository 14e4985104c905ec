"""Per closed slot: features, SLO burn rates, incidents and model attribution (DESIGN §2, live).

After the windower, before the emitters: `SlotProcessor.process(slot)` runs the offline
attribution code on one slot — slot_table (FeatureEngine + SLOEvaluator), IncidentTracker,
attribute.attribute — and returns what the emitters, the state store and the API need. The
FeatureEngine, the evaluator and the tracker live as long as the processor, since they hold the
per-series baselines and burn-rate history. Series beyond `max_series` are forgotten, oldest
first, and counted.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from otelprobe.attribution.attribute import Attribution, attributable, attribute
from otelprobe.attribution.features import FeatureEngine
from otelprobe.attribution.incidents import Incident, IncidentTracker, WindowIncidents
from otelprobe.attribution.model import AttributionModel
from otelprobe.attribution.records import ProbeRecord
from otelprobe.attribution.slo import SeriesWindow, SLOEvaluator
from otelprobe.attribution.slo_file import SLOFile
from otelprobe.sidecar.gc_policy import pace_for_throughput
from otelprobe.sidecar.slot_table import slot_table
from otelprobe.sidecar.window_rows import WindowRow, incident_rows
from otelprobe.sidecar.windower import Slot

if TYPE_CHECKING:
    import pandas as pd

_logger = logging.getLogger(__name__)

MAX_LINKS: Final = 5
"""Probe spans a violation links to (the evidence Jaeger leads to)."""
FIRST_CHUNK: Final = 32
MAX_CHUNK: Final = 512
"""Candidate windows are attributed in chunks that double from FIRST_CHUNK up to MAX_CHUNK, so the
first records of a slot with many violations go out after one small chunk, not after all of them;
a window's attribution does not depend on the others in its call (LightGBM predicts row by row),
so the records are the same as from one call."""

Series = tuple[str, str]


@dataclass(frozen=True, slots=True)
class SpanRef:
    trace_id: str
    span_id: str


@dataclass(frozen=True, slots=True)
class LiveModel:
    """The model in use and its registry version (None: a model file outside the registry)."""

    model: AttributionModel
    version: str | None = None


@dataclass(frozen=True, slots=True)
class LiveAttribution:
    """A §6 attribution with what the live path adds: its incident, sample probe spans and the
    registry version of the model that made it (`model` in the record is the model's label)."""

    attribution: Attribution
    incident_id: str | None
    links: tuple[SpanRef, ...]
    window_s: float
    model_version: str | None = None

    def to_json(self) -> dict[str, object]:
        record = self.attribution.to_json()
        record["model_version"] = self.model_version
        record["incident"] = self.incident_id
        record["window_s"] = self.window_s
        record["links"] = [{"trace_id": ref.trace_id, "span_id": ref.span_id} for ref in self.links]
        return record


@dataclass(frozen=True, slots=True)
class SlotResult:
    start_ns: int
    end_ns: int
    probes: int
    verdicts: tuple[SeriesWindow, ...]
    incidents: WindowIncidents
    attributions: tuple[LiveAttribution, ...]
    warm_series: int
    series: int
    took_s: float
    incident_rows: tuple[WindowRow, ...] = ()
    """Feature rows of the series in open incidents (kept for operator feedback)."""


@dataclass(slots=True)
class PipelineStats:
    slots: int = 0
    attributions: int = 0
    evicted_series: int = 0
    failed_slots: int = 0


def records_by_series(
    records: Sequence[ProbeRecord], wanted: Container[Series]
) -> dict[Series, list[ProbeRecord]]:
    """The slot's records of the `wanted` series grouped by series, once per slot (not once per
    attributed series; only the few that can be attributed: grouping all 20,000 records of a
    slot was 15 ms before its first record)."""
    grouped: dict[Series, list[ProbeRecord]] = {}
    for record in records:
        series = (record.target, record.vantage)
        if series in wanted:
            grouped.setdefault(series, []).append(record)
    return grouped


def sample_links(own: Sequence[ProbeRecord], limit: int = MAX_LINKS) -> tuple[SpanRef, ...]:
    """Up to `limit` probe root spans of one series' records: failed ones first, then slowest."""
    ranked = sorted(own, key=lambda r: (r.success, -(r.total_s if math.isfinite(r.total_s) else math.inf)))
    return tuple(SpanRef(r.trace_id, r.span_id) for r in ranked[:limit])


class SlotProcessor:
    """Turns closed slots into verdicts, incidents and attributions.

    Args:
        model: returns the model to use now (a swap takes effect at the next slot), bare or with
            its registry version (`LiveModel`).
        slos: the SLO file; None = the default objectives.
        window_s: the slot length.
        max_series: series remembered at most (baselines, burn rates).
        close_after_windows: quiet windows that close an incident.
    """

    def __init__(
        self,
        model: Callable[[], AttributionModel | LiveModel],
        slos: SLOFile | None,
        window_s: float,
        *,
        max_series: int = 10_000,
        close_after_windows: int = 2,
    ) -> None:
        pace_for_throughput()  # the collector's default pace costs a third of a slot
        self._model = model
        self.window_s = window_s
        self.engine = FeatureEngine(max_series=max_series)
        self.evaluator = SLOEvaluator(slos, window_s)
        self.tracker = IncidentTracker(close_after_windows)
        self.max_series = max_series
        self._series: OrderedDict[Series, None] = OrderedDict()  # least recently seen first
        self.stats = PipelineStats()
        self.last: SlotResult | None = None

    @property
    def slo_file(self) -> SLOFile:
        return self.evaluator.slo_file

    def process(
        self,
        slot: Slot,
        emit: Callable[[LiveAttribution], None] | None = None,
        decided: Callable[[Sequence[SeriesWindow], WindowIncidents], None] | None = None,
        verdicts_ready: Callable[[Sequence[SeriesWindow]], None] | None = None,
    ) -> SlotResult:
        """The slot's verdicts, incidents and attributions. `decided` gets the violating series'
        verdicts and the incidents once known, before any attribution; `emit` gets each
        attribution as soon as it is made (before the rest of the slot is done); `verdicts_ready`
        gets every series' verdicts after the last attribution (building 10,000 of them would
        hold back the first record)."""
        started = time.perf_counter()
        self._touch(slot.records)
        table, verdicts = slot_table(self.engine, self.evaluator, slot.start_ns, slot.records)
        window_incidents = self.tracker.update(slot.start_ns, slot.end_ns, verdicts.violating)
        if decided is not None:
            decided(verdicts.violating, window_incidents)
        attributions: list[LiveAttribution] = []
        kept: list[WindowRow] = []
        warm = 0
        if table is not None:
            warm = int(table["warm"].sum())
            by_series = _incident_of(window_incidents.open)
            violating = {window.series for window in verdicts.violating}  # every attributed one among them
            records_of: dict[Series, list[ProbeRecord]] | None = None  # grouped once something is attributed
            live = self._model()
            if not isinstance(live, LiveModel):
                live = LiveModel(live)
            for found in self._attribute(live.model, table):
                series = (found.target, found.vantage)
                if records_of is None:
                    records_of = records_by_series(slot.records, violating)
                links = sample_links(records_of.get(series, ()))
                made = LiveAttribution(found, by_series.get(series), links, self.window_s, live.version)
                attributions.append(made)
                if emit is not None:
                    emit(made)
            kept = self._keep_rows(table, by_series)  # after the records are out: only feedback reads them
        # Work no record waits for, done once they are out: every series' verdict objects, and
        # the baselines' medians this slot made stale (else the next slot works them out first).
        verdicts.materialize()
        if verdicts_ready is not None:
            verdicts_ready(verdicts)
        self.engine.baselines.refresh()
        self.stats.slots += 1
        self.stats.attributions += len(attributions)
        result = SlotResult(
            slot.start_ns,
            slot.end_ns,
            len(slot.records),
            tuple(verdicts),
            window_incidents,
            tuple(attributions),
            warm,
            len(self._series),
            time.perf_counter() - started,
            tuple(kept),
        )
        self.last = result
        return result

    def _keep_rows(self, table: pd.DataFrame, by_series: dict[Series, str]) -> list[WindowRow]:
        try:
            return incident_rows(table, by_series)
        except Exception:
            # Feedback rows are a convenience for later learning: never lose the slot over them.
            _logger.exception("keeping the feature rows of incident windows failed")
            return []

    def _attribute(self, model: AttributionModel, table: pd.DataFrame) -> Iterator[Attribution]:
        """attribute.attribute over the slot's candidate windows, chunk by chunk (FIRST_CHUNK)."""
        try:
            candidates = table[attributable(table)]
            start, size = 0, FIRST_CHUNK
            while start < len(candidates):
                yield from attribute(model, candidates.iloc[start : start + size])
                start, size = start + size, min(2 * size, MAX_CHUNK)
        except Exception:
            # A bug in one slot's attribution must not stop the sidecar: the slot's verdicts and
            # incidents still go out, and the failure is logged and counted.
            self.stats.failed_slots += 1
            _logger.exception("attribution of a window slot failed")

    def _touch(self, records: Sequence[ProbeRecord]) -> None:
        for record in records:
            series = (record.target, record.vantage)
            if series in self._series:
                self._series.move_to_end(series)
            else:
                self._series[series] = None
        while len(self._series) > self.max_series:
            series, _ = self._series.popitem(last=False)
            self._forget(series)
            self.stats.evicted_series += 1

    def _forget(self, series: Series) -> None:
        # The engine bounds its baselines itself but not its recent-symptom memory, and the
        # evaluator forgets only idle series: drop an evicted series from both here.
        self.engine.baselines.pop(series, None)
        self.engine.recent.pop(series, None)
        self.evaluator.forget(series)


def _incident_of(open_incidents: Sequence[Incident]) -> dict[Series, str]:
    found: dict[Series, str] = {}
    for incident in open_incidents:
        for member in incident.series:
            if not member.closed:
                found[(member.target, member.vantage)] = incident.id
    return found
