"""Secret values brought in by `${ENV}` / `${file:PATH}` references, and their redaction.

The config loader registers every substituted value here; anything exported or logged that might
contain one (url.full, error messages) passes through `redact`, so a secret never leaves the
process. URL credentials are redacted whether or not they came from a reference.
"""

from __future__ import annotations

import re
import threading
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED: Final = "REDACTED"
# Query parameters that carry credentials: the semantic conventions' url.full list, and the names
# API keys, passwords and pre-signed URLs commonly use (Google's `key`, AWS SigV4's X-Amz-*).
SENSITIVE_QUERY_KEYS: Final = frozenset(
    {
        "awsaccesskeyid",
        "signature",
        "sig",
        "x-goog-signature",
        "x-goog-credential",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "token",
        "access_token",
        "id_token",
        "refresh_token",
        "api_key",
        "apikey",
        "key",
        "password",
        "passwd",
        "secret",
        "client_secret",
    }
)
_MIN_SECRET_LEN: Final = 4  # shorter values would redact ordinary text
# For URLs urlsplit refuses: the userinfo and the values of sensitive query keys, found by text.
_USERINFO: Final = re.compile(r"^([^:/?#]*://)[^/?#]*@")
_SENSITIVE_QUERY_VALUE: Final = re.compile(
    r"([?&](?:" + "|".join(map(re.escape, SENSITIVE_QUERY_KEYS)) + r")=)[^&#]*", re.IGNORECASE
)

_lock = threading.Lock()
_secrets: set[str] = set()
_longest_first: tuple[str, ...] = ()
"""The secrets in redaction order, replaced whole on change so that `redact` reads it lock-free
(it runs for every exported string value)."""


def register_secret(value: str) -> None:
    """Remember a value that must never be exported or logged."""
    global _longest_first
    if len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(value)
            _longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def clear_secrets() -> None:
    global _longest_first
    with _lock:
        _secrets.clear()
        _longest_first = ()


def redact(text: str) -> str:
    """Replace every registered secret in `text` with REDACTED (longest first)."""
    for secret in _longest_first:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


_URL_IN_TEXT: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_text(text: str) -> str:
    """Free text (an error message, a log line) with every URL in it redacted as `redact_url`
    does, and every registered secret replaced."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda match: redact_url(match.group()), text)
    return redact(text)


def redact_url(url: str) -> str:
    """url.full as the semantic conventions want it: no credentials, no signed query values."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket, say: error messages show it, never its userinfo
        text = _USERINFO.sub(rf"\1{REDACTED}:{REDACTED}@", url)
        return redact(_SENSITIVE_QUERY_VALUE.sub(rf"\1{REDACTED}", text))
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{REDACTED}:{REDACTED}@{hostport}" if userinfo else hostport
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SENSITIVE_QUERY_KEYS for k, _ in pairs):
            query = urlencode([(k, REDACTED if k.lower() in SENSITIVE_QUERY_KEYS else v) for k, v in pairs])
    # The text pattern as well, for what urlsplit does not read as userinfo ("://user:pw@host").
    text = _USERINFO.sub(
        rf"\1{REDACTED}:{REDACTED}@", urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    )
    return redact(text)
