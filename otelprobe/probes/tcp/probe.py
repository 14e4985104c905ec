"""The tcp probe kind: connect, optionally TLS (direct or STARTTLS), optionally a send/expect dialogue.

Phases: `dns.lookup` (names only), `tcp.connect`, `starttls.negotiate`, `tls.handshake`, and
`tcp.dialogue` for the scripted exchange; all measured at the socket by net/connection.py.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from otelprobe import names
from otelprobe.errors import AssertionFailed, ConfigError, ConfigProblem, ProtocolError
from otelprobe.net.dns.resolver import is_ip_literal
from otelprobe.net.happy_eyeballs import connect_first
from otelprobe.net.stream import BufferedConnection
from otelprobe.net.tls.handshake import client_context, handshake_attributes
from otelprobe.probes._attempts import run_with_fallback
from otelprobe.probes.base import Attributes, HostPortProbeConfig, ProbeContext
from otelprobe.probes.icmp.path_trace import attach_path_traces
from otelprobe.probes.tcp import _starttls
from otelprobe.results import ProbeResult
from otelprobe.settings.common import (
    RETIRED_KEY,
    StrictModel,
    TLSClientConfig,
    asks_for_tls,
    check_regex,
    optional_tls,
)
from otelprobe.settings.secrets import redact_url
from otelprobe.timing import OpenPhase, PhaseClock


def _upgrades(target: Mapping[str, Any]) -> bool:
    """Whether a raw tcp target (before validation) upgrades to TLS by STARTTLS."""
    dialogue = target.get("dialogue")
    steps = dialogue if isinstance(dialogue, list) else []
    return bool(target.get("starttls")) or any(isinstance(s, Mapping) and s.get("starttls") for s in steps)


class DialogueStep(StrictModel):
    """One step: send text, then wait for a regex to match what the server sent; or upgrade to TLS."""

    send: str | None = None
    expect: str | None = Field(
        None, description="regex (multiline) over the bytes received since the last match"
    )
    starttls: bool = Field(False, description="start TLS here (after this step's send/expect)")

    @field_validator("expect")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            check_regex(value, as_bytes=True)
        return value


class TCPProbeConfig(HostPortProbeConfig):
    """A TCP target `address: host:port`, with optional TLS and dialogue.

    `tls` present = the connection speaks TLS with those settings: right after connect, or where
    `starttls` (or a dialogue step's `starttls`) upgrades it. `starttls` alone upgrades with the
    default settings.
    """

    kind: Literal["tcp"] = "tcp"
    source_address: str | None = Field(None, description="local IP to connect from")
    tls: TLSClientConfig | None = Field(
        None, description="TLS settings; present = TLS ({} = the defaults), absent = none (unless starttls)"
    )
    starttls: _starttls.StartTLSProtocol | None = None
    dialogue: list[DialogueStep] = Field(default_factory=list)

    _tls_present = field_validator("tls", mode="before")(optional_tls)

    @model_validator(mode="before")
    @classmethod
    def _no_tls_config(cls, data: Any) -> Any:
        # Before this version tcp had `tls: true` (on/off) plus `tls_config: {...}` (the settings).
        if isinstance(data, Mapping) and "tls_config" in data:
            if data.get("tls") is True:
                message = (
                    "`tls: true` + `tls_config: {...}` is now written `tls: {...}`:"
                    " `tls_config` was merged into `tls`, whose presence turns TLS on"
                )
            else:
                message = "`tls_config` was merged into `tls`: write `tls: {...}`"
            raise PydanticCustomError(RETIRED_KEY, message, {"key": "tls_config"})
        return data

    @classmethod
    def takes_default(cls, key: str, target: Mapping[str, Any]) -> bool:
        # defaults.tls configures the TLS a target speaks; it never turns TLS on.
        return key != "tls" or asks_for_tls(target) or _upgrades(target)

    @property
    def direct_tls(self) -> bool:
        """TLS right after connect: `tls` given, and nothing says to upgrade later."""
        return self.tls is not None and not self.upgrades

    @property
    def upgrades(self) -> bool:
        """STARTTLS: by a protocol, or at a dialogue step."""
        return self.starttls is not None or any(step.starttls for step in self.dialogue)

    def display_address(self) -> str:
        return f"tcp://{self.address}"

    @classmethod
    def from_url(cls, url: str, name: str | None = None, **overrides: Any) -> TCPProbeConfig:
        """`tcp://host:port` (`?starttls=smtp|imap|pop3` or `?tls=1` optional)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "tcp" or not parts.netloc:
            raise ConfigError([ConfigProblem("<url>", None, "", f"not a tcp://host:port URL: {url!r}")])
        query = dict(urllib.parse.parse_qsl(parts.query))
        fields: dict[str, Any] = {"name": name or redact_url(url), "address": parts.netloc}
        if "starttls" in query:
            fields["starttls"] = query["starttls"]
        if query.get("tls", "").lower() in ("1", "true", "yes"):
            fields["tls"] = {}
        return cls.model_validate({**fields, **overrides})


class TCPProbe:
    """Connects to a TCP service and optionally talks to it; one result per probed address."""

    kind: ClassVar[str] = "tcp"

    def __init__(self, config: TCPProbeConfig, ctx: ProbeContext) -> None:
        self.config = config
        self._resolver = ctx.resolver_for(config)
        self._tls = config.tls or TLSClientConfig()
        self._tls_context = client_context(self._tls) if config.tls is not None or config.upgrades else None
        self._steps = [
            (
                step.send.encode() if step.send is not None else None,
                re.compile(step.expect.encode()) if step.expect is not None else None,
                step.starttls,
            )
            for step in config.dialogue
        ]

    async def run(self, attempt: int = 1) -> list[ProbeResult]:
        host, _ = self.config.host_port
        results = await run_with_fallback(self.config, self.kind, attempt, self._resolver, host, self._probe)
        return await attach_path_traces(self.config, results)

    async def aclose(self) -> None:
        return None

    async def _probe(self, clock: PhaseClock, attrs: Attributes, addresses: Sequence[str]) -> None:
        cfg = self.config
        host, port = cfg.host_port
        attrs[names.SERVER_ADDRESS] = host
        attrs[names.SERVER_PORT] = port
        attrs[names.NETWORK_TRANSPORT] = "tcp"
        conn = await connect_first(clock, addresses, port, source_address=cfg.source_address, attrs=attrs)
        try:
            stream = BufferedConnection(conn)
            if cfg.direct_tls:
                await self._start_tls(clock, stream, host, attrs)
            elif cfg.starttls:
                attrs[names.PROBE_TCP_STARTTLS] = cfg.starttls
                with clock.phase(names.SPAN_STARTTLS):
                    await _starttls.negotiate(stream, cfg.starttls)
                await self._start_tls(clock, stream, host, attrs)
            if self._steps:
                await self._dialogue(clock, stream, host, attrs)
        finally:
            conn.close()

    async def _start_tls(
        self, clock: PhaseClock, stream: BufferedConnection, host: str, attrs: Attributes
    ) -> None:
        assert self._tls_context is not None
        server_name = self._tls.server_name or (None if is_ip_literal(host) else host)
        ssl_object = await stream.conn.start_tls(self._tls_context.get(), server_name, clock)
        attrs.update(handshake_attributes(ssl_object))

    async def _dialogue(
        self, clock: PhaseClock, stream: BufferedConnection, host: str, attrs: Attributes
    ) -> None:
        opened: OpenPhase | None = clock.start(names.SPAN_TCP_DIALOGUE)
        try:
            for index, (send, expect, starttls) in enumerate(self._steps, start=1):
                if opened is None:
                    opened = clock.start(names.SPAN_TCP_DIALOGUE)
                opened.attributes[names.PROBE_TCP_DIALOGUE_STEP] = index
                if send is not None:
                    await stream.conn.write(send)
                if expect is not None:
                    try:
                        await _read_matching_line(stream, expect, index)
                    except ProtocolError as exc:
                        raise AssertionFailed(
                            "expect_not_matched",
                            f"step {index}: connection closed before /{expect.pattern.decode()}/ matched",
                        ) from exc
                if starttls:
                    # The handshake is its own phase; a later step opens a new dialogue phase.
                    opened.end()
                    opened = None
                    stream.take_pending()
                    await self._start_tls(clock, stream, host, attrs)
        except (AssertionFailed, ProtocolError) as exc:
            if opened is not None:
                opened.end(error=exc)
            raise
        if opened is not None:
            opened.end()


async def _read_matching_line(stream: BufferedConnection, pattern: re.Pattern[bytes], index: int) -> None:
    """Consume lines until one matches (blackbox_exporter's query_response semantics)."""
    while True:
        line = await stream.read_until(b"\n", f"step {index}'s expected reply")
        if pattern.search(line.rstrip(b"\r\n")):
            return
