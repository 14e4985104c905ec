"""SLO files: which series an objective covers, the objective, and the burn-rate rules that alert on it.

Read once before detection (DESIGN §2: windows -> SLO detector -> model): `load_slo_file(path)`
parses YAML with the config loader's line-keeping parser, so every problem reads
`file:line: field: message`; `DEFAULT_SLOS` are the objectives used when no file is given
(docs/attribution.md, "SLOs and detection", says why each number is what it is).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Final, Literal, TypeVar

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from otelprobe.config import problems as _problems
from otelprobe.config import read_config_file
from otelprobe.config.document import parse
from otelprobe.errors import ConfigError, ConfigProblem
from otelprobe.settings.common import StrictModel
from otelprobe.settings.durations import Duration, parse_duration

BASELINE: Final = "baseline"
"""A latency threshold learned from the series' own healthy windows instead of a fixed one."""

_T = TypeVar("_T")
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _not_empty(items: list[_T], what: str) -> list[_T]:
    if not items:
        raise ValueError(f"give at least {what}")
    return items


def _threshold(value: object) -> object:
    if value == BASELINE:
        return value
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{exc}, or 'baseline'") from None


def _fraction(value: object) -> object:
    # "1/30" reads better than 0.0333 for the lab's compression; YAML leaves it a string.
    if isinstance(value, str) and "/" in value:
        numerator, _, denominator = value.partition("/")
        try:
            return float(numerator) / float(denominator)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"invalid fraction {value!r}: expected e.g. 1/30 or 0.5") from None
    return value


class BurnRateRule(StrictModel):
    """Alert when the error budget burns `factor` times too fast over both windows (SRE workbook ch. 5).

    The windows are written in real time; an evaluator multiplies both by its time scale.
    """

    long_s: Duration = Field(alias="long", gt=0, description="the window that proves the burn is significant")
    short_s: Duration = Field(alias="short", gt=0, description="the window that proves it is still going on")
    factor: float = Field(gt=0, description="burn rate both windows must exceed (1 = budget spent on time)")

    @model_validator(mode="after")
    def _short_within_long(self) -> BurnRateRule:
        if self.short_s > self.long_s:
            raise ValueError("short must not be longer than long")
        return self

    @property
    def label(self) -> str:
        """ "1h/5m": the rule's name in columns and attribution output."""
        return f"{format_duration(self.long_s)}/{format_duration(self.short_s)}"


WORKBOOK_RULES: Final = (
    BurnRateRule(long_s=3600, short_s=300, factor=14.4),  # 2 % of a 30-day budget in one hour
    BurnRateRule(long_s=6 * 3600, short_s=1800, factor=6),  # 5 % in six hours
    BurnRateRule(long_s=3 * 86400, short_s=6 * 3600, factor=1),  # 10 % in three days
)
"""The multi-window, multi-burn-rate rules of the SRE workbook (chapter 5, table 5-8)."""


class Selector(StrictModel):
    """Which (target, vantage) series an SLO covers: shell-style globs, any match counts.

    `tenants` selects by the prober's tenant of the target (`otelprobe.tenant`, the record's
    `tenant`); a series whose probes carry no tenant is selected only by the default `*`.
    """

    targets: list[str] = Field(["*"], description="target name globs")
    vantages: list[str] = Field(["*"], description="vantage name globs")
    tenants: list[str] = Field(["*"], description="tenant name globs")

    @field_validator("targets", "vantages", "tenants")
    @classmethod
    def _not_empty(cls, globs: list[str]) -> list[str]:
        if not globs:
            raise ValueError("give at least one name or glob ('*' selects all)")
        return globs

    @property
    def by_tenant(self) -> bool:
        """Whether the selection depends on the tenant (it is not the default `*`)."""
        return self.tenants != ["*"]

    def matches(self, target: str, vantage: str, tenant: str | None = None) -> bool:
        if self.by_tenant and (tenant is None or not any(fnmatchcase(tenant, g) for g in self.tenants)):
            return False
        return any(fnmatchcase(target, g) for g in self.targets) and any(
            fnmatchcase(vantage, g) for g in self.vantages
        )


class Availability(StrictModel):
    """Good event: a successful probe. Objective: the fraction of probes that must succeed."""

    objective: float = Field(gt=0, lt=1, description="e.g. 0.999 for 99.9 %")

    @field_validator("objective", mode="before")
    @classmethod
    def _not_a_percentage(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool) and 1 < value < 100:
            raise ValueError(f"objective is a fraction, e.g. {value / 100:g} for {value:g} %")
        return value


class Latency(StrictModel):
    """Good event: a probe that succeeded within the threshold; `percentile` % of probes must be good.

    `threshold: baseline` learns the threshold per series from its own healthy windows
    (latency_baseline.py), so one SLO fits series whose normal latencies differ 100-fold.
    """

    percentile: float = Field(gt=0, lt=100, description="e.g. 95: 95 % of probes within the threshold")
    threshold_s: Annotated[float | Literal["baseline"], BeforeValidator(_threshold)] = Field(
        alias="threshold", description="a duration ('300ms') or 'baseline'"
    )

    @property
    def objective(self) -> float:
        return self.percentile / 100

    @field_validator("threshold_s")
    @classmethod
    def _positive(cls, value: float | str) -> float | str:
        if isinstance(value, float) and value <= 0:
            raise ValueError("the threshold must be longer than 0")
        return value


class BaselineSettings(StrictModel):
    """How `threshold: baseline` is learned: slow = above max(ratio x p50, p99 + margin) of the baseline."""

    ratio: float = Field(1.1, ge=1, description="slow when above ratio x the baseline median")
    quantile: float = Field(0.99, gt=0.5, lt=1, description="the baseline's tail quantile")
    margin_s: Duration = Field(0.010, alias="margin", description="added to the tail quantile")
    min_margin_s: Duration = Field(
        0.010, alias="min_margin", description="the threshold is at least the median plus this"
    )
    outlier_ratio: float = Field(
        2.0, ge=1, description="probes above this x the median (and the threshold) are never learned"
    )
    samples: int = Field(300, ge=10, le=100_000, description="healthy probes remembered per series")
    warmup_samples: int = Field(20, ge=1, description="healthy probes needed before latency can alert")
    confirm_windows: int = Field(
        2, ge=0, le=100, description="healthy windows that must follow one before it is learned"
    )

    @model_validator(mode="after")
    def _warmup_fits(self) -> BaselineSettings:
        if self.warmup_samples > self.samples:
            raise ValueError("warmup_samples must not exceed samples")
        return self


class SLO(StrictModel):
    """One objective over a selection of series, alerted on by burn-rate rules."""

    name: str = Field(min_length=1, max_length=100, description="names the SLO in output")
    select: Selector = Selector()
    availability: Availability | None = None
    latency: Latency | None = None
    rules: list[BurnRateRule] | None = Field(None, description="this SLO's own rules instead of the file's")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError("use letters, digits, '.', '_' and '-' (it names columns and spans)")
        return name

    @field_validator("rules")
    @classmethod
    def _some_rules(cls, rules: list[BurnRateRule] | None) -> list[BurnRateRule] | None:
        return _not_empty(rules, "one rule") if rules is not None else None

    @model_validator(mode="after")
    def _one_objective(self) -> SLO:
        if (self.availability is None) == (self.latency is None):
            raise ValueError("give exactly one of availability or latency")
        return self

    @property
    def objective(self) -> float:
        return self.availability.objective if self.availability else self.latency.objective  # type: ignore[union-attr]


class SLOFile(StrictModel):
    """A whole SLO file: the SLOs, the rules they share, and how time is scaled."""

    time_scale: Annotated[float, BeforeValidator(_fraction)] = Field(
        1.0, gt=0, le=1000, description="rule windows are multiplied by this (the lab: e.g. 1/30)"
    )
    window_represents_s: Duration | None = Field(
        None, alias="window_represents", gt=0, description="instead of time_scale: one window stands for this"
    )
    rules: list[BurnRateRule] = Field(list(WORKBOOK_RULES))
    baseline: BaselineSettings = BaselineSettings()
    slos: list[SLO]

    @field_validator("rules")
    @classmethod
    def _some_rules(cls, rules: list[BurnRateRule]) -> list[BurnRateRule]:
        return _not_empty(rules, "one rule")

    @field_validator("slos")
    @classmethod
    def _unique_names(cls, slos: list[SLO]) -> list[SLO]:
        _not_empty(slos, "one SLO")
        repeated = sorted(name for name, n in Counter(s.name for s in slos).items() if n > 1)
        if repeated:
            raise ValueError(f"duplicate SLO names: {', '.join(repeated)}")
        return slos

    @model_validator(mode="after")
    def _one_scale(self) -> SLOFile:
        if self.window_represents_s is not None and "time_scale" in self.model_fields_set:
            raise ValueError("give time_scale or window_represents, not both")
        return self

    def rules_of(self, slo: SLO) -> list[BurnRateRule]:
        return slo.rules or self.rules

    def scale_for(self, window_s: float) -> float:
        """The factor rule windows are multiplied by when windows last `window_s`."""
        if self.window_represents_s is not None:
            return window_s / self.window_represents_s
        return self.time_scale


DEFAULT_SLOS: Final = SLOFile(
    window_represents_s=300,  # 1h/5m spans 12 windows and 1: a fast detector whatever the window
    rules=[WORKBOOK_RULES[0]],  # the page rule; slower ones stay on long after a short incident
    slos=[
        SLO(name="availability", availability=Availability(objective=0.995)),
        SLO(name="latency", latency=Latency(percentile=99.5, threshold_s=BASELINE)),
    ],
)
"""Objectives for every series when no SLO file is given (docs/attribution.md)."""


def format_duration(seconds: float) -> str:
    """3600 -> "1h", 300 -> "5m", 90 -> "90s", 0.25 -> "250ms": the largest unit that divides it."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        count = seconds / size
        if count >= 1 and math.isclose(count, round(count), abs_tol=1e-9):
            return f"{round(count)}{unit}"
    return f"{seconds * 1000:g}ms"


def load_slo_file(path: str | Path) -> SLOFile:
    """Load and validate an SLO file (YAML or JSON).

    Raises:
        ConfigError: with every problem found, each as `file:line: field: message`.
    """
    path = Path(path)
    return load_slo_text(read_config_file(path, "SLO file"), str(path))


def load_slo_text(text: str, filename: str = "<slo>") -> SLOFile:
    """Load an SLO file from text; `filename` names it in problems.

    Raises:
        ConfigError: with every problem found.
    """
    doc = parse(text, filename, lambda value, path, line: None, json_syntax=filename.endswith(".json"))
    if doc.data is None and doc.problems:
        raise ConfigError(doc.problems)
    if not isinstance(doc.data, dict):
        message = "an SLO file must be a mapping (slos:, rules:, ...)"
        raise ConfigError([*doc.problems, ConfigProblem(filename, 1, "", message)])
    try:
        slo_file = SLOFile.model_validate(doc.data)
    except ValidationError as exc:
        found = _problems.problems_from(exc, doc, filename, SLOFile, frozenset())
        raise ConfigError(sorted([*doc.problems, *found], key=lambda p: p.line or 0)) from None
    if doc.problems:
        raise ConfigError(doc.problems)
    return slo_file
