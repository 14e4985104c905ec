"""The one-shot URL of `otelprobe probe`: its scheme names the kind, the rest becomes a target config.

Every way the URL or an option can be wrong ends here as one `UsageError` whose message is one
line naming the problem: urlsplit's, the `idna` codec's, dnspython's and the config models' errors
alike. Nothing that fails to parse reaches a probe, so nothing fails later with a traceback.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import unquote, urlunsplit

from pydantic import BaseModel, ValidationError

from otelprobe.errors import ConfigError
from otelprobe.settings.addresses import parse_url
from otelprobe.settings.secrets import redact_url

# URL scheme -> probe kind.
SCHEME_KINDS: Final = {
    "http": "http",
    "https": "http",
    "dns": "dns",
    "tcp": "tcp",
    "tls": "tls",
    "icmp": "icmp",
    "icmp6": "icmp",
    "grpc": "grpc",
    "grpcs": "grpc",
    "ws": "websocket",
    "wss": "websocket",
}
# Schemes whose URL may carry user:password@ (sent as Basic auth, redacted everywhere else).
_USERINFO_SCHEMES: Final = frozenset({"http", "https", "ws", "wss"})


class UsageError(ValueError):
    """Bad input to `otelprobe probe`: shown as one line, exit code 2."""


def parse_probe_url(url: str) -> tuple[str, str]:
    """(probe kind, URL) after checking the URL's syntax; UsageError if it is not usable.

    The URL comes back normalized only in one way: an empty port ("host:") is dropped, as RFC 3986
    6.2.3 allows, so that no probe reads "" as a port.
    """
    if "://" not in url:
        raise UsageError(f"{_shown(url)} is not a URL: write it as e.g. https://{_shown(url, quote=False)}/")
    try:
        parts = parse_url(url, SCHEME_KINDS, host_required=not url.lower().startswith("dns:"))
    except ValueError as exc:
        raise UsageError(f"{exc} (in {_shown(url)})") from None
    scheme = parts.scheme.lower()
    if "@" in parts.netloc and scheme not in _USERINFO_SCHEMES:
        raise UsageError(f"{scheme}:// URLs take no user:password@ ({_shown(url)})")
    if SCHEME_KINDS[scheme] == "icmp" and parts.port is not None:
        raise UsageError(f"{scheme}:// URLs take no port ({_shown(url)})")
    if scheme == "dns":
        _check_query_name(unquote(parts.path.strip("/")))
    if parts.netloc.endswith(":"):
        url = urlunsplit(parts._replace(netloc=parts.netloc[:-1]))
    return SCHEME_KINDS[scheme], url


def build_config(url: str, name: str | None, overrides: dict[str, Any]) -> BaseModel:
    """The target config for a one-shot URL, `overrides` being config fields; UsageError if invalid.

    Without `name`, the target is named by the URL with its credentials redacted (DESIGN §3): the
    name is `probe.target` on every span and the `target` of --json, so it is never a secret.
    """
    try:
        kind, url = parse_probe_url(url)
        from otelprobe.probes import config_type_for

        config_type: Any = config_type_for(kind)
        result: BaseModel = config_type.from_url(url, name or redact_url(url), **overrides)
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc)) from None
    except ConfigError as exc:
        raise UsageError("; ".join(problem.message for problem in exc.problems)) from None
    except ValueError as exc:  # UsageError, UnicodeError and the from_url methods' own checks
        raise UsageError(one_line(str(exc))) from None
    return result


def describe_validation_error(exc: ValidationError) -> str:
    """pydantic's errors as one line: `field.path: message; ...`."""
    described = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        described.append(f"{where}: {message}" if where else message)
    return one_line("; ".join(described))


def one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _check_query_name(name: str) -> None:
    import dns.exception
    import dns.name

    if not name:
        raise UsageError("the dns:// URL has no name to query: dns://[server[:port]]/name?type=A")
    try:
        dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise UsageError(f"invalid DNS name {name!r}: {exc}") from None


def _shown(url: str, *, quote: bool = True) -> str:
    """`url` as an error message may show it: credentials redacted, control bytes escaped."""
    redacted = redact_url(url)
    return repr(redacted) if quote else repr(redacted)[1:-1]
