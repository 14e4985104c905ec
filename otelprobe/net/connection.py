"""Sockets timed at their events: TCP connect and a TLS handshake driven over memory BIOs.

This is the part no library gives exactly: `tcp.connect` spans connect() issued -> established,
`tls.handshake` spans ClientHello written -> handshake complete, and a `TimedConnection` reports
the first and last byte of every read and write to its owner (the HTTP probe marks request,
TTFB and transfer from them). TLS runs over memory buffers (net/tls/openssl.py) so we see exactly
when bytes hit the socket, and set TCP_NODELAY so nothing waits behind Nagle (LAB-NOTES pitfall 3).

Edges that a read ends come from the kernel (`net/kernel_time.py`), not from when the event
loop got round to the read: `tcp.connect` ends at connect() + the kernel's SYN -> SYN-ACK sample,
a read is stamped with the kernel receive time of its newest byte. While `prompt_reads` is set
(the HTTP probe sets it until a response's first byte), reads are done the moment data arrives
by net/prompt_read.py's thread, so that segments queued behind the first one cannot take its stamp
when the loop is late (the kernel keeps only the newest stamp of merged segments).
Edges a write starts or ends are marked just before / after the send syscall, which runs in the
same loop step, so loop lag does not reach them. `otelprobe lab verify` checks both against a packet capture.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Callable

from otelprobe import names
from otelprobe.errors import ConnectRefused, ConnectTimeout, TLSError
from otelprobe.net.kernel_time import StampedReceiver, handshake_end_ns
from otelprobe.net.tls.openssl import ClientTLS, TLSSession
from otelprobe.timing import PhaseClock

_READ_SIZE = 65536
_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EADDRNOTAVAIL}


class TimedConnection:
    """A connected non-blocking socket, optionally wrapped in TLS, that stamps its I/O.

    `on_write(first_ns, last_ns)` runs after each application write hits the socket and
    `on_read(read_ns)` when a read returns data, both with `perf_counter_ns` timestamps.
    `read_ns` is when the newest byte of that read arrived (the kernel's receive stamp where
    available): for a first read, when the answer arrived, for a last read, when the data ended.
    """

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self._loop = loop
        self.tls: TLSSession | None = None
        """The TLS session once a handshake completed; application data goes through it."""
        self.on_write: Callable[[int, int], None] | None = None
        self.on_read: Callable[[int], None] | None = None
        self.prompt_reads = False
        """Set while the next read must keep its first segment's own stamp (until a response's
        first byte): the read is then done the moment data arrives (net/prompt_read.py)."""
        self.bytes_read = 0
        self.bytes_written = 0
        self._receiver = StampedReceiver(sock, loop)
        self._received_ns = 0
        """Arrival of the newest raw byte read so far (what a decrypted read is stamped with)."""

    @property
    def peer(self) -> tuple[str, int]:
        host, port = self.sock.getpeername()[:2]
        return str(host), int(port)

    async def start_tls(
        self, client: ClientTLS, server_hostname: str | None, clock: PhaseClock
    ) -> TLSSession:
        """Run the TLS handshake as the `tls.handshake` phase; raises TLSError on failure.

        `server_hostname` is verified (and sent as SNI unless an IP literal); it defaults to
        the peer's address.
        """
        session = client.session(server_hostname or self.peer[0])
        await self.start_session(session, clock)
        return session

    async def start_session(self, session: TLSSession, clock: PhaseClock) -> None:
        """Drive `session`'s handshake over this socket as the `tls.handshake` phase.

        Raises TLSError on failure; afterwards `read` and `write` go through the session.
        """
        with clock.phase(names.SPAN_TLS_HANDSHAKE) as phase:
            # The phase starts when the ClientHello is written, not when it is built.
            first_flight = True
            arrived_ns = 0
            try:
                while not await self._step(session):
                    pending = session.take_output()
                    if pending:
                        if first_flight:
                            phase.move_start(PhaseClock.now_ns())
                            first_flight = False
                        await self._send_raw(pending)
                    data = await self._recv_raw()
                    if not data:
                        raise TLSError("handshake_eof", "connection closed during the TLS handshake")
                    session.feed(data)
                    # The handshake ends when the last flight it needed arrived (the server's
                    # Finished), not after our certificate checks: that CPU is ours, not the peer's.
                    arrived_ns = self._received_ns
                pending = session.take_output()
                if pending:  # TLS 1.3: the client Finished goes out after the handshake completes
                    await self._send_raw(pending)
            except OSError as exc:
                raise TLSError("handshake_reset", f"connection lost during the TLS handshake: {exc}") from exc
            phase.end(arrived_ns or None)
        self.tls = session

    async def _step(self, session: TLSSession) -> bool:
        try:
            return session.step()
        except TLSError:
            # Send the alert that says why (e.g. bad_certificate) before the caller closes.
            pending = session.take_output()
            if pending:
                with contextlib.suppress(OSError):
                    await self._send_raw(pending)
            raise

    async def write(self, data: bytes) -> None:
        if self.tls is not None:
            data = self.tls.encrypt(data)
        first, last = await self._send_raw(data)
        self.bytes_written += len(data)
        if self.on_write is not None:
            self.on_write(first, last)

    async def read(self, max_bytes: int = _READ_SIZE) -> bytes:
        """Read up to max_bytes of application data; b"" at end of stream."""
        tls = self.tls
        if tls is None:
            return self._note_read(await self._recv_raw(max_bytes))
        while True:
            data = tls.decrypt(max_bytes)
            if data is not None:
                return self._note_read(data)
            raw = await self._recv_raw()
            if raw:
                tls.feed(raw)
            else:
                tls.feed_eof()

    def _note_read(self, data: bytes) -> bytes:
        if data:
            self.bytes_read += len(data)
            if self.on_read is not None:
                self.on_read(self._received_ns)
        return data

    async def _send_raw(self, data: bytes) -> tuple[int, int]:
        """Send all of `data`; returns when the first and the last send() call began.

        On loopback a send() runs the receiver's stack inside the call, so a mark after it
        would come late; the data leaves during the call, a few microseconds after it begins.
        """
        view = memoryview(data)
        first = last = PhaseClock.now_ns()
        sent = self._send_some(view)
        while sent < len(view):
            await self._writable()
            last = PhaseClock.now_ns()
            sent += self._send_some(view[sent:])
        return first, last

    def _send_some(self, view: memoryview) -> int:
        try:
            return self.sock.send(view)
        except (BlockingIOError, InterruptedError):
            return 0

    async def _writable(self) -> None:
        await _writable(self._loop, self.sock)

    async def _recv_raw(self, max_bytes: int = _READ_SIZE) -> bytes:
        data, self._received_ns = await self._receiver.receive(max_bytes, prompt=self.prompt_reads)
        return data

    def close(self) -> None:
        self._receiver.withdraw()
        self.sock.close()


async def timed_connect(
    clock: PhaseClock,
    address: str,
    port: int,
    *,
    source_address: str | None = None,
) -> TimedConnection:
    """Connect to an IP literal as the `tcp.connect` phase; ConnectRefused / ConnectTimeout on failure."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise local_socket_error(exc, "a TCP socket") from exc
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source_address:
            sock.bind((source_address, 0))
        with clock.phase(names.SPAN_TCP_CONNECT) as phase:
            phase.attributes[names.NETWORK_PEER_ADDRESS] = address
            phase.attributes[names.NETWORK_PEER_PORT] = port
            try:
                await _connect(loop, sock, address, port)
            except ConnectionRefusedError as exc:
                raise ConnectRefused(
                    "connection_refused", f"{address}:{port} refused the connection"
                ) from exc
            except ConnectionResetError as exc:
                raise ConnectRefused("connection_reset", f"{address}:{port} reset the connection") from exc
            except TimeoutError as exc:
                raise ConnectTimeout("connect_timeout", f"no answer from {address}:{port}") from exc
            except OSError as exc:
                if exc.errno in _UNREACHABLE:
                    raise ConnectTimeout("unreachable", f"{address}:{port}: {exc.strerror}") from exc
                raise
            connected_ns = PhaseClock.now_ns()
            phase.attributes[names.NETWORK_LOCAL_PORT] = int(sock.getsockname()[1])
            phase.end(handshake_end_ns(sock, phase.start_ns, connected_ns))
    except BaseException:
        sock.close()
        raise
    return TimedConnection(sock, loop)


def local_socket_error(exc: OSError, what: str) -> ConnectRefused:
    """The prober itself could not open `what` (no connection was tried): the process at its
    descriptor limit (`local_fds_exhausted`, e.g. a low `ulimit -n`) or another local refusal."""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return ConnectRefused(
            "local_fds_exhausted",
            f"cannot open {what}: {exc.strerror} (the prober is at its descriptor limit)",
        )
    return ConnectRefused("local_socket_error", f"cannot open {what}: {exc.strerror or exc}")


async def _connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, address: str, port: int) -> None:
    """connect() (the SYN leaves during this call, right after the phase began), then wait.

    What `loop.sock_connect` does for an IP literal, without its address re-check and extra
    callbacks; a failure is raised as the OSError subclass of its errno (ConnectionRefusedError...).
    """
    error = sock.connect_ex((address, port))
    if error == errno.EINPROGRESS:
        await _writable(loop, sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, os.strerror(error))


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    future: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def on_writable() -> None:
        if not future.done():
            future.set_result(None)

    loop.add_writer(fd, on_writable)
    try:
        await future
    finally:
        loop.remove_writer(fd)
