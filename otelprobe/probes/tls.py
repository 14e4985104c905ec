"""The tls probe kind: one TLS handshake, and everything an SRE checks about it and its certificates.

Phases: `dns.lookup` (names only), `tcp.connect`, `tls.handshake`. The handshake verifies as
configured; when verification fails, the certificates are still read from that same failed
handshake (`TimedConnection.handshake_object`), so an expired or untrusted certificate is
reported with its details. Certificate parsing lives in net/tls/report.py. With `ocsp: true`
the same handshake (net/tls/openssl.py) asks for a stapled OCSP response; net/tls/ocsp.py reads it.
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.parse
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from otelprobe import names
from otelprobe.errors import AssertionFailed, ConfigError, ConfigProblem, TLSError
from otelprobe.net.connection import TimedConnection
from otelprobe.net.dns.resolver import split_host_port
from otelprobe.net.happy_eyeballs import connect_first
from otelprobe.net.tls import ocsp as _ocsp
from otelprobe.net.tls import report as _tls_report
from otelprobe.net.tls.openssl import ClientTLS, DeferredClientTLS
from otelprobe.probes._attempts import run_with_fallback
from otelprobe.probes.base import Attributes, HostPortProbeConfig, ProbeContext
from otelprobe.results import ProbeResult
from otelprobe.settings.common import StrictModel, TLSClientConfig, settings_not_switch
from otelprobe.settings.durations import Duration
from otelprobe.settings.secrets import redact_url
from otelprobe.timing import PhaseClock

logger = logging.getLogger(__name__)

TLSVersion = Literal["1.0", "1.1", "1.2", "1.3"]


def check_client_tls(config: TLSClientConfig) -> None:
    """Load `config`'s CA file and client certificate and key now, as a probe would.

    Raises:
        TLSError: a file that is missing, unreadable or not a certificate or key
            (`tls_config_invalid`, naming the field and the file).
    """
    ClientTLS(config)


class TLSExpect(StrictModel):
    """Assertions on the handshake: remaining validity, protocol version, trust."""

    cert_warn_before_s: Duration | None = Field(
        None, alias="cert_warn_before", description='e.g. "30d": log a warning and flag the result'
    )
    cert_fail_before_s: Duration | None = Field(
        None, alias="cert_fail_before", description='e.g. "7d": fail when the chain expires sooner'
    )
    versions: list[TLSVersion] = Field(default_factory=list, description="allowed versions; empty = any")
    chain_trusted: bool = Field(True, description="a verification failure fails the probe")
    ocsp: _ocsp.OCSPExpectation | None = Field(
        None,
        description="required: a verified, current stapled OCSP response; good: that, saying good"
        " (needs `ocsp: true`)",
    )

    @model_validator(mode="after")
    def _thresholds(self) -> TLSExpect:
        warn, fail = self.cert_warn_before_s, self.cert_fail_before_s
        if warn is not None and fail is not None and warn < fail:
            raise ValueError("cert_warn_before is shorter than cert_fail_before")
        return self


class TLSProbeConfig(HostPortProbeConfig):
    """A TLS endpoint `address: host:port`; `tls.sni` overrides the name sent and verified."""

    kind: Literal["tls"] = "tls"
    source_address: str | None = None
    tls: TLSClientConfig = TLSClientConfig()
    alpn: list[str] = Field(default_factory=list)
    ocsp: bool = Field(False, description="ask for a stapled OCSP response")
    expect: TLSExpect = TLSExpect()

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_settings(cls, value: object) -> object:
        return settings_not_switch(value, "a tls target always speaks TLS")

    @model_validator(mode="after")
    def _ocsp_expectation(self) -> TLSProbeConfig:
        if self.expect.ocsp and not self.ocsp:
            raise ValueError("expect.ocsp needs ocsp: true")
        return self

    def display_address(self) -> str:
        return f"tls://{self.address}"

    @classmethod
    def from_url(cls, url: str, name: str | None = None, **overrides: Any) -> TLSProbeConfig:
        """`tls://host:port` (port 443 when omitted)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "tls" or not parts.netloc:
            raise ConfigError([ConfigProblem("<url>", None, "", f"not a tls://host:port URL: {url!r}")])
        host, port = split_host_port(parts.netloc, default_port=443)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return cls.model_validate({"name": name or redact_url(url), "address": address, **overrides})


class TLSProbe:
    """Handshakes with a TLS endpoint and reports protocol, cipher, chain and trust."""

    kind: ClassVar[str] = "tls"

    def __init__(self, config: TLSProbeConfig, ctx: ProbeContext) -> None:
        self.config = config
        self._resolver = ctx.resolver_for(config)
        self._client = DeferredClientTLS(
            config.tls,
            config.alpn,
            ocsp=config.ocsp,
            reject_revoked=config.tls.verify and config.expect.chain_trusted,
        )

    async def run(self, attempt: int = 1) -> list[ProbeResult]:
        host, _ = self.config.host_port
        return await run_with_fallback(self.config, self.kind, attempt, self._resolver, host, self._probe)

    async def aclose(self) -> None:
        return None

    async def _probe(self, clock: PhaseClock, attrs: Attributes, addresses: Sequence[str]) -> None:
        cfg = self.config
        host, port = cfg.host_port
        server_name = cfg.tls.server_name or host
        attrs[names.SERVER_ADDRESS] = server_name
        attrs[names.SERVER_PORT] = port
        attrs[names.PROBE_TLS_SERVER_NAME] = server_name
        conn = await connect_first(clock, addresses, port, source_address=cfg.source_address, attrs=attrs)
        try:
            await self._handshake(clock, conn, server_name, attrs)
        finally:
            conn.close()

    async def _handshake(
        self, clock: PhaseClock, conn: TimedConnection, server_name: str, attrs: Attributes
    ) -> None:
        cfg = self.config
        # An IP target is verified against the certificate's IP SANs, without SNI.
        handshake = await self._run_handshake(clock, conn, server_name, attrs)
        if handshake is None:
            return
        attrs.update(_tls_report.session_attributes(handshake))
        attrs.update(_tls_report.chain_attributes(handshake))
        if cfg.tls.verify:
            attrs[names.PROBE_TLS_HOSTNAME_VERIFIED] = True
            attrs[names.PROBE_TLS_CHAIN_TRUSTED] = True
        else:
            attrs[names.PROBE_TLS_HOSTNAME_VERIFIED] = _tls_report.hostname_matches(handshake, server_name)
        self._check(attrs, handshake.version)

    async def _run_handshake(
        self, clock: PhaseClock, conn: TimedConnection, server_name: str, attrs: Attributes
    ) -> _tls_report.Handshake | None:
        """The handshake, asking for a staple with `ocsp`; a verified `revoked` fails it."""
        cfg = self.config
        session = self._client.get().session(server_name)
        now = dt.datetime.now(dt.UTC)
        try:
            await conn.start_session(session, clock)
        except TLSError as exc:
            if cfg.ocsp:
                self._report_staple(session.staple, attrs, now)
            if exc.detail == "certificate_revoked" and session.staple is not None:
                # OpenSSL reads the staple only after the chain and the name verified.
                attrs[names.PROBE_TLS_CHAIN_TRUSTED] = True
                attrs[names.PROBE_TLS_HOSTNAME_VERIFIED] = True
                attrs.update(_tls_report.chain_attributes(_tls_report.from_session(session, completed=False)))
                raise
            self._failed(exc, _tls_report.from_session(session, completed=False), server_name, attrs)
            return None
        if cfg.ocsp:
            self._report_staple(session.staple, attrs, now)
            _ocsp.check(cfg.expect.ocsp, session.staple, now)
        return _tls_report.from_session(session)

    def _failed(
        self, exc: TLSError, seen: _tls_report.Handshake | None, server_name: str, attrs: Attributes
    ) -> None:
        """Report what a failed handshake showed; re-raise unless certificate problems are accepted."""
        if seen is not None:
            attrs.update(_tls_report.chain_attributes(seen))
            attrs.update(_tls_report.trust_from_failure(exc.detail, seen, server_name))
        if self.config.expect.chain_trusted or not _tls_report.is_certificate_detail(exc.detail):
            raise exc

    @staticmethod
    def _report_staple(staple: _ocsp.OCSPReport | None, attrs: Attributes, now: dt.datetime) -> None:
        if staple is None:
            attrs[names.PROBE_TLS_OCSP_STAPLED] = False
        else:
            attrs.update(staple.attributes(now))

    def _check(self, attrs: Attributes, version: str | None) -> None:
        expect = self.config.expect
        if expect.versions and version not in expect.versions:
            raise AssertionFailed(
                "tls_version_not_allowed", f"negotiated TLS {version}, allowed: {', '.join(expect.versions)}"
            )
        remaining = attrs.get(names.PROBE_TLS_CERT_REMAINING)
        if not isinstance(remaining, float):
            return
        if expect.cert_fail_before_s is not None and remaining < expect.cert_fail_before_s:
            raise AssertionFailed(
                "certificate_expires_soon",
                f"the chain expires in {remaining / 86400:.1f} days"
                f" (fail below {expect.cert_fail_before_s / 86400:g})",
            )
        if expect.cert_warn_before_s is not None and remaining < expect.cert_warn_before_s:
            attrs[names.PROBE_TLS_CERT_EXPIRY_WARNING] = True
            logger.warning("%s: certificate chain expires in %.1f days", self.config.name, remaining / 86400)
