"""Content-Encoding decoding for the HTTP probe's body checks: bounded and incremental.

`HTTPProbe._check` calls `decode_body` on the raw body (itself capped at `body_max`) when a body
check needs it. It undoes the codings the response names (gzip / x-gzip, deflate zlib-wrapped or
raw, br and zstd when their decoder package is importable, stacked codings in reverse order).
Every decoder hands at most `_CHUNK` bytes at a time to the next one and the result never grows
past `limit`, so a decompression bomb costs about `limit` bytes (plus a chunk and a decoder
window per coding), never its full size.

Data after the end of a complete gzip member or zstd frame is decoded when it starts another
one and otherwise ignored (browsers and curl ignore such trailing bytes); a stream that ends
early, or bytes that do not decode, fail as `content_decoding_failed`.
"""

from __future__ import annotations

import functools
import importlib
import zlib
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any, ClassVar, Final

from otelprobe.errors import ProtocolError

_CHUNK: Final = 64 * 1024
_MAX_CODINGS: Final = 4  # real servers stack two at most; each layer costs a decoder's window
_ZSTD_WINDOW_LOG_MAX: Final = 23  # 8 MiB, RFC 9659's limit for zstd in HTTP
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC: Final = b"\x1f\x8b"


class _Corrupt(Exception):
    """A coding's bytes do not decode; the message says where."""


def content_codings(headers: Sequence[tuple[bytes, bytes]]) -> list[str]:
    """The response's Content-Encoding tokens, lower-cased, in the order they were applied."""
    codings: list[str] = []
    for name, value in headers:
        if name.lower() == b"content-encoding":
            tokens = (t.strip().lower() for t in value.decode("latin-1").split(","))
            codings += [t for t in tokens if t and t != "identity"]
    return codings


def decode_body(body: bytes, codings: Sequence[str], limit: int) -> bytes:
    """Undo `codings` (last applied first); ProtocolError when that is impossible or over `limit`.

    Details: `unsupported_content_encoding`, `content_decoding_failed`, `body_too_large`.
    """
    if not codings or not body:
        return body  # HEAD, 204 and 304 announce a coding for a body they do not send
    if len(codings) > _MAX_CODINGS:
        raise ProtocolError(
            "unsupported_content_encoding",
            f"Content-Encoding stacks {len(codings)} codings, more than {_MAX_CODINGS}",
        )
    stages = [_decoder(coding) for coding in reversed(codings)]
    chunks: Iterator[bytes] = _slices(body)
    for stage in stages:
        chunks = stage.run(chunks)
    decoded = bytearray()
    try:
        for chunk in chunks:
            if len(decoded) + len(chunk) > limit:
                raise ProtocolError(
                    "body_too_large",
                    f"body decoded from Content-Encoding {', '.join(codings)} exceeds body_max "
                    f"({limit} bytes)",
                )
            decoded += chunk
    except _Corrupt as exc:
        raise ProtocolError("content_decoding_failed", f"body does not decode: {exc}") from exc
    return bytes(decoded)


def _slices(body: bytes) -> Iterator[bytes]:
    # Slices keep each decoder's unconsumed input (copied on every call) small.
    for start in range(0, len(body), _CHUNK):
        yield body[start : start + _CHUNK]


class _Stage:
    """One coding's decoder: bounded output per call, members / frames one after another."""

    name: ClassVar[str]
    errors: tuple[type[Exception], ...] = (zlib.error,)
    next_magic: ClassVar[tuple[bytes, ...]] = ()  # a following member starts so; else it is ignored

    def __init__(self) -> None:
        self._started = False
        self._in_member = True
        self._tail = b""  # bytes after a complete member, until we know what they are
        self._ignoring = False
        self._new_member()

    def run(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Decode the chunks as they come; raise `_Corrupt` if the stream is broken or cut short."""
        try:
            for data in chunks:
                yield from self._feed(data)
            if self._started and self._in_member:
                raise _Corrupt(f"{self.name} stream ends early")
        except self.errors as exc:
            raise _Corrupt(f"{self.name}: {exc}") from exc

    def _feed(self, data: bytes) -> Iterator[bytes]:
        self._started = self._started or bool(data)
        while data or self._in_member:
            if not self._in_member:
                data = self._after_member(data)
                if not data:
                    return
            out = self._step(data)
            data = b""
            if out:
                yield out
            if self._ended():
                self._in_member = False
                data = self._leftover()
            elif not self._pending():
                return

    def _after_member(self, data: bytes) -> bytes:
        """What follows a complete member: the next member's bytes, or b"" (ignored or not known yet)."""
        if self._ignoring:
            return b""
        self._tail += data
        if self.next_magic and len(self._tail) < max(len(m) for m in self.next_magic):
            return b""  # too short to tell yet
        if self.next_magic and self._tail.startswith(self.next_magic):
            data, self._tail, self._in_member = self._tail, b"", True
            self._new_member()
            return data
        self._ignoring, self._tail = True, b""
        return b""

    # --- per coding -------------------------------------------------------------------------

    def _new_member(self) -> None:
        raise NotImplementedError

    def _step(self, data: bytes) -> bytes:
        """Decode at most `_CHUNK` bytes of `data` (plus what is held back from earlier calls)."""
        raise NotImplementedError

    def _pending(self) -> bool:
        """Whether more output may come without more input."""
        raise NotImplementedError

    def _ended(self) -> bool:
        raise NotImplementedError

    def _leftover(self) -> bytes:
        """Input after the end of the member just completed."""
        raise NotImplementedError


class _Zlib(_Stage):
    """gzip (and zlib data labelled gzip, as zlib's header detection accepts)."""

    name = "gzip"
    next_magic: ClassVar[tuple[bytes, ...]] = (_GZIP_MAGIC,)
    wbits: int = 32 + zlib.MAX_WBITS  # a gzip or zlib header, detected

    def _new_member(self) -> None:
        self._inflate: Any = None
        self._held = b""
        self._last_full = False

    def _open(self, data: bytes) -> bool:
        """Create the decompressor once enough of the header is known; False to wait for more."""
        self._inflate = zlib.decompressobj(self.wbits)
        return True

    def _step(self, data: bytes) -> bytes:
        data, self._held = self._held + data, b""
        if self._inflate is None and not self._open(data):
            self._held = data
            return b""
        out: bytes = self._inflate.decompress(data, _CHUNK)
        self._held = self._inflate.unconsumed_tail
        self._last_full = len(out) == _CHUNK
        return out

    def _pending(self) -> bool:
        return (bool(self._held) and self._inflate is not None) or self._last_full

    def _ended(self) -> bool:
        return self._inflate is not None and bool(self._inflate.eof)

    def _leftover(self) -> bytes:
        return bytes(self._inflate.unused_data)


class _Deflate(_Zlib):
    """HTTP's deflate is zlib-wrapped (RFC 9110), but some servers send raw deflate: browsers
    accept both, telling them apart by the zlib header."""

    name = "deflate"
    next_magic = ()

    def _open(self, data: bytes) -> bool:
        if len(data) < 2:
            return False
        cmf, flg = data[0], data[1]
        zlib_header = cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        return True


class _Brotli(_Stage):
    """br, with a brotli module whose decoder can bound its output (brotli >= 1.2)."""

    name = "br"

    def __init__(self, module: ModuleType) -> None:
        self._module = module
        self.errors = (module.error,)
        super().__init__()

    def _new_member(self) -> None:
        self._decoder: Any = self._module.Decompressor()
        self._held = b""

    def _step(self, data: bytes) -> bytes:
        if not self._decoder.can_accept_more_data():
            # Output is still pending: the decoder takes only b"" until it is drained.
            self._held += data
            data = b""
        else:
            data, self._held = self._held + data, b""
        if self._decoder.is_finished():
            if data:
                raise _Corrupt("br: data after the end of the stream")
            return b""
        return bytes(self._decoder.process(data, output_buffer_limit=_CHUNK))

    def _pending(self) -> bool:
        return bool(self._held) or not self._decoder.can_accept_more_data()

    def _ended(self) -> bool:
        return bool(self._decoder.is_finished()) and not self._pending()

    def _leftover(self) -> bytes:
        return b""  # brotli reports bytes after its end as an error, not as unused data

    def _after_member(self, data: bytes) -> bytes:
        # Consistent with the error brotli raises when such bytes come in the same call.
        if data:
            raise _Corrupt("br: data after the end of the stream")
        return b""


class _Zstd(_Stage):
    """zstd (RFC 8878), frames one after another; windows over 8 MiB are refused (RFC 9659)."""

    name = "zstd"
    # A zstd frame, or a skippable frame (magic 0x184D2A50-5F, little-endian).
    next_magic = (_ZSTD_MAGIC, *(bytes((0x50 + i, 0x2A, 0x4D, 0x18)) for i in range(16)))

    def __init__(self, module: ModuleType) -> None:
        self._module = module
        self.errors = (module.ZstdError,)
        super().__init__()

    def _new_member(self) -> None:
        options = {self._module.DecompressionParameter.window_log_max: _ZSTD_WINDOW_LOG_MAX}
        self._decoder: Any = self._module.ZstdDecompressor(options=options)

    def _step(self, data: bytes) -> bytes:
        return bytes(self._decoder.decompress(data, _CHUNK))

    def _pending(self) -> bool:
        return not self._decoder.needs_input

    def _ended(self) -> bool:
        return bool(self._decoder.eof)

    def _leftover(self) -> bytes:
        return bytes(self._decoder.unused_data)


def _decoder(coding: str) -> _Stage:
    if coding in ("gzip", "x-gzip"):
        return _Zlib()
    if coding == "deflate":
        return _Deflate()
    if coding == "br":
        brotli = _brotli_module()
        if brotli is None:
            raise _unsupported(coding, "needs the brotli package (>= 1.2), which is not installed")
        return _Brotli(brotli)
    if coding == "zstd":
        zstd = _zstd_module()
        if zstd is None:
            raise _unsupported(coding, "needs the backports.zstd package, which is not installed")
        return _Zstd(zstd)
    raise _unsupported(coding, "is not supported")


def _unsupported(coding: str, why: str) -> ProtocolError:
    shown = coding if len(coding) <= 40 else coding[:37] + "..."
    return ProtocolError(
        "unsupported_content_encoding", f"Content-Encoding {shown!r} {why}: the body cannot be checked"
    )


@functools.cache
def _brotli_module() -> ModuleType | None:
    """brotli or brotlicffi, if one is installed with bounded decompression (1.2 and later)."""
    for name in ("brotli", "brotlicffi"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module.Decompressor(), "can_accept_more_data"):
            return module
    return None


@functools.cache
def _zstd_module() -> ModuleType | None:
    """compression.zstd (Python 3.14) or its backport: both bound their output (max_length)."""
    for name in ("compression.zstd", "backports.zstd"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None
