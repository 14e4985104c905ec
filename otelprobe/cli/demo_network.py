"""The demo's network side when it runs as root: its targets behind the lab's emulated link.

`otelprobe demo` as root puts the lab servers in a network namespace of their own and the prober
in a second one, joined by the lab's userspace link emulator (lab/emulation/link.py: this kernel has no
netem). Network faults — latency, packet loss, a bandwidth limit — are then settings of that link,
as in `otelprobe lab run`, and the server faults work as before. The sidecar stays in the host's
namespace; a small relay inside the prober's namespace carries its OTLP export there. Everything
is created for the run and removed at its end (also after a crash: lab/emulation/netns.py's registry).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from typing import Any, Final, TypeVar

from otelprobe.lab import faults
from otelprobe.lab.emulation.link import TARGET_IPV4, Link, LinkEmulator
from otelprobe.lab.emulation.netns import Lab, LabUnavailable, require_lab_support
from otelprobe.lab.emulation.topology import ServerLoop

T = TypeVar("T")

NETWORK_FAULTS: Final[dict[str, faults.NetworkLatency | faults.PacketLoss | faults.BandwidthLimit]] = {
    "network_latency": faults.NetworkLatency.model_validate({"delay": "60ms"}),
    "packet_loss": faults.PacketLoss.model_validate({"rate": 0.1, "direction": "upstream"}),
    "bandwidth_limit": faults.BandwidthLimit.model_validate({"rate": "200KiB"}),
}
"""The link settings each network fault of the demo applies (magnitudes the lab trains on)."""

_RELAY_CHUNK: Final = 64 * 1024


def network_unavailable() -> str | None:
    """Why the demo cannot use network faults here, or None when it can."""
    try:
        require_lab_support(tun=True)
    except LabUnavailable as exc:
        return str(exc)
    return None


class DemoNetwork:
    """Two namespaces (targets, prober) and the emulated link between them; `close()` removes all.

    `host` is the address the servers bind to in the targets' namespace; `loop` runs them there
    (sockets belong to the namespace of the thread that makes them, outgoing ones too, so the
    servers' whole life — the TLS front's connections to its upstream included — is on that loop).
    """

    host: Final = TARGET_IPV4

    def __init__(self) -> None:
        self.lab = Lab()
        try:
            emulator = LinkEmulator(self.lab)
            self.target_namespace = emulator.target.name
            self.link: Link = emulator.add_vantage("demo")
            self.loop = ServerLoop(str(emulator.target.path), name="demo-targets")
        except BaseException:
            self.lab.close()
            raise
        self._relay: asyncio.Server | None = None
        self._relayed: set[asyncio.Task[None]] = set()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the targets' loop (inside their namespace) without blocking this loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop.loop))

    def set_fault(self, kind: str) -> None:
        direction, settings = faults.link_settings(NETWORK_FAULTS[kind])
        changes: dict[str, Any] = dict(settings)
        self.link.set(direction, **changes)

    def clear_fault(self, kind: str) -> None:
        cleared: dict[str, Any] = dict(faults.LINK_CLEAR[kind])
        self.link.set("both", **cleared)
        self.link.control.wait_drained()  # packets queued under the fault would hold back the next probes

    async def relay(self, to_port: int) -> int:
        """A TCP port on 127.0.0.1 inside the prober's namespace that leads to `to_port` here."""

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", to_port)
            except OSError:
                writer.close()
                return
            task = asyncio.current_task()
            assert task is not None
            self._relayed.add(task)
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                self._relayed.discard(task)
                for w in (writer, up_writer):
                    w.close()

        self._relay = await self.link.vantage.start_server(forward, "127.0.0.1", 0)
        port: int = self._relay.sockets[0].getsockname()[1]
        return port

    async def start_prober(self, argv: Sequence[str], log: Any) -> asyncio.subprocess.Process:
        """`argv` inside the prober's namespace; the lab kills it at cleanup if it is still running."""
        process = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.link.vantage.name, *argv, stdout=log, stderr=log
        )
        self.lab.register_pid(process.pid)
        return process

    async def aclose(self) -> None:
        if self._relay is not None:
            self._relay.close()
            for task in list(self._relayed):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._relay.wait_closed(), 2.0)
        self.loop.close()
        self.lab.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while data := await reader.read(_RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()


__all__ = ["NETWORK_FAULTS", "DemoNetwork", "network_unavailable"]
