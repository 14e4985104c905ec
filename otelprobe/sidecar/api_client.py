"""Calls to a running sidecar's API for the command line: feedback, models, retrain, rollback.

Behind `otelprobe sidecar feedback|models|retrain|rollback --api URL` (cli/sidecar.py). Each call
returns the parsed JSON answer or raises `APIError` with the problem body's detail, so the CLI
prints one line and exits 1; the token goes in the Authorization header and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import aiohttp

TIMEOUT_S: Final = 30.0


class APIError(RuntimeError):
    """The sidecar answered with a problem (or could not be reached)."""

    def __init__(self, status: int | None, detail: str) -> None:
        super().__init__(detail)
        self.status = status


async def call(
    api_url: str, method: str, path: str, token: str | None = None, body: Mapping[str, Any] | None = None
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = api_url.rstrip("/") + path
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session,
            session.request(method, url, json=body, headers=headers) as response,
        ):
            text = await response.text()
            if response.status >= 400:
                try:
                    detail = str(json.loads(text).get("detail") or text)
                except (ValueError, AttributeError):
                    detail = text[:200]
                raise APIError(response.status, f"{response.status}: {detail}")
            return json.loads(text) if text else {}
    except aiohttp.ClientError as exc:
        raise APIError(None, f"cannot reach the sidecar API at {api_url}: {exc}") from None


def feedback_body(
    *,
    cause: str | None,
    scope: str | None,
    not_an_incident: bool,
    by: str,
    note: str | None,
    series: list[str] | None,
    start: str | None = None,
    end: str | None = None,
) -> dict[str, Any]:
    """The request body; `series` as TARGET/VANTAGE strings."""
    body: dict[str, Any] = {"by": by}
    if not_an_incident:
        body["not_an_incident"] = True
    else:
        body["cause"], body["scope"] = cause, scope
    if note:
        body["note"] = note
    if start:
        body["start"] = start
    if end:
        body["end"] = end
    if series:
        pairs = []
        for item in series:
            target, slash, vantage = item.rpartition("/")
            if not slash or not target or not vantage:
                raise APIError(None, f"--series takes TARGET/VANTAGE, got {item!r}")
            pairs.append({"target": target, "vantage": vantage})
        body["series"] = pairs
    return body


def models_table(models: Mapping[str, Any]) -> str:
    """/v1/models as a few readable lines (the JSON is there with --json)."""
    lines = [f"live {models.get('live') or '-'}   rollback to {models.get('rollback_to') or '-'}"]
    for entry in models.get("models", []):
        lab = (entry.get("metrics") or {}).get("lab") or {}
        ac1 = lab.get("ac1")
        false_rate = lab.get("false_attributions")
        figures = (
            f"lab AC@1 {ac1:.3f}, false {false_rate:.2%}"
            if isinstance(ac1, float) and isinstance(false_rate, float)
            else "not evaluated yet"
        )
        lines.append(
            f"{entry['version']:>6}  {entry['status']:<11} {entry.get('source', ''):<9} {entry['label']:<28}"
            f" {entry.get('created', '')}  {figures}"
        )
        reason = entry.get("reason")
        if reason:
            lines.append(f"        {reason}")
    retrain = models.get("retrain") or {}
    if retrain.get("running"):
        lines.append(f"retraining {retrain['running']['version']} since {retrain['running']['started']}")
    last = retrain.get("last")
    if last:
        lines.append(
            f"last retrain {last.get('version')}: {last.get('outcome')} ({last.get('finished', '')})"
        )
    return "\n".join(lines)
