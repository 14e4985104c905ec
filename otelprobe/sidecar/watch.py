"""A live terminal view of a running sidecar: open incidents with ranked causes and evidence.

A client of the sidecar API (api.py), behind `otelprobe sidecar watch --api URL`: it polls
/healthz and /v1/incidents and redraws. `render` is a pure function of those two JSON answers
(golden-tested); `watch` does the polling. Plain text with ANSI colours, no curses: it works in
any terminal, in tmux and in a CI log (colour off when the output is not a terminal).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TextIO

import aiohttp

from otelprobe.sidecar.view import COUNTERS

CAUSES_SHOWN: Final = 3
EVIDENCE_SHOWN: Final = 3
RECENT_SHOWN: Final = 5
BAR_CELLS: Final = 20
INCIDENT_LIMIT: Final = 50
_CLEAR: Final = "\x1b[H\x1b[2J"
_STYLES: Final = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


class _Paint:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, *styles: str) -> str:
        if not self.color or not styles:
            return text
        codes = ";".join(_STYLES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"


def _clock(stamp: str | None) -> str:
    """'2026-11-18T11:06:48.000Z' -> '11:06:48Z' (the date is noise in a live view)."""
    if not stamp:
        return "?"
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).strftime("%H:%M:%SZ")
    except ValueError:
        return stamp


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _bar(share: float, cells: int = BAR_CELLS) -> str:
    full = round(max(0.0, min(1.0, share)) * cells)
    return "█" * full + "░" * (cells - full)


def _header(api_url: str, health: Mapping[str, Any], paint: _Paint) -> list[str]:
    status = str(health.get("status", "?"))
    colour = {"ok": "green", "warming_up": "yellow", "starting": "yellow"}.get(status, "red")
    described = health.get("model") or {}
    model = described.get("version") or "no model"
    if described.get("registry_version"):  # the registry's name first: what rollback takes
        model = f"{described['registry_version']} ({model})"
    lines = [
        " · ".join(
            [
                paint("otelprobe sidecar", "bold"),
                api_url,
                paint(status, "bold", colour),
                f"model {model}",
                f"{health.get('windows_closed', 0)} windows",
                f"{health.get('series', 0)} series",
                f"{health.get('open_incidents', 0)} open",
            ]
        )
    ]
    if health.get("reason"):
        lines.append(paint(f"  degraded: {health['reason']}", "red"))
    series = int(health.get("series") or 0)
    warm = int(health.get("warm_series") or 0)
    if status in ("starting", "warming_up") or (series and warm < series):
        share = warm / series if series else 0.0
        lines.append(
            paint("  warming up baselines ", "yellow")
            + f"{_bar(share)} {warm}/{series} series warm ({share:.0%})"
            + ("" if series else " — waiting for the first window")
        )
    counters = health.get("counters") or {}
    counts = " · ".join(
        f"{name.removeprefix('received_')} {int(counters.get(name, 0)):,}" for name in COUNTERS
    )
    queue = f"queue {health.get('queue_depth', 0)}/{health.get('queue_capacity', 0)}"
    lines.append(paint(f"  {counts} · {queue}", "dim"))
    return lines


def _evidence_line(item: Mapping[str, Any]) -> str:
    contribution = float(item.get("contribution") or 0.0)
    text = str(item.get("text") or item.get("feature", ""))
    return f"{text}  ({item.get('feature', '?')} {contribution:+.2f})"


def _open_incident(incident: Mapping[str, Any], paint: _Paint) -> list[str]:
    vantages = ", ".join(incident.get("vantages", ()))
    targets = ", ".join(incident.get("targets", ()))
    slos = ", ".join(incident.get("slos", ())) or "-"
    lines = [
        paint("● OPEN ", "bold", "red")
        + f"{incident['id']}  since {_clock(incident.get('start'))}  "
        + paint(targets, "bold")
        + f" from {vantages}  slo {slos}  {incident.get('attributions', 0)} attributions"
        + _models_note(incident)
    ]
    if incident.get("feedback"):
        lines.append(paint(f"    {_feedback_line(incident['feedback'])}", "green"))
    causes: Sequence[Mapping[str, Any]] = incident.get("causes") or ()
    if not causes:
        lines.append(paint("    no attribution yet (baseline cold or no symptomatic window)", "dim"))
    for rank, cause in enumerate(causes[:CAUSES_SHOWN], start=1):
        score = float(cause.get("score") or 0.0)
        style = ("bold", "cyan") if rank == 1 else ()
        lines.append(
            f"   {rank}. "
            + paint(f"{cause['cause']:<19}", *style)
            + f" {cause.get('scope', '?'):<8} {score:6.1%}  {_bar(score)}"
        )
        for item in list(cause.get("evidence") or ())[:EVIDENCE_SHOWN]:
            lines.append(paint(f"        {_evidence_line(item)}", "dim"))
    if len(causes) > CAUSES_SHOWN:
        rest = ", ".join(f"{c['cause']} {float(c.get('score') or 0):.1%}" for c in causes[CAUSES_SHOWN:6])
        lines.append(paint(f"      then {rest}, …", "dim"))
    return lines


def _models_note(incident: Mapping[str, Any]) -> str:
    """'  by model v0003' when the registry names the models behind its latest attributions."""
    versions = [str(m["version"]) for m in incident.get("models") or () if m.get("version")]
    return f"  by model {', '.join(versions)}" if versions else ""


def _feedback_line(feedback: Mapping[str, Any]) -> str:
    what = (
        "not an incident"
        if feedback.get("not_an_incident")
        else f"confirmed {feedback.get('cause')} ({feedback.get('scope')})"
    )
    return f"✎ {what} by {feedback.get('by')} at {_clock(feedback.get('at'))}"


def _closed_incident(incident: Mapping[str, Any], paint: _Paint) -> str:
    took_s = (int(incident.get("end_unix_nano") or 0) - int(incident.get("start_unix_nano") or 0)) / 1e9
    causes = incident.get("causes") or []
    top = f"{causes[0]['cause']} ({causes[0]['scope']}, {float(causes[0]['score']):.0%})" if causes else "-"
    targets = ", ".join(incident.get("targets", ()))
    return (
        paint("✓ closed ", "green")
        + f"{incident['id']}  {_clock(incident.get('start'))}–{_clock(incident.get('end'))} "
        + f"({_duration(took_s)})  {targets}  {top}"
        + _models_note(incident)
        + (f"  {_feedback_line(incident['feedback'])}" if incident.get("feedback") else "")
    )


def render(
    api_url: str, health: Mapping[str, Any], incidents: Sequence[Mapping[str, Any]], *, color: bool = False
) -> str:
    """The screen for one poll: header, warm-up progress, open incidents in full, recent ones."""
    paint = _Paint(color)
    lines = _header(api_url, health, paint)
    lines.append("")
    opened = [i for i in incidents if i.get("status") == "open"]
    closed = [i for i in incidents if i.get("status") != "open"]
    if not opened:
        lines.append(paint("no open incidents", "green"))
    for incident in opened:
        lines.extend(_open_incident(incident, paint))
        lines.append("")
    if closed:
        lines.append(paint("recently closed", "bold"))
        lines.extend(_closed_incident(i, paint) for i in closed[:RECENT_SHOWN])
    return "\n".join(lines).rstrip("\n") + "\n"


class WatchError(RuntimeError):
    """The API refused the watcher (wrong token, not a sidecar): polling again will not help."""


async def poll(
    session: aiohttp.ClientSession, api_url: str, headers: Mapping[str, str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One poll: (health, incidents).

    Raises:
        WatchError: 401 or another answer that is not the sidecar's.
        aiohttp.ClientError, TimeoutError: the sidecar cannot be reached (worth retrying).
    """

    async def get(path: str) -> Any:
        async with session.get(f"{api_url}{path}", headers=headers) as response:
            if response.status == 401:
                raise WatchError(f"{api_url} wants a bearer token (--token) or refused the one given")
            if response.status != 200 or response.content_type != "application/json":
                raise WatchError(f"{api_url}{path} answered {response.status} {response.content_type}")
            return await response.json()

    health = await get("/healthz")
    found = await get(f"/v1/incidents?status=all&limit={INCIDENT_LIMIT}")
    if not isinstance(health, dict) or not isinstance(found, dict) or "incidents" not in found:
        raise WatchError(f"{api_url} does not answer like an otelprobe sidecar")
    return health, list(found["incidents"])


async def watch(
    api_url: str,
    token: str | None = None,
    interval_s: float = 1.0,
    once: bool = False,
    *,
    out: TextIO | None = None,
    color: bool | None = None,
    duration_s: float | None = None,
    timeout_s: float = 5.0,
) -> int:
    """Poll a sidecar's API and redraw until interrupted (or once, or for `duration_s`).

    Args:
        api_url: the API's base URL, e.g. http://127.0.0.1:8787.
        token: the API's bearer token, if it has one (never printed).
        interval_s: time between polls.
        once: print one screen and return (scripts, tests).
        out: where to draw (stdout).
        color: ANSI colours; None = when `out` is a terminal.
        duration_s: stop after this long (None = until cancelled).
        timeout_s: per-request timeout.

    Returns:
        0, or 1 when the sidecar could not be read (once) or refused the watcher.
    """
    out = out if out is not None else sys.stdout
    is_tty = out.isatty()
    color = is_tty if color is None else color
    api_url = api_url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = None if duration_s is None else time.monotonic() + duration_s
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                health, incidents = await poll(session, api_url, headers)
                screen = render(api_url, health, incidents, color=color)
            except WatchError as exc:
                out.write(f"otelprobe sidecar watch: {exc}\n")
                return 1
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                reason = str(exc) or type(exc).__name__
                if once:
                    out.write(f"otelprobe sidecar watch: cannot read {api_url}: {reason}\n")
                    return 1
                screen = f"cannot reach {api_url} ({reason}); retrying every {interval_s:g} s\n"
            out.write((_CLEAR if is_tty and not once else "") + screen)
            out.flush()
            if once or (deadline is not None and time.monotonic() >= deadline):
                return 0
            await asyncio.sleep(interval_s)
