"""Config models shared by every probe kind: schedule, retries, IP family, TLS, resolver.

Each probe kind's own config (probes/<kind>.py) subclasses `ProbeConfigBase`; the union of them
is assembled in probes/__init__.py and used by config/models.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from otelprobe.settings.addresses import check_server
from otelprobe.settings.durations import Duration
from otelprobe.settings.secrets import register_secret
from otelprobe.settings.tls_groups import unknown_groups  # OpenSSL decides what it knows

IPFamily = Literal["ip4", "ip6", "prefer_ip6", "all", "any"]
"""ip4 / ip6 only; prefer_ip6 IPv6 first, IPv4 as fallback; any whatever resolves; several
addresses are raced RFC 8305 style (net/happy_eyeballs.py); all probes every address on its own."""


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RetryPolicy(StrictModel):
    """Retries of a failed attempt, each a new trace linked to the first attempt's trace."""

    count: int = Field(0, ge=0, le=10, description="extra attempts after a failure")
    backoff_s: Duration = Field(0.5, alias="backoff", description="first backoff")
    multiplier: float = Field(2.0, ge=1.0, le=10.0)
    max_backoff_s: Duration = Field(10.0, alias="max_backoff", description="backoff cap")
    jitter: float = Field(0.2, ge=0.0, le=1.0, description="fraction of each backoff randomized")


class TLSClientConfig(StrictModel):
    """Client TLS settings. Verification is on unless explicitly turned off."""

    verify: bool = True
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    client_key_password: str | None = Field(
        None, description="password of an encrypted client_key (a secret: write it as ${ENV} or ${file:})"
    )
    server_name: str | None = Field(None, alias="sni", description="SNI / hostname to verify")
    min_version: Literal["1.0", "1.1", "1.2", "1.3"] | None = None
    max_version: Literal["1.0", "1.1", "1.2", "1.3"] | None = None
    groups: tuple[str, ...] | None = Field(
        None,
        min_length=1,
        description="key-exchange groups offered, in order (default X25519, P-256, X448, P-521, P-384)",
    )

    @field_validator("groups")
    @classmethod
    def _groups_known(cls, groups: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if groups is not None:
            unknown = unknown_groups(groups)
            if unknown:
                raise ValueError(
                    f"unknown TLS group(s) {', '.join(unknown)} (e.g. X25519, P-256, X25519MLKEM768)"
                )
        return groups

    @field_validator("client_key_password")
    @classmethod
    def _password_is_secret(cls, password: str | None) -> str | None:
        # Redacted wherever it could leak, even when written in the file itself.
        if password:
            register_secret(password)
        return password

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TLSClientConfig:
        if self.client_key and not self.client_cert:
            raise ValueError("client_key given without client_cert")
        return self


RETIRED_KEY: Final = "retired_key"
"""pydantic error type of a key an earlier version took; its ctx `key` names that key, so the
problem is reported at the key's line, with the message saying what to write instead."""


def settings_not_switch(value: object, decided_by: str) -> object:
    """A `tls` value before validation, where the kind decides TLS itself (`decided_by` says how):
    TLS settings, never an on/off switch."""
    if isinstance(value, bool):
        shown = "true" if value else "false"
        raise ValueError(
            f"`tls` takes TLS settings (e.g. `tls: {{verify: false}}`), not {shown}: {decided_by}"
        )
    return value


def optional_tls(value: object) -> object:
    """A `tls` value before validation, where TLS is optional (tcp, grpc): present turns it on."""
    if value is True:
        raise ValueError(
            "`tls` takes TLS settings, not true: write `tls: {}` for TLS with the default settings"
        )
    if value is False:
        raise ValueError("`tls` takes TLS settings, not false: leave `tls` out for no TLS")
    return value


def asks_for_tls(target: Mapping[str, Any]) -> bool:
    """Whether a raw target (before validation) has TLS settings of its own."""
    return isinstance(target.get("tls"), dict | TLSClientConfig)


def check_regex(pattern: str, *, as_bytes: bool = False) -> str:
    """A regex of an expectation, compiled now (as the probe will: `as_bytes` for byte streams):
    re.error is no ValueError, so pydantic would let it escape as a traceback, not a problem."""
    try:
        re.compile(pattern.encode() if as_bytes else pattern)
    except re.error as exc:
        shown = pattern if len(pattern) <= 60 else pattern[:57] + "..."
        raise ValueError(f"invalid regex {shown!r}: {exc.msg} at position {exc.pos}") from None
    except (OverflowError, RecursionError) as exc:  # a pattern nested or repeated absurdly
        raise ValueError(f"invalid regex: {type(exc).__name__}") from None
    return pattern


MAX_DNS_ATTEMPTS: Final = 5
"""glibc's resolver caps `options attempts:` at 5 as well."""


def check_try_timeout(try_timeout_s: float | None, info: ValidationInfo) -> float | None:
    """A per-try timeout must leave room for a retransmit within the whole timeout."""
    timeout_s, attempts = info.data.get("timeout_s"), info.data.get("attempts")
    if try_timeout_s is None or timeout_s is None or attempts is None or attempts < 2:
        return try_timeout_s
    if try_timeout_s >= timeout_s:
        raise ValueError(
            f"try_timeout ({try_timeout_s:g}s) must be shorter than timeout ({timeout_s:g}s),"
            " or no retransmit is ever sent"
        )
    return try_timeout_s


class ResolverConfig(StrictModel):
    """Where names are resolved: the system resolver, or a DNS server of this target's own.

    Over UDP a query is retransmitted as a stub resolver does: `attempts` tries, each waiting
    `try_timeout` (default `timeout / attempts`) before the next, all within `timeout`.
    """

    server: str | None = Field(None, description="host[:port] of a DNS server; none = system resolver")
    transport: Literal["udp", "tcp", "tls", "https"] = "udp"
    timeout_s: Duration = Field(2.0, alias="timeout", gt=0, description="deadline of the whole resolution")
    attempts: int = Field(
        2,
        ge=1,
        le=MAX_DNS_ATTEMPTS,
        description="UDP tries per query (1 = no retransmit), as glibc's attempts:",
    )
    try_timeout_s: Duration | None = Field(
        None,
        alias="try_timeout",
        gt=0,
        description="wait for an answer before retransmitting; default timeout/attempts",
    )

    _try_timeout = field_validator("try_timeout_s")(check_try_timeout)

    @field_validator("server")
    @classmethod
    def _server(cls, server: str | None) -> str | None:
        return None if server is None else check_server(server)


class ProbeConfigBase(StrictModel):
    """Fields every target has, whatever its kind."""

    name: str = Field(min_length=1, description="the target's name, unique in the file")
    kind: str
    interval_s: Duration = Field(30.0, alias="interval", gt=0)
    jitter_s: Duration | None = Field(None, alias="jitter", description="default 10% of interval")
    timeout_s: Duration = Field(10.0, alias="timeout", gt=0)
    retries: RetryPolicy = RetryPolicy()
    ip: IPFamily = "any"
    resolver: ResolverConfig | None = None
    failure_threshold: int = Field(3, ge=1, description="consecutive failures before state DOWN")
    labels: dict[str, str] = Field(default_factory=dict)
    traceroute_on_failure: bool = False

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> ProbeConfigBase:
        if self.timeout_s > self.interval_s:
            raise ValueError(f"timeout ({self.timeout_s:g}s) is longer than interval ({self.interval_s:g}s)")
        return self

    @classmethod
    def takes_default(cls, key: str, target: Mapping[str, Any]) -> bool:
        """Whether `defaults.<key>` (a field this kind has) is merged into `target`, the raw mapping.

        Yes, unless the key would switch something on: a kind where a present `tls` turns TLS on
        (tcp, grpc) takes `defaults.tls` only into targets that speak TLS already.
        """
        return True

    @property
    def effective_jitter_s(self) -> float:
        return self.jitter_s if self.jitter_s is not None else 0.1 * self.interval_s

    def display_address(self) -> str:
        """What the target points at, for logs and the waterfall (credentials redacted)."""
        return self.name
