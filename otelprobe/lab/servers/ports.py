"""Ports that fail at connect: a refused port (the `refused` fault) and a black-holed port whose
connects never complete (the `blackhole` fault).

Both are plain kernel behaviour on loopback, so no packet filter or namespace is needed:

- Refused: a socket bound to the port but never listening. The kernel answers SYNs to a port
  with no listener by RST (ECONNREFUSED), and holding the bound socket keeps anyone else from
  taking the port while the fault is on.
- Black hole: a listener with backlog 0 whose accept queue we fill with one connection of our own
  and never accept. Linux then drops every further SYN *before* syncookies are considered
  (tcp_conn_request checks `sk_acceptq_is_full` first), and keeps dropping the retransmitted
  SYNs. Checked on this machine (kernel 6.18, tcp_syncookies=1): the client stays in SYN-SENT
  and its SYN retransmits (1, 2, 3, ... s with tcp_syn_linear_timeouts, LAB-NOTES pitfall 1) are
  all dropped, so connect ends only at the client's own timeout. LAB-NOTES pitfall 10: this is
  loss of *every* SYN; it cannot make a tunable connect delay (that needs lab/emulation/link.py).
"""

from __future__ import annotations

import logging
import socket
from types import TracebackType
from typing import Self

logger = logging.getLogger(__name__)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class RefusedPort:
    """A port where connects are refused, reserved for as long as this object is open.

    Args:
        host: loopback address to reserve the port on.
        port: a specific port, or 0 for a free one.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._sock: socket.socket | None = socket.socket(_family(host), socket.SOCK_STREAM)
        try:
            # A server that just closed on this port leaves TIME_WAIT connections behind, which
            # block a plain bind (EADDRINUSE) for a minute; the lab swaps servers for faults here.
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self.port: int = self._sock.getsockname()[1]
        logger.debug("refused port %s:%s", host, self.port)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class BlackholePort:
    """A port where connects hang in SYN-SENT: SYNs are dropped by a full accept queue.

    Closing it frees the port; clients still retrying then get RST on their next SYN.

    Args:
        host: loopback address to listen on.
        port: a specific port, or 0 for a free one.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        family = _family(host)
        self._listener: socket.socket | None = socket.socket(family, socket.SOCK_STREAM)
        self._filler: socket.socket | None = None
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as in RefusedPort
            self._listener.bind((host, port))
            # Backlog 0 lets exactly one connection wait in the accept queue (the kernel compares
            # queued > backlog); the filler below takes that place and is never accepted.
            self._listener.listen(0)
            self.port: int = self._listener.getsockname()[1]
            self._filler = socket.socket(family, socket.SOCK_STREAM)
            # On loopback the handshake completes inside connect(); a 1 s bound guards the setup.
            self._filler.settimeout(1.0)
            self._filler.connect((host, self.port))
        except OSError:
            self.close()
            raise
        logger.debug("black-holed port %s:%s", host, self.port)

    def close(self) -> None:
        for sock in (self._filler, self._listener):
            if sock is not None:
                sock.close()
        self._filler = self._listener = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
