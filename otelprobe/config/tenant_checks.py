"""Checks of the `tenants:` section that need the whole file: labels naming no tenant, budgets too small.

Called by config/__init__.py: `unknown_tenants` on every load (a typo in a tenant label would
silently move a target to the default tenant), `over_budget` by `validate` only (`run` accepts a
tenant whose targets do not fit its rate: the scheduler throttles it, which is what a budget is
for, but before a deployment it is almost always a mistake).

The rate arithmetic: a target starts one run per interval, so a tenant's targets ask for
Σ 1/interval_s runs per second, each run one attempt when it succeeds and up to 1 + retries.count
when it fails. A budget below Σ 1/interval_s is reported (some runs are skipped even when every
target is healthy); the figure with every retry is given in the message. Fleet-wide budgets
(`fleet: true`) are compared with the whole file's demand; per-process ones with the demand of
one replica (the file's targets divided by the shard count; `--workers W` divides both sides by W).
Concurrency is not checked here: how long probes hold a slot is only known while running.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from otelprobe.config.document import Document, PathKey, format_path
from otelprobe.config.models import Config, prepare
from otelprobe.config.tenants import DEFAULT_TENANT, TENANT_LABEL
from otelprobe.errors import ConfigProblem

__all__ = ["over_budget", "tenant_demand", "unknown_tenants"]


def _label_key(data: dict[str, Any]) -> tuple[str, str]:
    scheduler = data.get("scheduler")
    label, default = TENANT_LABEL, DEFAULT_TENANT
    if isinstance(scheduler, dict):
        if isinstance(scheduler.get("tenant_label"), str):
            label = scheduler["tenant_label"]
        if isinstance(scheduler.get("default_tenant"), str):
            default = scheduler["default_tenant"]
    return label, default


def unknown_tenants(doc: Document, filename: str) -> list[ConfigProblem]:
    """A target whose tenant label names no tenant of `tenants:` (only when that section exists)."""
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("tenants"), dict):
        return []
    known = {str(name) for name in data["tenants"]}
    label, default = _label_key(data)
    known.add(default)
    try:
        prepared = prepare(data)
    except ValueError:
        return []  # the model validation reports it
    targets = prepared.get("targets")
    if not isinstance(targets, list):
        return []
    problems = []
    for index, target in enumerate(targets):
        labels = target.get("labels") if isinstance(target, dict) else None
        tenant = labels.get(label) if isinstance(labels, dict) else None
        if not isinstance(tenant, str) or tenant in known:
            continue
        path: PathKey = ("targets", index, "labels", label)
        line = doc.lines.get(path)
        where = ""
        if line is None:  # merged from defaults
            line, where = doc.lines.get(("defaults", "labels", label)), " (the value comes from defaults)"
        choices = ", ".join(sorted(known))
        message = f"unknown tenant {tenant!r}{where}; the tenants are: {choices}"
        problems.append(ConfigProblem(filename, line, format_path(path), message))
    return problems


def tenant_demand(config: Config) -> dict[str, tuple[int, float, float]]:
    """Per tenant: (targets, runs/s = Σ 1/interval_s, attempts/s with every retry)."""
    label, default = config.scheduler.tenant_label, config.scheduler.default_tenant
    demand: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for target in config.targets:
        entry = demand[target.labels.get(label, default)]
        entry[0] += 1
        entry[1] += 1.0 / target.interval_s
        entry[2] += (1 + target.retries.count) / target.interval_s
    return {name: (int(n), runs, attempts) for name, (n, runs, attempts) in demand.items()}


def over_budget(config: Config, doc: Document, filename: str) -> list[ConfigProblem]:
    """Tenants whose rate budget is below what their targets' intervals ask for, at the `rate` line."""
    if not config.tenants:
        return []
    replicas = config.shard.count if config.shard is not None else 1
    problems = []
    for name, (count, runs, attempts) in sorted(tenant_demand(config).items()):
        tenant = config.tenants.get(name)
        if tenant is None or tenant.rate is None:
            continue
        budget = tenant.rate if tenant.fleet else tenant.rate * replicas
        if runs <= budget * (1 + 1e-9):
            continue
        scope = (
            "fleet-wide" if tenant.fleet else (f"x {replicas} replicas" if replicas > 1 else "per process")
        )
        message = (
            f"tenant {name!r}: its {count} targets start {runs:.4g} runs/s (sum of 1/interval;"
            f" {attempts:.4g}/s with every retry) but its rate is {tenant.rate:g}/s ({scope}):"
            f" about {runs - budget:.4g} runs/s would be skipped even when every target is healthy"
        )
        path: PathKey = ("tenants", name, "rate")
        problems.append(ConfigProblem(filename, doc.lines.get(path), format_path(path), message))
    return problems
