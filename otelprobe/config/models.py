"""The top-level config model: who is probing (vantage, shard), defaults, telemetry, and the targets.

Validated by pydantic after config/__init__.py has parsed the file and substituted references;
each target is one member of the `ProbeConfig` union from probes/__init__.py, chosen by `kind`.
"""

from __future__ import annotations

import socket
from collections import Counter
from functools import cache
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from otelprobe.config.telemetry import TelemetryConfig
from otelprobe.config.tenants import SchedulerConfig, TenantConfig
from otelprobe.probes import ProbeConfig, config_types
from otelprobe.settings.common import IPFamily, ProbeConfigBase, ResolverConfig, RetryPolicy, StrictModel
from otelprobe.settings.common import TLSClientConfig as TLSClientConfig
from otelprobe.settings.durations import Duration
from otelprobe.targets import Shard, parse_shard

DUPLICATE_TARGET_NAME = "duplicate_target_name"
"""pydantic error type of duplicate target names (the loader reports them itself, with lines)."""


def _shard(value: object) -> object:
    return parse_shard(value) if isinstance(value, str) else value


class Defaults(StrictModel):
    """Base fields merged into every target; a target's own value wins, mappings merge by key."""

    interval_s: Duration | None = Field(None, alias="interval", gt=0)
    jitter_s: Duration | None = Field(None, alias="jitter")
    timeout_s: Duration | None = Field(None, alias="timeout", gt=0)
    retries: RetryPolicy | None = None
    ip: IPFamily | None = None
    resolver: ResolverConfig | None = None
    labels: dict[str, str] | None = None
    failure_threshold: int | None = Field(None, ge=1)
    tls: TLSClientConfig | None = Field(
        None, description="for the targets that speak TLS; never turns TLS on (tcp, grpc)"
    )


class Config(StrictModel):
    """A whole otelprobe config file."""

    vantage: str = Field(default_factory=socket.gethostname, min_length=1, description="region / vantage")
    service_name: str = Field("otelprobe", min_length=1, description="same as telemetry.service_name")
    concurrency: int = Field(256, ge=1, description="max probes in flight")
    shard: Annotated[Shard | None, BeforeValidator(_shard)] = Field(
        None, description="'INDEX/COUNT': probe only this replica's share of the targets"
    )
    defaults: Defaults = Defaults()
    telemetry: TelemetryConfig = TelemetryConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    tenants: dict[str, TenantConfig] | None = Field(
        None, description="tenant name -> its quota, rate budget and weight; none = one shared bound"
    )
    targets: list[ProbeConfig] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        return prepare(data)

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        counts = Counter(target.name for target in self.targets)
        duplicates = sorted(name for name, n in counts.items() if n > 1)
        if duplicates:
            raise PydanticCustomError(
                DUPLICATE_TARGET_NAME, "duplicate target names: {names}", {"names": ", ".join(duplicates)}
            )
        return self


def prepare(data: Any) -> Any:
    """The file's data as the models see it: `x-` keys dropped, defaults merged into targets."""
    if not isinstance(data, dict):
        return data
    # Top-level `x-` keys are the file's own (anchors to reuse), as in docker compose.
    data = {key: value for key, value in data.items() if not str(key).startswith("x-")}
    _sync_service_name(data)
    defaults = data.get("defaults")
    targets = data.get("targets")
    if isinstance(defaults, dict) and isinstance(targets, list):
        models = config_types()
        data["targets"] = [merge_defaults(defaults, t, models) if isinstance(t, dict) else t for t in targets]
    return data


def _sync_service_name(data: dict[str, Any]) -> None:
    # `service_name` is a shorthand for `telemetry.service_name`; both may be given if they agree.
    telemetry = data.get("telemetry")
    top = data.get("service_name")
    nested = telemetry.get("service_name") if isinstance(telemetry, dict) else None
    if top is not None and nested is not None and top != nested:
        raise PydanticCustomError(
            "service_name_conflict",
            "service_name {top!r} and telemetry.service_name {nested!r} disagree; give one of them",
            {"top": top, "nested": nested},
        )
    if top is not None and nested is None and (telemetry is None or isinstance(telemetry, dict)):
        data["telemetry"] = {**(telemetry or {}), "service_name": top}
    elif nested is not None and top is None:
        data["service_name"] = nested


@cache
def _keys(model: type[ProbeConfigBase]) -> frozenset[str]:
    """The keys a target of this kind is written with (aliases where a field has one)."""
    return frozenset(info.alias or name for name, info in model.model_fields.items())


def merge_defaults(
    defaults: dict[str, Any], target: dict[str, Any], models: dict[str, type[ProbeConfigBase]] | None = None
) -> dict[str, Any]:
    """`target` with `defaults` filled in: the target's values win, mappings merge key by key.

    A default reaches a target whose kind has that key (not tls for an icmp target), and that
    its kind takes (`takes_default`: a tcp or grpc target only takes `tls` when it speaks TLS).
    `models` is `probes.config_types()`, passed in when merging many targets.
    """
    model = (models if models is not None else config_types()).get(str(target.get("kind")))
    if model is None:
        model = ProbeConfigBase
    keys = _keys(model)
    merged = dict(target)
    for key, default in defaults.items():
        if key not in keys or default is None or not model.takes_default(key, target):
            continue
        own = merged.get(key)
        if key not in merged:
            merged[key] = default
        elif isinstance(own, dict) and isinstance(default, dict):
            merged[key] = {**default, **own}
    return merged
