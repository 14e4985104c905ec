from __future__ import annotations

import socket

import pytest

from otelprobe import errors


def test_error_types_are_designs_eight() -> None:
    assert errors.ERROR_TYPES == {
        "dns_error",
        "connect_refused",
        "connect_timeout",
        "tls_error",
        "timeout",
        "http_status",
        "assertion_failed",
        "protocol_error",
    }


def test_map_exceptions_most_specific_match_wins() -> None:
    mapping = {
        OSError: (errors.ProtocolError, "os_error"),
        ConnectionRefusedError: (errors.ConnectRefused, "connection_refused"),
    }
    with pytest.raises(errors.ConnectRefused) as info, errors.map_exceptions(mapping):
        raise ConnectionRefusedError("nope")
    assert info.value.detail == "connection_refused"
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_map_exceptions_lets_unknown_exceptions_through() -> None:
    with pytest.raises(KeyError), errors.map_exceptions({socket.gaierror: (errors.DNSError, "x")}):
        raise KeyError("bug")
