"""Configuration of an HTTP/HTTPS target: request, TLS, redirects, body cap and expectations."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from otelprobe.settings.addresses import parse_url
from otelprobe.settings.common import (
    ProbeConfigBase,
    StrictModel,
    TLSClientConfig,
    check_regex,
    settings_not_switch,
)
from otelprobe.settings.durations import Duration, Size
from otelprobe.settings.secrets import redact_url


class JSONPathCheck(StrictModel):
    """A value in a JSON body: `path` like `$.status` or `$.items[0].id`; equals or matches."""

    path: str = Field(pattern=r"^\$")
    equals: Any = None
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return None if value is None else check_regex(value)


class HTTPExpect(StrictModel):
    """What a successful response looks like. Every check that fails is reported."""

    status: list[int | str] = Field(
        default_factory=lambda: list[int | str](["200-299"]), description="codes or ranges like '200-299'"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="header name -> regex")
    body_regex: list[str] = Field(default_factory=list)
    body_not_regex: list[str] = Field(default_factory=list)
    json_path: list[JSONPathCheck] = Field(default_factory=list)
    max_duration_s: Duration | None = Field(None, alias="max_duration", description="latency bound")
    cert_min_remaining_s: Duration | None = Field(
        None, alias="cert_min_remaining", description="fail when the chain expires sooner"
    )

    @field_validator("body_regex", "body_not_regex")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        return [check_regex(pattern) for pattern in value]

    @field_validator("headers")
    @classmethod
    def _header_regexes(cls, value: dict[str, str]) -> dict[str, str]:
        return {name: check_regex(pattern) for name, pattern in value.items()}

    @field_validator("status")
    @classmethod
    def _status_codes(cls, value: list[int | str]) -> list[int | str]:
        for item in value:
            low, _, high = str(item).partition("-")
            if not low.isdigit() or (high and not high.isdigit()):
                raise ValueError(f"invalid status {item!r}: expected 200 or '200-299'")
            if not 100 <= int(low) <= int(high or low) <= 599:
                raise ValueError(f"invalid status range {item!r}")
        return value


class RedirectPolicy(StrictModel):
    """Follow up to `max` redirects; each hop is its own set of phase spans."""

    follow: bool = True
    max: int = Field(10, ge=0, le=50)


class HTTPProbeConfig(ProbeConfigBase):
    """An HTTP or HTTPS target."""

    kind: Literal["http"] = "http"
    url: str
    method: str = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    http_version: Literal["1.1", "2", "auto"] = Field("auto", description="auto = h2 via ALPN if offered")
    tls: TLSClientConfig = TLSClientConfig()
    redirects: RedirectPolicy = RedirectPolicy()
    body_max_bytes: Size = Field(1024 * 1024, alias="body_max")
    source_address: str | None = None
    propagate_trace_context: bool = Field(True, description="send a W3C traceparent header")
    expect: HTTPExpect = HTTPExpect()

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_settings(cls, value: object) -> object:
        return settings_not_switch(value, "the URL scheme (https://) decides whether this target speaks TLS")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL with a host, got {redact_url(value)!r}")
        try:
            parse_url(value, ("http", "https"))
        except ValueError as exc:
            raise ValueError(f"{exc} (in {redact_url(value)!r})") from None
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if not value.isalpha():
            raise ValueError(f"invalid HTTP method {value!r}")
        return value.upper()

    @model_validator(mode="after")
    def _body_needs_method(self) -> HTTPProbeConfig:
        if self.body is not None and self.method in ("GET", "HEAD"):
            raise ValueError(f"a request body with method {self.method} is not sent by servers' rules")
        return self

    def display_address(self) -> str:
        return redact_url(self.url)

    @classmethod
    def from_url(cls, url: str, name: str | None = None, **overrides: Any) -> HTTPProbeConfig:
        """`http(s)://host[:port]/path`: the URL is the target as it stands."""
        return cls.model_validate({"name": name or redact_url(url), "kind": "http", "url": url, **overrides})
