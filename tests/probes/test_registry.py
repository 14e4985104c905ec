"""The one table of probe kinds agrees with the config union, DESIGN §3's kinds and the CLI schemes."""

from __future__ import annotations

import inspect

from otelprobe.cli.probe import SCHEME_KINDS
from otelprobe.probes import PROBE_TYPES, config_types

DESIGN_KINDS = {"http", "dns", "tcp", "tls", "icmp", "grpc", "websocket"}


def test_every_kind_has_a_probe_and_a_config() -> None:
    assert set(PROBE_TYPES) == set(config_types()) == DESIGN_KINDS


def test_probe_classes_name_their_own_kind() -> None:
    for kind, probe_type in PROBE_TYPES.items():
        assert probe_type.kind == kind
        assert inspect.iscoroutinefunction(probe_type.run)
        assert inspect.iscoroutinefunction(probe_type.aclose)


def test_config_kind_literal_matches_table_key() -> None:
    for kind, config_type in config_types().items():
        assert config_type.model_fields["kind"].default == kind
        assert config_type.model_config.get("extra") == "forbid"


def test_every_kind_can_be_tried_from_a_url() -> None:
    assert set(SCHEME_KINDS.values()) == DESIGN_KINDS
    for kind in DESIGN_KINDS:
        assert hasattr(config_types()[kind], "from_url"), kind
