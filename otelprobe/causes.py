"""The root-cause vocabulary of DESIGN §5: what attribution ranks, and the scope of each cause.

A bottom-layer module beside errors.py (DESIGN §4's error classes): the lab labels recordings
with these names, the attribution model ranks them and the sidecar reports them, so none of
those layers imports another to share the words. It imports nothing from otelprobe.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, get_args

RootCause = Literal[
    "dns_latency",
    "dns_failure",
    "network_latency",
    "packet_loss",
    "bandwidth_limit",
    "tls_slow",
    "certificate_invalid",
    "backend_slow",
    "http_error",
    "target_unreachable",
    "content_mismatch",
]
ROOT_CAUSES: Final[tuple[RootCause, ...]] = get_args(RootCause)
"""DESIGN §5's root-cause classes, in the order attribution lists them."""

CAUSE_SIGNS: Final[Mapping[RootCause, str]] = MappingProxyType(
    {
        "dns_latency": "dns.lookup up, other phases normal",
        "dns_failure": "dns_error failures (NXDOMAIN, SERVFAIL, resolver timeout, wrong answers)",
        "network_latency": "tcp.connect, tls.handshake and http.ttfb all up by about one RTT each",
        "packet_loss": "heavy tails, retransmit steps (1 s, 2 s, ...) in connect/handshake, some timeouts",
        "bandwidth_limit": "http.transfer up in proportion to body size, other phases normal",
        "tls_slow": "tls.handshake up, tcp.connect normal",
        "certificate_invalid": "tls_error with a certificate detail",
        "backend_slow": "http.ttfb up (or timeouts in it), connect and handshake normal",
        "http_error": "http_status failures (5xx, unexpected 4xx), resets mid-body, redirect loops",
        "target_unreachable": "connect_refused / connect_timeout",
        "content_mismatch": "assertion_failed on content",
    }
)
"""How each cause shows in probe phases and error classes (DESIGN §5's table)."""

Scope = Literal["vantage", "target", "path"]
SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)
"""Where a cause sits, decided from cross-target / cross-vantage evidence."""

SCOPE_SIGNS: Final[Mapping[Scope, str]] = MappingProxyType(
    {
        "vantage": "one vantage sees many targets degrade: the problem is near the prober",
        "target": "every vantage sees one target degrade: the problem is at the target",
        "path": "one target degrades from one vantage only: the path between them",
    }
)
"""How each scope shows across targets and vantages."""
