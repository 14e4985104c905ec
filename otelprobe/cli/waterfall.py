"""The terminal waterfall of one probe attempt: a bar per phase on a shared time axis."""

from __future__ import annotations

from typing import Final

from otelprobe import names
from otelprobe.results import ProbeResult

_BAR_WIDTH: Final = 48
_EIGHTHS: Final = " ▏▎▍▌▋▊▉█"


def _bar(start_ms: float, duration_ms: float, total_ms: float, width: int = _BAR_WIDTH) -> str:
    """A bar drawn with eighth-blocks so that sub-cell phases stay visible."""
    scale = width / total_ms if total_ms > 0 else 0.0
    begin = start_ms * scale
    length = max(duration_ms * scale, 1 / 8)
    cells = [" "] * width
    position = begin
    end = min(begin + length, float(width))
    while position < end - 1e-9:
        cell = int(position)
        if cell >= width:
            break
        fill = min(end, cell + 1) - position
        cells[cell] = "█" if fill >= 1 - 1e-9 else _EIGHTHS[max(1, round(fill * 8))]
        position = cell + 1
    return "".join(cells)


def render(result: ProbeResult, *, color: bool = False) -> str:
    """Text of the waterfall: header (target, outcome), one line per phase, attributes of note."""
    total_ms = (result.end_ns - result.start_ns) / 1e6
    ok = result.success
    mark = "OK " if ok else "FAIL"
    if color:
        mark = f"\x1b[32m{mark}\x1b[0m" if ok else f"\x1b[31m{mark}\x1b[0m"
    status = result.attributes.get(names.HTTP_RESPONSE_STATUS_CODE)
    peer = result.attributes.get(names.NETWORK_PEER_ADDRESS)
    header = f"{mark} probe {result.kind} {result.target}"
    if peer:
        header += f" -> {peer}"
    if status is not None:
        header += f"  status {status}"
    header += f"  total {total_ms:.3f} ms"
    lines = [header]
    if result.error is not None:
        lines.append(
            f"     error.type={result.error.error_type} detail={result.error.detail}: {result.error}"
        )
    width = max((len(p.name) for p in result.phases), default=10)
    for phase in result.phases:
        start_ms = (phase.start_ns - result.start_ns) / 1e6
        duration_ms = phase.duration_ns / 1e6
        flag = f"  x {phase.error_type}" if phase.error_type else ""
        bar = _bar(start_ms, duration_ms, total_ms)
        lines.append(f"  {phase.name:<{width}} {start_ms:9.3f} +{duration_ms:9.3f} ms |{bar}|{flag}")
    for key in (names.NETWORK_PROTOCOL_VERSION, names.TLS_PROTOCOL_VERSION, names.TLS_CIPHER, names.URL_FULL):
        if key in result.attributes:
            lines.append(f"     {key}={result.attributes[key]}")
    return "\n".join(lines)
