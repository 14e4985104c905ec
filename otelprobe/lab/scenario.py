"""Scenario files of the fault lab: a topology (vantages × targets), probe settings and a timeline
of faults, with randomization under a seed.

`load_scenario(path)` reads YAML with the config loader's machinery (every problem with file, line
and path); lab/dataset/incidents.py's `resolve(scenario)` draws the random parts into the concrete
`Incident`s that lab/dataset/runner.py injects and labels. lab/dataset/generator.py writes these
files for whole campaigns.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import Field, StringConstraints, ValidationError, ValidationInfo, model_validator

from otelprobe.causes import RootCause, Scope
from otelprobe.config import read_config_file
from otelprobe.config.document import PathKey, format_path, parse
from otelprobe.config.problems import problems_from
from otelprobe.errors import ConfigError, ConfigProblem
from otelprobe.lab.certs import LeafKind
from otelprobe.lab.faults import Fault, parse_fault
from otelprobe.settings.common import StrictModel
from otelprobe.settings.durations import Duration, Size

TargetKind = Literal["http", "https", "dns", "tcp", "tls"]
TARGET_KINDS: Final[tuple[TargetKind, ...]] = ("http", "https", "dns", "tcp", "tls")

MAGNITUDE_KEYS: Final[Mapping[str, str | None]] = {
    "dns_delay": "delay",
    "dns_servfail": "probability",
    "dns_nxdomain": "probability",
    "dns_timeout": "probability",
    "dns_truncate": "probability",
    "dns_wrong_answer": "probability",
    "network_latency": "delay",
    "packet_loss": "rate",
    "bandwidth_limit": "rate",
    "tls_delay": "delay",
    "bad_certificate": None,
    "ttfb_delay": "delay",
    "trickle_body": "rate",
    "http_5xx": "rate",
    "reset_mid_body": "probability",
    "wrong_content": "probability",
    "redirect_chain": "hops",
    "hang": "probability",
    "refused": None,
    "blackhole": None,
}
"""The one knob `magnitude` sets for each fault kind (None: the fault has no intensity)."""

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")]
"""Vantage and target names become DNS labels and namespace names: lowercase, digits, '-'."""
Number = float | int | str
Ranged = Annotated[list[Number], Field(min_length=2, max_length=2)]
DurationRange = Annotated[list[Duration], Field(min_length=2, max_length=2)]


class VantageSpec(StrictModel):
    """A vantage point: one prober in its own namespace, behind a link with a baseline."""

    name: Name
    delay_s: Duration = Field(0.0, alias="delay", description="baseline one-way delay, each direction")
    jitter_s: Duration = Field(0.0, alias="jitter", description="baseline delay spread (σ)")
    loss: float = Field(0.0, ge=0.0, lt=1.0, description="baseline share of packets lost")
    rate_bytes_per_s: Size | None = Field(None, alias="rate", gt=0, description="baseline link rate")
    resolver_delay_s: Duration = Field(
        0.0, alias="resolver_delay", description="the local resolver's usual answer time (server side)"
    )
    resolver_jitter_s: Duration = Field(
        0.0, alias="resolver_jitter", description="mean of an exponential extra: slow answers now and then"
    )


class TargetSpec(StrictModel):
    """A lab target, served inside the target namespace once per vantage (so faults can be per path)."""

    name: Name
    kind: TargetKind
    body_size: Size = Field(1024, ge=0, description="healthy HTTP body size")
    tls: bool = Field(False, description="tcp only: TLS right after connect (https and tls always)")
    cert: LeafKind = Field("valid", description="the certificate served while healthy")
    backend_delay_s: Duration = Field(0.0, alias="backend_delay", description="baseline TTFB")
    backend_jitter_s: Duration = Field(0.0, alias="backend_jitter", description="exponential spread")
    coalesce: bool = Field(False, description="HTTP headers and body in one write")
    tls_record_bytes: Size | None = Field(
        None,
        alias="tls_record",
        gt=0,
        description="largest TLS record the front writes (default: what the backend wrote in one read, "
        "up to 16 KiB a record)",
    )
    think_spike_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="share of requests the backend stalls on (unlabeled noise)"
    )
    think_spike_s: Duration = Field(
        0.2, alias="think_spike", description="a stall's mean length (drawn 0.5x to 1.5x)"
    )

    @property
    def uses_tls(self) -> bool:
        return self.kind in ("https", "tls") or (self.kind == "tcp" and self.tls)

    @property
    def uses_http(self) -> bool:
        return self.kind in ("http", "https")

    @model_validator(mode="after")
    def _knobs_fit_kind(self) -> TargetSpec:
        if self.tls and self.kind != "tcp":
            raise ValueError(f"tls: true is for tcp targets; a {self.kind} target decides TLS by its kind")
        if self.tls_record_bytes is not None and not self.uses_tls:
            raise ValueError(f"tls_record is for targets that speak TLS; {self.kind} does not")
        if self.think_spike_rate and not self.uses_http:
            raise ValueError(f"think_spike_rate is for http and https targets; {self.kind} has no backend")
        return self


class ProbeSettings(StrictModel):
    """How every vantage probes every target; time may be compressed (1 s intervals)."""

    interval_s: Duration = Field(1.0, alias="interval", gt=0)
    timeout_s: Duration = Field(1.0, alias="timeout", gt=0)
    concurrency: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> ProbeSettings:
        if self.timeout_s > self.interval_s:
            raise ValueError(f"timeout ({self.timeout_s:g}s) is longer than interval ({self.interval_s:g}s)")
        return self


Band = Literal["subtle", "low", "medium", "high", "gross"]
BANDS: Final[tuple[Band, ...]] = ("subtle", "low", "medium", "high", "gross")
"""How visible a magnitude is meant to be, from near the noise floor to gross (a label only)."""


class Ramp(StrictModel):
    """A magnitude that steps from `from` to the entry's `magnitude` over the fault's duration, in
    `steps` equal parts (geometric steps when both ends are positive): a gradual onset."""

    start: Number = Field(alias="from", description="the first step's magnitude")
    steps: int = Field(3, ge=2, le=20)


class TimelineEntry(StrictModel):
    """One fault of the timeline. `start`, `duration` and `magnitude` take a value or a [low, high]
    range drawn under the scenario's seed; an omitted target or vantage is drawn too."""

    fault: Fault
    cause: RootCause | None = Field(None, description="the label; default: the fault's root cause")
    scope: Scope | None = Field(None, description="default: vantage for link faults, target otherwise")
    vantage: Name | None = None
    target: Name | None = None
    start: Duration | DurationRange = Field(description="seconds after recording starts")
    duration: Duration | DurationRange
    magnitude: Number | Ranged | None = Field(None, description="value of the fault's main knob")
    ramp: Ramp | None = Field(None, description="step up to `magnitude` from `ramp.from`")
    band: Band | None = Field(None, description="how visible the magnitude is meant to be (a label)")

    @model_validator(mode="before")
    @classmethod
    def _magnitude_into_fault(cls, data: Any) -> Any:
        # The fault must validate on its own, so a magnitude given beside it fills its main knob
        # (the low end of a range here; `resolve` draws the real value).
        if (
            not isinstance(data, dict)
            or data.get("magnitude") is None
            or not isinstance(data.get("fault"), dict)
        ):
            return data
        key = MAGNITUDE_KEYS.get(str(data["fault"].get("kind")))
        if key is None:
            return data
        value = data["magnitude"]
        return {**data, "fault": {**data["fault"], key: value[0] if isinstance(value, list) else value}}

    @model_validator(mode="after")
    def _scope_fits_fault(self) -> TimelineEntry:
        if self.magnitude is not None and MAGNITUDE_KEYS[self.fault.kind] is None:
            raise ValueError(f"fault {self.fault.kind} has no magnitude")
        if self.ramp is not None:
            if self.magnitude is None:
                raise ValueError("a ramp steps up to the entry's magnitude; give magnitude")
            key = str(MAGNITUDE_KEYS[self.fault.kind])
            try:
                parse_fault({**self.fault.model_dump(by_alias=True), key: self.ramp.start})
            except ValidationError as exc:
                first = exc.errors()[0]["msg"]
                raise ValueError(f"ramp.from {self.ramp.start!r} is not a valid {key}: {first}") from None
        if self.fault.server == "link" and self.scope not in (None, "vantage"):
            raise ValueError(
                f"{self.fault.kind} is injected on a vantage's link, so its scope can only be vantage"
            )
        if self.scope == "vantage" and self.target is not None:
            raise ValueError("a vantage-scoped fault hits every target of its vantage; drop target")
        if self.scope == "target" and self.vantage is not None:
            raise ValueError("a target-scoped fault hits its target from every vantage; drop vantage")
        return self

    @property
    def effective_scope(self) -> Scope:
        if self.scope is not None:
            return self.scope
        return "vantage" if self.fault.server == "link" else "target"


class Scenario(StrictModel):
    """A whole scenario file."""

    name: Name = "scenario"
    seed: int = 0
    vantages: list[VantageSpec] = Field(min_length=1)
    targets: list[TargetSpec] = Field(min_length=1)
    probe: ProbeSettings = ProbeSettings()
    timeline: list[TimelineEntry] = Field(default_factory=list)
    tail_s: Duration = Field(5.0, alias="tail", ge=0, description="healthy time after the last fault")
    duration_s: Duration | None = Field(None, alias="duration", gt=0, description="total recording time")

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> Scenario:
        # The file loader reports these itself, each at its own line (`reference_problems`).
        if not (info.context or {}).get("defer_references"):
            problems = reference_problems(self)
            if problems:
                raise ValueError("; ".join(f"{format_path(path)}: {message}" for path, message in problems))
        return self

    @property
    def vantage_names(self) -> list[str]:
        return [v.name for v in self.vantages]

    def target(self, name: str) -> TargetSpec | None:
        return next((t for t in self.targets if t.name == name), None)


def reference_problems(scenario: Scenario) -> list[tuple[PathKey, str]]:
    """Names that do not exist, and faults aimed at targets that cannot take them."""
    problems: list[tuple[PathKey, str]] = []
    for kind, names in (
        ("vantages", scenario.vantage_names),
        ("targets", [t.name for t in scenario.targets]),
    ):
        for index, name in enumerate(names):
            if name in names[:index]:
                problems.append(((kind, index, "name"), f"duplicate name {name!r}"))
    for index, entry in enumerate(scenario.timeline):
        if entry.vantage is not None and entry.vantage not in scenario.vantage_names:
            known = ", ".join(scenario.vantage_names)
            problems.append(
                (("timeline", index, "vantage"), f"unknown vantage {entry.vantage!r}; known: {known}")
            )
        if entry.target is not None:
            target = scenario.target(entry.target)
            if target is None:
                known = ", ".join(t.name for t in scenario.targets)
                problems.append(
                    (("timeline", index, "target"), f"unknown target {entry.target!r}; known: {known}")
                )
            elif not fault_fits(entry.fault, target):
                message = f"a {entry.fault.kind} fault cannot hit {target.kind} target {target.name!r}"
                problems.append((("timeline", index, "target"), message))
        elif not any(fault_fits(entry.fault, t) for t in scenario.targets):
            message = f"no target of this scenario can take a {entry.fault.kind} fault"
            problems.append((("timeline", index, "fault"), message))
    return problems


def fault_fits(fault: Fault, target: TargetSpec) -> bool:
    """Whether `fault` can be injected on `target` (a TLS fault needs TLS, HTTP faults HTTP, ...)."""
    if fault.server in ("link", "dns"):
        return True
    if fault.server == "tls":
        return target.uses_tls
    if fault.server == "http":
        return target.uses_http
    return target.kind != "dns"  # ports: refused / black-holed


def load_scenario_text(text: str, filename: str = "<scenario>") -> Scenario:
    """Validate scenario YAML text.

    Raises:
        ConfigError: every problem, each with file, line and YAML path.
    """
    doc = parse(text, filename, lambda value, path, line: None)
    if doc.data is None and doc.problems:
        raise ConfigError(doc.problems)
    if not isinstance(doc.data, dict):
        raise ConfigError(
            [ConfigProblem(filename, 1, "", "a scenario must be a mapping (vantages:, targets:, ...)")]
        )
    try:
        scenario = Scenario.model_validate(doc.data, context={"defer_references": True})
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, doc, filename, Scenario, frozenset())) from None
    problems = [
        ConfigProblem(filename, _line(doc.lines, path) or 1, format_path(path), message)
        for path, message in reference_problems(scenario)
    ]
    if problems:
        raise ConfigError(problems)
    return scenario


def _line(lines: Mapping[PathKey, int], path: PathKey) -> int | None:
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (YAML or JSON).

    Raises:
        ConfigError: unreadable file, or every problem found in it.
    """
    return load_scenario_text(read_config_file(Path(path), "scenario"), str(path))
