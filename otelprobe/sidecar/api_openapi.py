"""The OpenAPI 3.1 document of the sidecar API (api.py), written as data.

Served at /openapi.json and the contract the schemathesis tests hold the handlers to: every
parameter, its bounds, and the shape of every response (view.py builds the bodies). Response
objects allow properties beyond the listed ones, so a service core may add fields (links, ...)
without breaking clients.
"""

from __future__ import annotations

from typing import Any, Final

from otelprobe import __version__
from otelprobe.causes import ROOT_CAUSES, SCOPES
from otelprobe.sidecar.view import DEFAULT_LIMIT, INCIDENT_STATUSES, MAX_LIMIT
from otelprobe.sidecar.view_metrics import REFUSED_REASONS

JSON = dict[str, Any]
MAX_UNIX_NANO: Final = 2**63 - 1


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: JSON, required: list[str] | None = None) -> JSON:
    return {"type": "object", "properties": properties, "required": required or list(properties)}


def _array(items: JSON) -> JSON:
    return {"type": "array", "items": items}


_STR: Final = {"type": "string"}
_INT: Final = {"type": "integer", "minimum": 0}
_NUM: Final = {"type": "number"}
_BOOL: Final = {"type": "boolean"}
_TIME: Final = {"type": "string", "format": "date-time"}
_OPT_NUM: Final = {"type": ["number", "null"]}
_STRS: Final = _array(_STR)

_SCHEMAS: Final[JSON] = {
    "Problem": _object(
        {
            "type": _STR,
            "title": _STR,
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": _STR,
            "parameter": {"type": "string", "description": "the query parameter at fault"},
        },
        ["type", "title", "status", "detail"],
    ),
    "Evidence": _object(
        {"feature": _STR, "contribution": _NUM, "value": _OPT_NUM, "text": _STR},
    ),
    "RankedCause": _object(
        {
            "cause": {"enum": list(ROOT_CAUSES)},
            "scope": {"enum": list(SCOPES)},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "scope_scores": {"type": "object", "additionalProperties": _NUM},
            "evidence": _array(_ref("Evidence")),
        }
    ),
    "Attribution": _object(
        {
            "slo": _STR,
            "slos": _STRS,
            "target": _STR,
            "vantage": _STR,
            "window_start": _TIME,
            "window_end": _TIME,
            "window_start_unix_nano": _INT,
            "probes": _INT,
            "failed": _INT,
            "model": _STR,
            "incident": {"type": ["string", "null"], "description": "the open incident of its series"},
            "causes": {
                **_array(_ref("RankedCause")),
                "description": "every cause, by score; scores sum to 1",
            },
        },
        ["slo", "target", "vantage", "window_start", "window_end", "window_start_unix_nano", "causes"],
    ),
    "IncidentCause": _object(
        {
            "cause": {"enum": list(ROOT_CAUSES)},
            "scope": {"enum": list(SCOPES)},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "evidence": _array(_ref("Evidence")),
        }
    ),
    "SeriesIncident": _object(
        {
            "target": _STR,
            "vantage": _STR,
            "start": _TIME,
            "end": {"type": ["string", "null"], "format": "date-time"},
            "closed": _BOOL,
            "violating_windows": _INT,
            "violating_now": _BOOL,
            "slos": _STRS,
        }
    ),
    "Incident": _object(
        {
            "id": _STR,
            "status": {"enum": ["open", "closed"]},
            "start": _TIME,
            "start_unix_nano": _INT,
            "end": {"type": ["string", "null"], "format": "date-time"},
            "end_unix_nano": {"type": ["integer", "null"], "minimum": 0},
            "targets": _STRS,
            "vantages": _STRS,
            "slos": _STRS,
            "series": _array(_ref("SeriesIncident")),
            "attributions": _INT,
            "causes": {
                **_array(_ref("IncidentCause")),
                "description": "mean of the latest attribution of each series; empty before the first",
            },
        }
    ),
    "Objective": _object(
        {
            "slo": _STR,
            "kind": {"enum": ["availability", "latency"]},
            "objective": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "threshold": {"type": ["number", "string", "null"], "description": "seconds or 'baseline'"},
            "targets": _STRS,
            "vantages": _STRS,
            "rules": _array(_object({"rule": _STR, "long_s": _NUM, "short_s": _NUM, "factor": _NUM})),
        }
    ),
    "BurnRate": _object(
        {
            "rule": _STR,
            "factor": _NUM,
            "long_windows": _INT,
            "short_windows": _INT,
            "long_burn": _OPT_NUM,
            "short_burn": _OPT_NUM,
            "firing": _BOOL,
        }
    ),
    "SLOStatus": _object(
        {
            "slo": _STR,
            "objective": _OPT_NUM,
            "violating": _BOOL,
            "events": _INT,
            "bad": _INT,
            "threshold_s": _OPT_NUM,
            "error_budget_remaining": {
                **_OPT_NUM,
                "description": "1 - burn rate over the longest rule window; negative = overspent",
            },
            "burn_rates": _array(_ref("BurnRate")),
        }
    ),
    "SeriesSLOs": _object(
        {
            "target": _STR,
            "vantage": _STR,
            "window_start": _TIME,
            "window_end": _TIME,
            "window_start_unix_nano": _INT,
            "probes": _INT,
            "violating": _BOOL,
            "slos": _array(_ref("SLOStatus")),
        }
    ),
    "Health": _object(
        {
            "status": {"enum": ["starting", "warming_up", "ok", "degraded"]},
            "reason": {"type": ["string", "null"]},
            "version": _STR,
            "uptime_s": {"type": "number", "minimum": 0},
            "model": _object({"path": {"type": ["string", "null"]}, "version": {"type": ["string", "null"]}}),
            "window_s": _OPT_NUM,
            "windows_closed": _INT,
            "series": _INT,
            "warm_series": _INT,
            "warmup": {"type": "number", "minimum": 0, "maximum": 1, "description": "warm share of series"},
            "queue_depth": _INT,
            "queue_capacity": _INT,
            "open_incidents": _INT,
            "attributions": _INT,
            "counters": {
                **_object(
                    {name: _INT for name in ("received_spans", "late", "duplicate", "evicted", "rejected")}
                ),
                "additionalProperties": _INT,
            },
            "attribution_latency": {
                **_object(
                    {
                        "records": _INT,
                        "recent": _INT,
                        "p50_s": _OPT_NUM,
                        "p99_s": _OPT_NUM,
                        "max_s": _OPT_NUM,
                    }
                ),
                "description": "window close -> record out: records since start, and p50 / p99 / max "
                "(s) over the most recent ones",
            },
        }
    ),
    "Intake": {
        **_object(
            {
                "receiver": _object(
                    {
                        "requests_refused": {
                            **_object({reason: _INT for reason in REFUSED_REASONS}),
                            "description": "requests refused whole (error status), by reason",
                            "additionalProperties": _INT,
                        },
                        "spans_rejected": {
                            **_object({"invalid_ids": _INT, "queue_full": _INT}),
                            "description": "spans rejected through OTLP partial_success (or a 400 "
                            "when no span of the request was good), by reason",
                            "additionalProperties": _INT,
                        },
                    }
                )
            }
        ),
        "description": "What the input refused and dropped: the receiver's counts, then every "
        "counter of each later stage (ingest, reader) by its field name",
        "additionalProperties": {"type": "object", "additionalProperties": _INT},
    },
}
_SCHEMAS["Health"]["properties"]["intake"] = _ref("Intake")


_SLICE: Final = {
    "type": "object",
    "description": "one model on one held-out slice",
    "properties": {
        "ac1": _OPT_NUM,
        "cases": _INT,
        "false_attributions": _OPT_NUM,
        "healthy_windows": _INT,
        "recall": {"type": "object", "additionalProperties": _NUM},
    },
}
_BY: Final = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "\\S"}
_NOTE: Final = {"type": "string", "minLength": 1, "maxLength": 2000, "pattern": "\\S"}
_NAME: Final = {"type": "string", "minLength": 1}
_LEARNING_SCHEMAS: Final[JSON] = {
    "FeedbackRequest": {
        "description": "a confirmed cause and scope, or not_an_incident: true; `by` is required",
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "cause": {"enum": list(ROOT_CAUSES)},
                    "scope": {"enum": list(SCOPES)},
                    "by": _BY,
                    "note": _NOTE,
                    "series": {
                        **_array(_object({"target": _NAME, "vantage": _NAME})),
                        "minItems": 1,
                        "description": "only these member series (default: all of them)",
                    },
                    "start": {**_TIME, "description": "only windows overlapping [start, end) (optional)"},
                    "end": _TIME,
                },
                "required": ["cause", "scope", "by"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"not_an_incident": {"const": True}, "by": _BY, "note": _NOTE},
                "required": ["not_an_incident", "by"],
                "additionalProperties": False,
            },
        ],
    },
    "Feedback": _object(
        {
            "incident": _STR,
            "verdict": {"enum": ["confirmed", "not_an_incident"]},
            "cause": {"enum": [*ROOT_CAUSES, None]},
            "scope": {"enum": [*SCOPES, None]},
            "not_an_incident": _BOOL,
            "by": _STR,
            "note": {"type": ["string", "null"]},
            "at": _TIME,
            "at_unix_nano": _INT,
            "windows": {**_INT, "description": "feature rows of the incident's windows stored with it"},
        }
    ),
    "ModelVersion": _object(
        {
            "version": _STR,
            "label": _STR,
            "status": {"enum": ["live", "retired", "refused", "rolled_back", "candidate"]},
            "source": {"enum": ["imported", "retrained"]},
            "created": _TIME,
            "training": {"type": "object"},
            "metrics": {
                "type": "object",
                "description": "per held-out slice (lab, feedback), as measured by the last gate",
                "additionalProperties": _SLICE,
            },
        },
        ["version", "label", "status", "source", "created"],
    ),
    "Models": _object(
        {
            "live": {"type": ["string", "null"]},
            "rollback_to": {"type": ["string", "null"]},
            "models": _array(_ref("ModelVersion")),
            "retrain": {"type": "object"},
        }
    ),
    "RetrainJob": _object({"version": _STR, "trigger": _STR, "started": _TIME, "live": _STR}),
    "Rollback": _object(
        {"live": _STR, "previous": {"type": ["string", "null"]}, "model": _ref("ModelVersion")}
    ),
}


def _learning_paths() -> JSON:
    def problem(description: str) -> JSON:
        return {"description": description, **_PROBLEM}

    def json_request(schema: JSON, required: bool) -> JSON:
        return {"required": required, "content": {"application/json": {"schema": schema}}}

    return {
        "/v1/incidents/{incident}/feedback": {
            "post": {
                "operationId": "postFeedback",
                "summary": "Record the confirmed cause and scope of an incident, or that it was none",
                "parameters": [
                    {
                        "name": "incident",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
                    }
                ],
                "requestBody": json_request(_ref("FeedbackRequest"), True),
                "responses": {
                    "201": _json_body(_ref("Feedback"), "recorded, with the incident's window rows"),
                    "400": problem("a field is missing, unknown or invalid (the problem names it)"),
                    "404": problem("no such incident"),
                    "409": problem("the incident already has feedback"),
                    "415": problem("the body is not JSON"),
                    "422": problem("a series given is not a member of the incident"),
                },
            }
        },
        "/v1/feedback": _get(
            "Operators' verdicts, newest first",
            [_LIMIT],
            _json_body(_object({"feedback": _array(_ref("Feedback"))}), "verdicts"),
            "listFeedback",
        ),
        "/v1/models": _get(
            "The model registry: every kept version with its metrics, the live one, retraining",
            [],
            _json_body(_ref("Models"), "the registry"),
            "listModels",
        ),
        "/v1/models/retrain": {
            "post": {
                "operationId": "retrain",
                "summary": "Retrain now in the background; the gate promotes or refuses the candidate",
                "requestBody": json_request({"type": "object", "maxProperties": 0}, False),
                "responses": {
                    "202": _json_body(_object({"retrain": _ref("RetrainJob")}), "started"),
                    "400": problem("a body other than {}"),
                    "409": problem("a retrain is already running, or no live model"),
                    "415": problem("the body is not JSON"),
                },
            }
        },
        "/v1/models/rollback": {
            "post": {
                "operationId": "rollback",
                "summary": "Run the previous live version again (or a named earlier one)",
                "requestBody": json_request(
                    {
                        "type": "object",
                        "properties": {"version": {"type": "string", "minLength": 1, "maxLength": 64}},
                        "additionalProperties": False,
                    },
                    False,
                ),
                "responses": {
                    "200": _json_body(_ref("Rollback"), "rolled back"),
                    "400": problem("a body other than {} or {version}"),
                    "404": problem("no such version"),
                    "409": problem("nothing to roll back to, or that version was never live"),
                    "415": problem("the body is not JSON"),
                },
            }
        },
    }


def _name_param(name: str, description: str) -> JSON:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
    }


_LIMIT: Final = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "at most this many items, newest first",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
}
_TARGET: Final = _name_param("target", "only this target")
_VANTAGE: Final = _name_param("vantage", "only this vantage")


def _json_body(schema: JSON, description: str) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_PROBLEM: Final = {"content": {"application/problem+json": {"schema": _ref("Problem")}}}


def _get(summary: str, parameters: list[JSON], ok: JSON, operation_id: str) -> JSON:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "200": ok,
                "400": {"description": "a parameter is unknown, repeated or out of range", **_PROBLEM},
            },
        }
    }


def openapi_document(*, bearer: bool = False, learning: bool = False, intake: bool = False) -> JSON:
    """The document; with `bearer`, every operation but /healthz requires the token (401 without);
    with `learning`, the feedback and model-registry operations; with `intake`, /healthz always
    carries `intake` (it is optional in Health otherwise)."""
    paths: JSON = {
        "/v1/incidents": _get(
            "Open and recently closed incidents with their ranked causes",
            [
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "description": "open, recent (closed lately) or all",
                    "schema": {"enum": list(INCIDENT_STATUSES), "default": "all"},
                },
                _TARGET,
                _VANTAGE,
                {
                    "name": "cause",
                    "in": "query",
                    "required": False,
                    "description": "only incidents whose top-ranked cause is this",
                    "schema": {"enum": list(ROOT_CAUSES)},
                },
                _LIMIT,
            ],
            _json_body(_object({"incidents": _array(_ref("Incident"))}), "incidents, newest first"),
            "listIncidents",
        ),
        "/v1/attributions": _get(
            "Attribution records (DESIGN §6), newest first",
            [
                _TARGET,
                _VANTAGE,
                _name_param("incident", "only attributions of this incident id"),
                {
                    "name": "since_unix_nano",
                    "in": "query",
                    "required": False,
                    "description": "only windows starting at or after this time (ns since the epoch)",
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_UNIX_NANO},
                },
                _LIMIT,
            ],
            _json_body(_object({"attributions": _array(_ref("Attribution"))}), "attribution records"),
            "listAttributions",
        ),
        "/v1/slos": _get(
            "SLO objectives and, per series, burn rates and error budget left",
            [_TARGET, _VANTAGE, _LIMIT],
            _json_body(
                _object({"objectives": _array(_ref("Objective")), "series": _array(_ref("SeriesSLOs"))}),
                "objectives and series statuses",
            ),
            "listSLOs",
        ),
        "/healthz": _get(
            "Liveness, warm-up progress and counters", [], _json_body(_ref("Health"), "health"), "health"
        ),
        "/metrics": _get(
            "The sidecar's metrics in the Prometheus text format 0.0.4",
            [],
            {"description": "metrics", "content": {"text/plain": {"schema": _STR}}},
            "metrics",
        ),
        "/openapi.json": _get(
            "This document", [], _json_body({"type": "object"}, "the OpenAPI document"), "openapi"
        ),
    }
    document: JSON = {
        "openapi": "3.1.0",
        "info": {
            "title": "otelprobe sidecar API",
            "version": __version__,
            "description": "Incidents, SLO burn and root-cause attributions of a running otelprobe sidecar.",
        },
        "paths": paths,
        "components": {"schemas": dict(_SCHEMAS)},
    }
    if intake:
        health = document["components"]["schemas"]["Health"]
        document["components"]["schemas"]["Health"] = {**health, "required": [*health["required"], "intake"]}
    if learning:
        paths.update(_learning_paths())
        document["components"]["schemas"].update(_LEARNING_SCHEMAS)
    if bearer:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
        paths["/healthz"]["get"]["security"] = []
        unauthorized = {"description": "missing or wrong bearer token", **_PROBLEM}
        for path, item in paths.items():
            if path != "/healthz":
                for operation in item.values():
                    operation["responses"]["401"] = unauthorized
    return document
