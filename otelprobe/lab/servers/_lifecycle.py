"""The life cycle every lab TCP server shares: `start()`/`aclose()` as an async context manager,
and the URL a client uses to reach it.

HTTPFaultServer, RawFaultServer and TLSFront subclass `LabServer`; each still owns how it
listens, which port it got and how it shuts down.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class LabServer(abc.ABC):
    """A loopback server started with `start()` (or `async with`) and stopped with `aclose()`."""

    host: str

    @property
    @abc.abstractmethod
    def scheme(self) -> str:
        """URL scheme clients use: http or https."""

    @property
    @abc.abstractmethod
    def port(self) -> int:
        """The bound port (the one the OS picked for port 0); RuntimeError before start()."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/"

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
