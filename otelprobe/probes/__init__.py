"""Probe kinds. To add one: write probes/<kind>.py with a Config and a Probe, then add one line to
PROBE_TYPES and one member to ProbeConfig. tests/probes/test_registry.py checks that they agree.

This is the one place to look for what otelprobe can probe; nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Final, Union, get_args

from pydantic import Field

from otelprobe.probes.base import Probe, ProbeContext
from otelprobe.probes.dns.probe import DNSProbe, DNSProbeConfig
from otelprobe.probes.grpc import GRPCProbe, GRPCProbeConfig
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.probes.http.probe import HTTPProbe
from otelprobe.probes.icmp.probe import ICMPProbe, ICMPProbeConfig
from otelprobe.probes.tcp.probe import TCPProbe, TCPProbeConfig
from otelprobe.probes.tls import TLSProbe, TLSProbeConfig
from otelprobe.probes.websocket import WebSocketProbe, WebSocketProbeConfig
from otelprobe.settings.common import ProbeConfigBase

PROBE_TYPES: Final[Mapping[str, type[Probe]]] = {
    "http": HTTPProbe,
    "dns": DNSProbe,
    "tcp": TCPProbe,
    "tls": TLSProbe,
    "icmp": ICMPProbe,
    "grpc": GRPCProbe,
    "websocket": WebSocketProbe,
}

ProbeConfig = Annotated[
    Union[  # noqa: UP007  (one member per line keeps additions one-line diffs)
        HTTPProbeConfig,
        DNSProbeConfig,
        TCPProbeConfig,
        TLSProbeConfig,
        ICMPProbeConfig,
        GRPCProbeConfig,
        WebSocketProbeConfig,
    ],
    Field(discriminator="kind"),
]


def config_types() -> dict[str, type[ProbeConfigBase]]:
    """kind -> config class, read off the ProbeConfig union (so there is one list, not two)."""
    union = get_args(ProbeConfig)[0]
    members = get_args(union) or (union,)
    return {member.model_fields["kind"].default: member for member in members}


def config_type_for(kind: str) -> type[ProbeConfigBase]:
    """The config class of a probe kind; KeyError names the known kinds."""
    types = config_types()
    if kind not in types:
        raise KeyError(f"unknown probe kind {kind!r}; known: {', '.join(sorted(types))}")
    return types[kind]


__all__ = ["PROBE_TYPES", "Probe", "ProbeConfig", "ProbeContext", "config_type_for", "config_types"]
