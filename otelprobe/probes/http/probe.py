"""The HTTP/HTTPS probe: one request (plus redirects) per attempt, every phase timed at the socket.

It sits between the scheduler (which calls `run`) and telemetry (which turns the returned
`ProbeResult`s into spans): `probes/http/http1_exchange.py` frames HTTP/1.1 (httptools) and
`http2_exchange.py` HTTP/2 (h2) over the timed backend of `probes/http/backend.py`, and
`probes/assertions.py` judges the response.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from contextlib import aclosing
from dataclasses import dataclass
from typing import ClassVar, Final
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

from otelprobe import __version__, names
from otelprobe.errors import ProtocolError
from otelprobe.net.dns.resolver import is_ip_literal
from otelprobe.net.tls.openssl import ClientTLS
from otelprobe.probes._attempts import run_every_address
from otelprobe.probes.assertions import (
    BodyChecks,
    Failure,
    HeaderChecks,
    JSONPathExpectation,
    StatusSet,
    check_cert_remaining,
    check_latency,
    raise_failures,
)
from otelprobe.probes.base import Attributes, ProbeContext, run_attempt
from otelprobe.probes.http.backend import ExchangeTimer, TimedBackend, TLSAttributeCache
from otelprobe.probes.http.config import HTTPProbeConfig
from otelprobe.probes.http.content_coding import content_codings, decode_body
from otelprobe.probes.http.http1_exchange import exchange
from otelprobe.probes.http.messages import URL, Request, Response
from otelprobe.probes.icmp.path_trace import attach_path_traces
from otelprobe.results import ProbeResult, TraceRef
from otelprobe.settings.addresses import check_host
from otelprobe.settings.common import IPFamily
from otelprobe.settings.secrets import redact_url
from otelprobe.timing import PhaseClock

logger = logging.getLogger(__name__)

_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_MAX_LOCATION: Final = 8192  # RFC 9110 §4.1 suggests supporting 8000-octet URIs; longer is hostile
_TARGET_SAFE: Final = "".join(map(chr, range(0x21, 0x7F)))  # printable ASCII stays as written
_CREDENTIAL_HEADERS: Final = frozenset({b"authorization", b"proxy-authorization", b"cookie"})
_HTTP_VERSIONS: Final = frozenset({"1.0", "1.1", "2"})


@dataclass(frozen=True, slots=True)
class _Reply:
    """What one hop returned."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    location: str | None


class HTTPProbe:
    """Probes one HTTP(S) URL; a fresh connection per attempt so that every phase is measured."""

    kind: ClassVar[str] = "http"

    def __init__(self, config: HTTPProbeConfig, ctx: ProbeContext) -> None:
        self._config = config
        self._resolver = ctx.resolver_for(config)
        self._url = urlsplit(config.url)
        self._host = self._url.hostname or ""
        """The configured URL's host (SplitResult parses its netloc again on every access)."""
        self._url_string = self._url.geturl()
        self._url_full = config.display_address()
        self._root: Attributes = {
            names.HTTP_REQUEST_METHOD: config.method,
            names.URL_FULL: self._url_full,
            names.SERVER_ADDRESS: self._host,
            names.SERVER_PORT: self._url.port or _DEFAULT_PORTS[self._url.scheme],
            names.USER_AGENT_SYNTHETIC_TYPE: names.SYNTHETIC_TYPE_TEST,
        }
        self._origin: tuple[URL, bytes] | None = None
        """The configured URL's request origin and Host header, parsed on the first attempt."""
        self._client_tls: ClientTLS | None = None
        self._tls_attributes = TLSAttributeCache()
        self._http1 = config.http_version != "2"
        self._http2 = config.http_version != "1.1"
        self._body = config.body.encode() if config.body is not None else None
        self._headers = _base_headers(config, self._url)
        expect = config.expect
        self._status = StatusSet(expect.status)
        self._header_checks = HeaderChecks(expect.headers)
        self._body_checks = BodyChecks(
            expect.body_regex,
            expect.body_not_regex,
            [JSONPathExpectation(c.path, c.equals, c.regex) for c in expect.json_path],
        )

    async def aclose(self) -> None:
        return None  # nothing outlives an attempt: connections are per attempt

    async def run(self, attempt: int = 1) -> list[ProbeResult]:
        host = self._host
        if self._config.ip == "all" and not is_ip_literal(host):

            async def one_address(
                address: str, timeout_s: float, clock: PhaseClock, attrs: Attributes
            ) -> ProbeResult:
                return await self._run_one(
                    attempt, timeout_s, family="all", pinned_address=address, clock=clock, attributes=attrs
                )

            results = await run_every_address(
                self._config, self.kind, attempt, self._resolver, host, one_address, self._root_attributes()
            )
        else:
            results = [await self._run_one(attempt, self._config.timeout_s, family=self._config.ip)]
        return await attach_path_traces(self._config, results)

    async def _run_one(
        self,
        attempt: int,
        timeout_s: float,
        *,
        family: IPFamily,
        pinned_address: str | None = None,
        clock: PhaseClock | None = None,
        attributes: Attributes | None = None,
    ) -> ProbeResult:
        trace_ref = TraceRef.new() if self._config.propagate_trace_context else None

        async def body(clock: PhaseClock, attrs: Attributes) -> None:
            await self._attempt(clock, attrs, family, pinned_address, trace_ref)

        result = await run_attempt(
            self.kind,
            self._config.name,
            attempt,
            timeout_s,
            body,
            clock=clock,
            attributes=attributes if attributes is not None else self._root_attributes(),
        )
        return dataclasses.replace(result, trace_ref=trace_ref) if trace_ref else result

    def _root_attributes(self) -> Attributes:
        """A fresh copy per attempt (the attempt adds to it) of the attributes fixed by the config."""
        return dict(self._root)

    async def _attempt(
        self,
        clock: PhaseClock,
        attrs: Attributes,
        family: IPFamily,
        pinned_address: str | None,
        trace_ref: TraceRef | None,
    ) -> None:
        # With `ip: all` the shared lookup, recorded before this body ran, counts towards latency.
        started_ns = min([clock.now_ns(), *(p.start_ns for p in clock.phases)])
        url, method, content = self._url, self._config.method, self._body
        headers = list(self._headers)
        if trace_ref is not None:
            traceparent = f"00-{trace_ref.trace_id:032x}-{trace_ref.span_id:016x}-01"
            headers.append((b"traceparent", traceparent.encode()))
        origin_host = self._host
        seen = {self._url_string}
        hop = 0
        while True:
            pin = pinned_address if hop == 0 or url.hostname == origin_host else None
            reply = await self._exchange(clock, attrs, hop, url, method, content, headers, family, pin)
            if reply.location is None or not self._config.redirects.follow:
                break
            if hop >= self._config.redirects.max:
                raise ProtocolError("too_many_redirects", f"more than {self._config.redirects.max} redirects")
            next_url = _redirect_url(url, reply.location)
            if next_url.geturl() in seen:
                raise ProtocolError("redirect_loop", f"redirect loop after {hop + 1} redirects")
            seen.add(next_url.geturl())
            if reply.status == 303 or (reply.status in (301, 302) and method == "POST"):
                method, content = "GET", None  # what browsers do, and what servers expect
                headers = [(k, v) for k, v in headers if k.lower() != b"content-type"]
            if _origin(next_url) != _origin(url):
                headers = [(k, v) for k, v in headers if k.lower() not in _CREDENTIAL_HEADERS]
            logger.debug("%s: redirect %d to %s", self._config.name, hop + 1, redact_url(next_url.geturl()))
            url = next_url
            hop += 1
        if hop:
            attrs[names.PROBE_REDIRECT_COUNT] = hop
            attrs[names.PROBE_HTTP_FINAL_URL] = redact_url(url.geturl())
        self._check(reply, attrs, (clock.now_ns() - started_ns) / 1e9)

    async def _exchange(
        self,
        clock: PhaseClock,
        attrs: Attributes,
        hop: int,
        url: SplitResult,
        method: str,
        content: bytes | None,
        headers: list[tuple[bytes, bytes]],
        family: IPFamily,
        pinned_address: str | None,
    ) -> _Reply:
        """One request/response on a fresh connection; its phases carry `probe.http.hop`."""
        hop_attrs: Attributes = {names.PROBE_HTTP_HOP: hop}
        first_phase = clock.mark()
        timer = ExchangeTimer(clock, hop_attrs)
        backend = TimedBackend(
            clock,
            timer,
            self._resolver,
            family,
            root_attributes=attrs if hop == 0 else {},
            pinned_address=pinned_address,
            source_address=self._config.source_address,
        )
        request = self._request(url, method, content, headers)
        ssl_context = self._tls_context() if url.scheme == "https" else None
        try:
            response = await exchange(backend, request, ssl_context, http1=self._http1)
            attrs[names.HTTP_RESPONSE_STATUS_CODE] = response.status
            version = response.http_version
            attrs[names.NETWORK_PROTOCOL_VERSION] = version if version in _HTTP_VERSIONS else "1.1"
            if backend.peer_address is not None:
                attrs[names.NETWORK_PEER_ADDRESS] = backend.peer_address
            body = await self._read_body(response, attrs)
            timer.finish()
        finally:
            backend.close()
            # The shared helpers' phases (lookup, connect, TLS) learn the hop too.
            clock.annotate(first_phase, hop_attrs)
            if backend.ssl_object is not None:
                # Known as soon as the handshake is done, so a later failure still reports them.
                attrs.update(self._tls_attributes.attributes(backend.ssl_object))
        location = None
        if response.status in _REDIRECT_STATUSES:
            location = next(
                (v.decode("latin-1") for k, v in response.headers if k.lower() == b"location"), None
            )
        return _Reply(response.status, response.headers, body, location)

    async def _read_body(self, response: Response, attrs: Attributes) -> bytes:
        """Read the body, keeping it only if a check needs it; over the cap is a failure."""
        limit = self._config.body_max_bytes
        keep = self._body_checks.needs_body
        chunks: list[bytes] = []
        total = 0
        try:
            async with aclosing(response.body) as stream:
                async for chunk in stream:
                    total += len(chunk)
                    if total > limit:
                        raise ProtocolError("body_too_large", f"body exceeds body_max ({limit} bytes)")
                    if keep:
                        chunks.append(chunk)
        finally:
            attrs[names.PROBE_BODY_BYTES] = total
        return b"".join(chunks)

    def _request(
        self, url: SplitResult, method: str, content: bytes | None, headers: list[tuple[bytes, bytes]]
    ) -> Request:
        if url is not self._url:  # a redirect's
            origin, authority = _request_origin(url)
        else:
            if self._origin is None:
                self._origin = _request_origin(url)
            origin, authority = self._origin
        request_headers = [(b"Host", authority), *headers]
        if content is not None:
            request_headers.append((b"Content-Length", str(len(content)).encode()))
        sni = self._config.tls.server_name
        return Request(
            method.encode("ascii"),
            origin,
            request_headers,
            content,
            sni_hostname=sni if sni and (url is self._url or url.hostname == self._host) else None,
        )

    def _tls_context(self) -> ClientTLS:
        # Built once per probe: loading the trust store costs milliseconds of CPU.
        if self._client_tls is None:
            # h2 first, as browsers offer it; http/1.1 stays listed even for "2", so a 1.1-only server
            # answers with its choice (a clear alpn_h2_not_negotiated) rather than a TLS alert.
            alpn = ["h2", "http/1.1"] if self._http2 else ["http/1.1"]
            self._client_tls = ClientTLS.shared(self._config.tls, alpn)
        return self._client_tls

    def _check(self, reply: _Reply, attrs: Attributes, duration_s: float) -> None:
        """Evaluate every expectation on the final response; raise the first, list them all."""
        expect = self._config.expect
        remaining = attrs.get(names.PROBE_TLS_CERT_REMAINING)
        remaining_s = float(remaining) if isinstance(remaining, int | float) else None
        failures: list[Failure] = []
        status = self._status.check(reply.status)
        if status is not None:
            failures.append(status)
        failures += self._header_checks.check(reply.headers)
        failures += self._check_body(reply)
        for bound in (
            check_latency(duration_s, expect.max_duration_s),
            check_cert_remaining(remaining_s, expect.cert_min_remaining_s),
        ):
            if bound is not None:
                failures.append(bound)
        # A wrong status says more than the content checks it usually causes: report it first;
        # then a body that cannot be read, which says more than the checks it could not run.
        failures.sort(key=lambda f: (f is not status, f.error_class is not ProtocolError))
        raise_failures(failures)

    def _check_body(self, reply: _Reply) -> list[Failure]:
        """The body checks, on the body with its Content-Encoding undone (only when they exist).

        Decoding waits until here so that its CPU time stays out of `http.transfer`, and only
        the final hop's body is decoded; `probe.http.body_bytes` stays the size on the wire.
        """
        if not self._body_checks.needs_body:
            return []
        try:
            body = decode_body(reply.body, content_codings(reply.headers), self._config.body_max_bytes)
        except ProtocolError as exc:
            return [Failure(exc.detail, exc.message, ProtocolError)]
        return self._body_checks.check(body)


def _base_headers(config: HTTPProbeConfig, url: SplitResult) -> list[tuple[bytes, bytes]]:
    """Headers sent on every request; values may be secrets and are never logged or exported."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in config.headers.items()]
    present = {k.lower() for k, _ in headers}
    if b"user-agent" not in present:
        headers.append((b"User-Agent", f"otelprobe/{__version__}".encode()))
    if b"accept" not in present:
        headers.append((b"Accept", b"*/*"))
    if url.username is not None and b"authorization" not in present:
        userinfo = f"{unquote(url.username)}:{unquote(url.password or '')}"
        headers.append((b"Authorization", b"Basic " + base64.b64encode(userinfo.encode())))
    return headers


def _request_origin(url: SplitResult) -> tuple[URL, bytes]:
    """Where a request to `url` goes and its Host header (the configured URL's are kept by the probe)."""
    port = url.port or _DEFAULT_PORTS[url.scheme]
    host = _ascii_host(url.hostname or "")
    authority = f"[{host}]" if ":" in host else host
    if port != _DEFAULT_PORTS[url.scheme]:
        authority = f"{authority}:{port}"
    # The request-target is ASCII: other characters go UTF-8 percent-encoded, as browsers send them.
    target = quote((url.path or "/") + (f"?{url.query}" if url.query else ""), safe=_TARGET_SAFE)
    return URL(url.scheme, host, port, target.encode("ascii")), authority.encode("ascii")


def _ascii_host(host: str) -> str:
    """The host as the Host header, getaddrinfo and SNI take it: an IDN as its A-label (IDNA 2003)."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:  # configured hosts are checked when loaded: only a redirect gets here
        raise ProtocolError("invalid_redirect", f"cannot follow a redirect to host {host!r}") from None


def _redirect_url(base: SplitResult, location: str) -> SplitResult:
    """Where a Location header points, resolved against `base`; ProtocolError("invalid_redirect")
    for anything a client must not follow: another scheme, no host, a bad port, control bytes or
    spaces (RFC 3986 has none), an absurd length. The message never quotes the header whole: it
    may be long, and may carry credentials."""
    if len(location) > _MAX_LOCATION:
        raise ProtocolError("invalid_redirect", f"Location header of {len(location)} characters")
    if not location.strip() or any(c <= " " or "\x7f" <= c <= "\x9f" for c in location):
        raise ProtocolError("invalid_redirect", "Location header with spaces or control characters")
    try:
        written = urlsplit(location)
        target = urlsplit(urljoin(base.geturl(), location))
        port = target.port
    except ValueError as exc:  # unpaired brackets, a port out of range or not a number
        raise ProtocolError("invalid_redirect", f"invalid Location URL: {exc}") from None
    if target.scheme not in _DEFAULT_PORTS:
        raise ProtocolError("invalid_redirect", f"cannot follow a redirect to {target.scheme[:16]!r}:")
    # "http:///path" has an empty authority: urljoin would quietly read it as a path on this host.
    empty_authority = location.startswith("//", len(written.scheme) + 1 if written.scheme else 0)
    if not target.hostname or port == 0 or (empty_authority and not written.netloc):
        raise ProtocolError("invalid_redirect", "Location URL without a host or with port 0")
    try:
        check_host(target.hostname)  # the same rules as a configured host: labels, IDNA, length
    except ValueError as exc:
        raise ProtocolError("invalid_redirect", f"cannot follow a redirect: {exc}"[:200]) from None
    return target


def _origin(url: SplitResult) -> tuple[str, str | None, int]:
    return url.scheme, url.hostname, url.port or _DEFAULT_PORTS[url.scheme]
