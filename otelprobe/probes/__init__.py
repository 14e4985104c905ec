"""Probe kinds. To add one: write probes/<kind>.py with a Config and a Probe, then add one line to
PROBE_TYPES and one member to ProbeConfig. tests/probes/test_registry.py checks that they agree.

This is the one place to look for what otelprobe can probe; nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Final, Union

from pydantic import Field

from otelprobe.probes.base import Probe, ProbeContext
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.probes.http.probe import HTTPProbe

PROBE_TYPES: Final[Mapping[str, type[Probe]]] = {
    "http": HTTPProbe,
}

ProbeConfig = Annotated[
    Union[  # noqa: UP007  (a one-member `X | Y` cannot be written; kinds are added here)
        HTTPProbeConfig,
    ],
    Field(discriminator="kind"),
]

__all__ = ["PROBE_TYPES", "Probe", "ProbeConfig", "ProbeContext"]
