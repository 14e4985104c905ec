"""The sidecar's HTTP API for people and scripts: incidents, attributions, SLOs, health, metrics,
and — with a `SidecarControl` (learning.py) — operator feedback and the model registry.

The read side of the sidecar (DESIGN §2, after attribution): `build_api_app(view)` serves what a
`SidecarView` (view.py) gives, as JSON, with the OpenAPI document of api_openapi.py at
/openapi.json; with an `Intake` (view_metrics.py), /healthz and /metrics also show what the
input refused and dropped, by reason. The app has no listener of its own; the service core
decides where it listens (loopback by default). Query parameters are validated strictly (an
unknown or repeated parameter is an error, so a typo never silently widens a query); every error
is an RFC 9457 problem body.
The write operations take JSON bodies only (`Content-Type: application/json`, else 415): a
browser cannot send one cross-site without a preflight, so a page cannot post feedback or roll a
model back behind an operator's back.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Collection, Mapping
from typing import Any, Final, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from otelprobe.causes import ROOT_CAUSES
from otelprobe.sidecar.api_openapi import openapi_document
from otelprobe.sidecar.feedback import FeedbackError
from otelprobe.sidecar.model_registry import RegistryError
from otelprobe.sidecar.view import DEFAULT_LIMIT, INCIDENT_STATUSES, MAX_LIMIT, IncidentStatus, SidecarView
from otelprobe.sidecar.view_metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from otelprobe.sidecar.view_metrics import Intake, intake_json, render_intake

_logger = logging.getLogger(__name__)

PROBLEM_TYPE: Final = "application/problem+json"
MAX_NAME_CHARS: Final = 256
MAX_UNIX_NANO: Final = 2**63 - 1
PUBLIC_PATHS: Final = frozenset({"/healthz"})
"""Answered without the bearer token: a liveness check needs no secret."""
VIEW_KEY: Final = web.AppKey("sidecar_view", SidecarView)
MAX_BODY: Final = 64 * 1024


class SidecarControl(Protocol):
    """The write side: feedback and the model registry (learning.Learning)."""

    async def record_feedback(self, incident_id: str, body: object) -> dict[str, Any]:
        """Raises FeedbackError (4xx, nothing stored)."""
        ...

    def feedback_list(self, limit: int) -> list[dict[str, Any]]: ...

    def models(self) -> dict[str, Any]: ...

    async def retrain(self, trigger: str = "api") -> dict[str, Any]:
        """Raises RegistryError (409: one is running)."""
        ...

    async def rollback(self, to: str | None) -> dict[str, Any]:
        """Raises RegistryError (404 unknown version, 409 nothing to roll back to)."""
        ...


CONTROL_KEY: Final = web.AppKey("sidecar_control", SidecarControl)
INTAKE_KEY: Final = web.AppKey("sidecar_intake", Intake)


class BadParameter(ValueError):
    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail)
        self.parameter = parameter


def problem(status: int, title: str, detail: str, **extra: object) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_TYPE)


def _json(body: Mapping[str, Any]) -> web.Response:
    # allow_nan=False: a NaN that slipped through is a bug to see, not invalid JSON to send.
    return web.Response(text=json.dumps(body, allow_nan=False), content_type="application/json")


# --- query parameters ----------------------------------------------------------------------------


class Query:
    """The query of one request, checked against the parameters its operation accepts."""

    def __init__(self, request: web.Request, accepted: Collection[str]) -> None:
        self._values: dict[str, str] = {}
        for key in request.query:
            if key not in accepted:
                known = ", ".join(sorted(accepted)) or "none"
                raise BadParameter(key, f"unknown query parameter {key!r} (accepted: {known})")
            values = request.query.getall(key)
            if len(values) > 1:
                raise BadParameter(key, f"query parameter {key!r} given {len(values)} times")
            self._values[key] = values[0]

    def name(self, key: str) -> str | None:
        value = self._values.get(key)
        if value is None:
            return None
        if not 1 <= len(value) <= MAX_NAME_CHARS:
            raise BadParameter(key, f"{key} must be 1 to {MAX_NAME_CHARS} characters")
        return value

    def choice(self, key: str, choices: Collection[str]) -> str | None:
        value = self._values.get(key)
        if value is not None and value not in choices:
            raise BadParameter(key, f"{key} must be one of {', '.join(choices)}, got {value[:60]!r}")
        return value

    def integer(self, key: str, low: int, high: int) -> int | None:
        value = self._values.get(key)
        if value is None:
            return None
        # int() also takes " 5", "5_0" and "٥"; the schema promises plain ASCII digits.
        if not (value.isascii() and value.isdigit() and len(value) <= 19):
            raise BadParameter(key, f"{key} must be an integer from {low} to {high}, got {value[:60]!r}")
        number = int(value)
        if not low <= number <= high:
            raise BadParameter(key, f"{key} must be from {low} to {high}, got {number}")
        return number

    def limit(self) -> int:
        found = self.integer("limit", 1, MAX_LIMIT)
        return DEFAULT_LIMIT if found is None else found


# --- handlers ------------------------------------------------------------------------------------


async def _incidents(request: web.Request) -> web.Response:
    query = Query(request, ("status", "target", "vantage", "cause", "limit"))
    chosen = query.choice("status", INCIDENT_STATUSES)
    status: IncidentStatus = next((s for s in INCIDENT_STATUSES if s == chosen), "all")
    rows = request.app[VIEW_KEY].incidents(
        status=status,
        target=query.name("target"),
        vantage=query.name("vantage"),
        cause=query.choice("cause", ROOT_CAUSES),
        limit=query.limit(),
    )
    return _json({"incidents": rows})


async def _attributions(request: web.Request) -> web.Response:
    query = Query(request, ("target", "vantage", "incident", "since_unix_nano", "limit"))
    rows = request.app[VIEW_KEY].attributions(
        target=query.name("target"),
        vantage=query.name("vantage"),
        since_ns=query.integer("since_unix_nano", 0, MAX_UNIX_NANO),
        limit=query.limit(),
        incident=query.name("incident"),
    )
    return _json({"attributions": rows})


async def _slos(request: web.Request) -> web.Response:
    query = Query(request, ("target", "vantage", "limit"))
    view = request.app[VIEW_KEY]
    series = view.slos(target=query.name("target"), vantage=query.name("vantage"), limit=query.limit())
    return _json({"objectives": view.objectives(), "series": series})


async def _healthz(request: web.Request) -> web.Response:
    Query(request, ())
    body = request.app[VIEW_KEY].health()
    intake = request.app.get(INTAKE_KEY)
    return _json(body if intake is None else {**body, "intake": intake_json(intake)})


async def _metrics(request: web.Request) -> web.Response:
    Query(request, ())
    body = request.app[VIEW_KEY].prometheus_text()
    intake = request.app.get(INTAKE_KEY)
    if intake is not None:
        body += render_intake(intake)
    # aiohttp refuses a charset inside content_type; set the header whole.
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


# --- learning (feedback, models) -----------------------------------------------------------------


async def _json_body(request: web.Request, *, optional: bool = False) -> object:
    if optional and not request.can_read_body:
        return {}
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="the body must be JSON (Content-Type: application/json)")
    raw = await request.read()
    if optional and not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedbackError(400, f"the body is not JSON: {str(exc)[:120]}") from None


async def _post_feedback(request: web.Request) -> web.Response:
    Query(request, ())
    incident = request.match_info["incident"]
    if not 1 <= len(incident) <= MAX_NAME_CHARS:
        raise FeedbackError(404, "no such incident")
    record = await request.app[CONTROL_KEY].record_feedback(incident, await _json_body(request))
    return web.Response(status=201, text=json.dumps(record), content_type="application/json")


async def _feedback(request: web.Request) -> web.Response:
    query = Query(request, ("limit",))
    return _json({"feedback": request.app[CONTROL_KEY].feedback_list(query.limit())})


async def _models(request: web.Request) -> web.Response:
    Query(request, ())
    return _json(request.app[CONTROL_KEY].models())


async def _retrain(request: web.Request) -> web.Response:
    Query(request, ())
    body = await _json_body(request, optional=True)
    if body != {}:
        raise FeedbackError(400, "retrain takes no body (or an empty JSON object)")
    job = await request.app[CONTROL_KEY].retrain("api")
    return web.Response(status=202, text=json.dumps({"retrain": job}), content_type="application/json")


async def _rollback(request: web.Request) -> web.Response:
    Query(request, ())
    body = await _json_body(request, optional=True)
    if not isinstance(body, dict) or set(body) - {"version"}:
        raise FeedbackError(400, 'the body is {} or {"version": "v0002"}', "version")
    version = body.get("version")
    if version is not None and not (isinstance(version, str) and 1 <= len(version) <= 64):
        raise FeedbackError(400, "version must be a version name such as v0002", "version")
    return _json(await request.app[CONTROL_KEY].rollback(version))


def _openapi(document: Mapping[str, Any]) -> Handler:
    text = json.dumps(document)

    async def handler(request: web.Request) -> web.Response:
        Query(request, ())
        return web.Response(text=text, content_type="application/json")

    return handler


# --- middlewares ---------------------------------------------------------------------------------


def _auth_middleware(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in PUBLIC_PATHS:
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            # Constant time, so response timing does not leak how much of a guess was right.
            if not hmac.compare_digest(given, expected):
                response = problem(401, "Unauthorized", "a valid bearer token is required")
                response.headers["WWW-Authenticate"] = 'Bearer realm="otelprobe-sidecar"'
                return response
        return await handler(request)

    return check


@web.middleware
async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as a problem body: bad parameters 400, aiohttp's 404/405, a bug 500."""
    try:
        return await handler(request)
    except BadParameter as exc:
        return problem(400, "Bad Request", str(exc), parameter=exc.parameter)
    except FeedbackError as exc:
        extra = {"field": exc.field} if exc.field else {}
        return problem(exc.status, _TITLES.get(exc.status, "Bad Request"), str(exc), **extra)
    except RegistryError as exc:
        return problem(exc.status, _TITLES.get(exc.status, "Conflict"), str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problem(exc.status, exc.reason, exc.text or exc.reason)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        _logger.exception("sidecar API: %s %s failed", request.method, request.path)
        return problem(500, "Internal Server Error", "the request failed; the sidecar's log has the details")


_TITLES: Final = {400: "Bad Request", 404: "Not Found", 409: "Conflict", 422: "Unprocessable Content"}


def build_api_app(
    view: SidecarView,
    *,
    token: str | None = None,
    control: SidecarControl | None = None,
    intake: Intake | None = None,
) -> web.Application:
    """The API as an aiohttp application (mount it on any runner or site).

    Args:
        view: what the API serves.
        token: when set, every path except /healthz needs `Authorization: Bearer <token>`.
            The token is never logged.
        control: feedback and the model registry; None leaves those operations out (and out of
            the OpenAPI document).
        intake: the receiver's and later stages' counters, read live: /healthz gains `intake`
            and /metrics the refused and dropped counters by reason.
    """
    middlewares: list[Middleware] = [_problems]
    if token:
        middlewares.append(_auth_middleware(token))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app[VIEW_KEY] = view
    if intake is not None:
        app[INTAKE_KEY] = intake
    if control is not None:
        app[CONTROL_KEY] = control
        app.router.add_post("/v1/incidents/{incident}/feedback", _post_feedback)
        app.router.add_get("/v1/feedback", _feedback)
        app.router.add_get("/v1/models", _models)
        app.router.add_post("/v1/models/retrain", _retrain)
        app.router.add_post("/v1/models/rollback", _rollback)
    app.router.add_get("/v1/incidents", _incidents)
    app.router.add_get("/v1/attributions", _attributions)
    app.router.add_get("/v1/slos", _slos)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    document = openapi_document(bearer=bool(token), learning=control is not None, intake=intake is not None)
    app.router.add_get("/openapi.json", _openapi(document))
    return app
