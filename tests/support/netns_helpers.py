"""Private network namespaces for the path tests (icmp, traceroute, traceroute_on_failure).

Each test module builds its own topology with `namespaces()` and runs probe code inside it with
`in_netns()`; the namespaces and their addresses exist only for the module's duration.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, TypeVar, cast

import pytest

T = TypeVar("T")
CLONE_NEWNET: Final = 0x40000000


def socket_denied(family: socket.AddressFamily, kind: socket.SocketKind) -> str | None:
    """Why an ICMP socket of `family`/`kind` cannot be opened here, or None if it can."""
    protocol = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    try:
        socket.socket(family, kind, protocol).close()
    except OSError as exc:
        return str(exc)
    return None


RAW_ICMP_DENIED: Final = socket_denied(socket.AF_INET, socket.SOCK_RAW)
"""Why raw IPv4 ICMP sockets are refused (no CAP_NET_RAW), or None."""

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and iproute2"
)


def in_netns(namespace: str, work: Callable[[], T]) -> T:
    """Run `work` on a thread switched into `namespace`: sockets it opens live there."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                outcome["error"] = OSError(ctypes.get_errno(), "setns failed")
                return
        finally:
            os.close(fd)
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=60)
    if "error" in outcome:
        raise outcome["error"]
    return cast(T, outcome["value"])


@contextlib.contextmanager
def namespaces(names: Sequence[str], commands: Sequence[str]) -> Iterator[None]:
    """Add the namespaces `names`, run `commands` (space-separated argv, check=True), and delete
    the namespaces on exit, whether or not set-up finished."""
    try:
        for command in (*(f"ip netns add {name}" for name in names), *commands):
            subprocess.run(command.split(), check=True, capture_output=True)
        yield
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
