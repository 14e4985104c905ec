"""The key-exchange groups the local OpenSSL knows.

`tls.groups` in a config is validated against it (settings/common.py), and the TLS engine
(net/tls/openssl.py) sets a context's groups with it: one place asks OpenSSL, below both.
"""

from __future__ import annotations

from collections.abc import Sequence

from OpenSSL import SSL
from OpenSSL._util import lib as _lib


def unknown_groups(groups: Sequence[str]) -> list[str]:
    """The names OpenSSL does not know as key-exchange groups (config validation)."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    return [group for group in groups if not set_groups(context, [group])]


def set_groups(context: SSL.Context, groups: Sequence[str]) -> bool:
    """Offer `groups` in this order; False (and OpenSSL's error queue cleared) if one is unknown."""
    if _lib.SSL_CTX_set1_curves_list(context._context, ":".join(groups).encode()) == 1:
        return True
    _lib.ERR_clear_error()  # or pyOpenSSL would report this with the next unrelated error
    return False
