"""One DNS query over UDP, retransmitted as a stub resolver does, with each try's wire edges.

A lost datagram must cost a retransmit, not the probe (glibc `options timeout:/attempts:`,
systemd-resolved and Go's resolver all retransmit). `exchange_udp` sends the query, and when no
answer has come after the per-try timeout sends the same message (same ID, same question) again
from a new socket, up to `attempts` tries; an answer to any try is accepted, and each try having
its own port says exactly which one was answered. `net/dns/channel.py` runs its UDP exchanges
here; `record_tries` puts what happened on the `dns.lookup` phase (attributes and one
`probe.dns.retransmit` event per retransmit).

Nothing outlives the exchange: readers are removed and sockets closed synchronously on every
path (answer, timeout, error, cancellation), so a cancelled lookup cannot leave an fd registered.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import dns.message
import dns.rdatatype

from otelprobe import names
from otelprobe.errors import DNSError, ProtocolError
from otelprobe.net.kernel_time import enable_rx_timestamps, realtime_offset_ns, rx_stamp_ns
from otelprobe.timing import OpenPhase

_UDP_MAX: Final = 65535
_ANCILLARY_BYTES: Final = socket.CMSG_SPACE(16)  # one struct timespec (SO_TIMESTAMPNS)
_READS_PER_WAKEUP: Final = 16  # stray datagrams drained per readiness callback; the rest wait for the next
_REJECTED_KEPT: Final = 4


@dataclass(frozen=True, slots=True)
class RetransmitPolicy:
    """How often a UDP query is sent and how long each try waits for its answer.

    Attributes:
        attempts: tries in all (1 = never retransmit).
        try_timeout_s: wait for an answer before the next try; after the last try the query
            gives up, so a query never takes longer than `attempts * try_timeout_s`. None: one
            try that waits until the caller's deadline.
    """

    attempts: int = 1
    try_timeout_s: float | None = None

    @classmethod
    def of(cls, attempts: int, try_timeout_s: float | None, timeout_s: float) -> RetransmitPolicy:
        """The policy of a config: `try_timeout_s` defaults to the timeout split over the tries."""
        return cls(attempts, try_timeout_s if try_timeout_s is not None else timeout_s / attempts)


ONE_TRY: Final = RetransmitPolicy()
"""No retransmit: one try that waits until the caller's deadline."""


@dataclass(frozen=True, slots=True)
class UDPTries:
    """How one UDP query went: when each try left, from which port, and which one was answered.

    Attributes:
        query_type: the question's type ("A", "AAAA", ...).
        sent_ns: when each try's send() began (perf_counter_ns), in try order.
        local_ports: each try's source port (to match a packet capture).
        answered: the 1-based try whose answer was used; None when none was.
    """

    query_type: str
    sent_ns: tuple[int, ...]
    local_ports: tuple[int, ...]
    answered: int | None = None


class UDPExchange:
    """The tries of one query; `run()` returns the first matching answer to any of them.

    `tries` is readable at any time, also after a timeout or a cancellation.
    """

    def __init__(
        self,
        ip: str,
        port: int,
        query: dns.message.Message,
        parse: Callable[[bytes], dns.message.Message],
        policy: RetransmitPolicy,
    ) -> None:
        self._address = (ip, port)
        self._wire = query.to_wire()
        self._parse = parse
        self._policy = policy
        self._query_type = dns.rdatatype.to_text(query.question[0].rdtype) if query.question else ""
        self._sockets: list[socket.socket] = []
        self._sent_ns: list[int] = []
        self._ports: list[int] = []
        self._answered: int | None = None
        self.arrived_ns: int | None = None
        """Kernel arrival of the answer once it has been read, before `run()` returns it."""
        self._offset_ns = 0
        self._answer: asyncio.Future[tuple[dns.message.Message, int]] | None = None
        self.rejected: list[ProtocolError] = []
        """Datagrams from the server that were no valid answer to the query (the last few)."""
        self.rejected_count = 0

    @property
    def tries(self) -> UDPTries:
        return UDPTries(self._query_type, tuple(self._sent_ns), tuple(self._ports), self._answered)

    async def run(self) -> tuple[dns.message.Message, int]:
        """Send the tries until one is answered: (answer, its kernel arrival on perf_counter_ns).

        Raises:
            DNSError: resolver_timeout after the last try's timeout; resolver_unreachable when
                the server's port is closed (ICMP port unreachable) or no socket can reach it.
        """
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        self._offset_ns = realtime_offset_ns()
        try:
            for _ in range(self._policy.attempts):
                self._send_try(loop)
                await asyncio.wait((self._answer,), timeout=self._policy.try_timeout_s)
                if self._answer.done():
                    return self._answer.result()
            tries = len(self._sent_ns)
            if self.rejected:
                raise self.invalid_answers()
            raise DNSError(
                "resolver_timeout",
                f"no answer from {_bracket(self._address[0])}:{self._address[1]} to {tries}"
                f" {'try' if tries == 1 else 'tries'} of {(self._policy.try_timeout_s or 0) * 1e3:g} ms",
            )
        finally:
            self.close(loop)

    def _send_try(self, loop: asyncio.AbstractEventLoop) -> None:
        ip, port = self._address
        try:
            sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as exc:
            raise DNSError("resolver_unreachable", f"no UDP socket for {_bracket(ip)}: {exc}") from exc
        self._sockets.append(sock)
        try:
            sock.setblocking(False)
            enable_rx_timestamps(sock)
            # Connected: only the server's datagrams are accepted, and ICMP errors are reported.
            sock.connect(self._address)
        except OSError as exc:  # no route to the server's family or network
            raise DNSError("resolver_unreachable", f"{_bracket(ip)}:{port}: {exc}") from exc
        self._ports.append(int(sock.getsockname()[1]))
        loop.add_reader(sock.fileno(), self._readable, sock, len(self._sockets))
        # A datagram leaves inside send(): this mark is its departure.
        self._sent_ns.append(time.perf_counter_ns())
        try:
            sock.send(self._wire)
        except (BlockingIOError, InterruptedError):
            pass  # a full send buffer drops the datagram, as a lossy link would; the next try covers it
        except ConnectionRefusedError as exc:
            raise _unreachable(ip, port) from exc
        except OSError as exc:
            raise DNSError("resolver_unreachable", f"{_bracket(ip)}:{port}: {exc}") from exc

    def _readable(self, sock: socket.socket, number: int) -> None:
        answer = self._answer
        if answer is None or answer.done():
            return
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, ancillary, _, _ = sock.recvmsg(_UDP_MAX, _ANCILLARY_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                answer.set_exception(_unreachable(*self._address))
                return
            except OSError as exc:
                answer.set_exception(DNSError("resolver_unreachable", f"{self._address[0]}: {exc}"))
                return
            stamp = rx_stamp_ns(ancillary, self._offset_ns) if ancillary else None
            arrived_ns = stamp if stamp is not None else time.perf_counter_ns()
            try:
                response = self._parse(data)
            except ProtocolError as exc:
                # A stray or forged datagram is not our answer: keep waiting, but remember it, so
                # that a server answering only garbage is not reported as one that never answered.
                self.rejected_count += 1
                self.rejected = [*self.rejected[-(_REJECTED_KEPT - 1) :], exc]
                continue
            self._answered, self.arrived_ns = number, arrived_ns
            answer.set_result((response, arrived_ns))
            return

    def invalid_answers(self) -> ProtocolError:
        """The error of an exchange that got only invalid answers (`rejected` is not empty)."""
        server = f"{_bracket(self._address[0])}:{self._address[1]}"
        count, last = self.rejected_count, self.rejected[-1].message
        plural = "s" if count != 1 else ""
        return ProtocolError(
            "invalid_dns_answer", f"{count} answer{plural} from {server}, none valid: {last}"
        )

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop listening and close every try's socket (idempotent)."""
        for sock in self._sockets:
            if sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
                sock.close()
        answer = self._answer
        if answer is not None and answer.done() and not answer.cancelled():
            answer.exception()  # retrieved: an error nobody awaited is not "never retrieved"


def record_tries(phase: OpenPhase, tries: Sequence[UDPTries], answered_attempt: int | None) -> None:
    """Put the UDP tries of a lookup's queries on its phase.

    `probe.dns.attempts` is the most tries any query needed, `probe.dns.answered_attempt` the
    try whose answer ended the lookup, and every retransmit is a `probe.dns.retransmit` event at
    its send time with the query type and the try's number.
    """
    if not tries:
        return
    phase.attributes[names.PROBE_DNS_ATTEMPTS] = max(len(t.sent_ns) for t in tries)
    if answered_attempt is not None:
        phase.attributes[names.PROBE_DNS_ANSWERED_ATTEMPT] = answered_attempt
    for query in tries:
        for number, sent_ns in enumerate(query.sent_ns[1:], start=2):
            phase.add_event(
                names.EVENT_DNS_RETRANSMIT,
                sent_ns,
                {names.PROBE_DNS_QUERY_TYPE: query.query_type, names.PROBE_DNS_ATTEMPT: number},
            )


def _unreachable(ip: str, port: int) -> DNSError:
    return DNSError("resolver_unreachable", f"{_bracket(ip)}:{port}: port unreachable (no DNS server)")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
