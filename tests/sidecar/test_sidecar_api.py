"""The sidecar API on a real loopback server: schemathesis holds every operation to the served
OpenAPI document; plain tests pin filters, bad parameters, auth, /metrics and /healthz."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.failures import FailureGroup

from otelprobe.causes import ROOT_CAUSES
from otelprobe.sidecar.view import JSON, MemoryView
from tests.support.sidecar_view_data import FAULTY, T0_NS, WINDOW_NS, ThreadedAPI, attribution, fill

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def open_view() -> MemoryView:
    """An incident still open (api from two vantages) after an earlier one closed."""
    view = MemoryView()
    fill(view, recovered=3, top="network_latency")
    fill(view, recovered=1, top="backend_slow", t0_ns=T0_NS + 20 * WINDOW_NS)
    return view


@pytest.fixture(scope="module")
def api(open_view: MemoryView) -> Iterator[ThreadedAPI]:
    with ThreadedAPI(open_view) as server:
        yield server


@pytest.fixture(scope="module")
def api_with_token(open_view: MemoryView) -> Iterator[ThreadedAPI]:
    with ThreadedAPI(open_view, token=TOKEN) as server:
        yield server


OPERATIONS = ["/v1/incidents", "/v1/attributions", "/v1/slos", "/healthz", "/metrics", "/openapi.json"]


def _exercise(server: ThreadedAPI, path: str, mode: schemathesis.GenerationMode, token: str | None) -> None:
    # The document is read from the running app, as a client would (not from the module).
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    served = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=headers)
    operation = served[path]["GET"]
    session = requests.Session()
    calls: list[int] = []

    # schemathesis' pytest plugin (from_fixture) breaks on pytest 9 (it reads Node._nodeid), so
    # the operation's hypothesis strategy is driven here directly.
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: schemathesis.Case) -> None:
        # Every check: no 5xx, documented status codes and bodies, bad input rejected.
        response = case.call_and_validate(base_url=server.url, session=session, headers=headers)
        calls.append(response.status_code)

    try:
        run()
    finally:
        session.close()
    assert calls and all(status < 500 for status in calls)
    if mode is schemathesis.GenerationMode.POSITIVE:
        assert set(calls) == {200}
    else:
        assert 400 in calls


@pytest.mark.parametrize(
    ("path", "mode"),
    [(path, schemathesis.GenerationMode.POSITIVE) for path in OPERATIONS]
    # Only these have parameters to make invalid.
    + [(path, schemathesis.GenerationMode.NEGATIVE) for path in OPERATIONS[:3]],
    ids=str,
)
def test_every_operation_conforms_to_the_served_document(
    api: ThreadedAPI, path: str, mode: schemathesis.GenerationMode
) -> None:
    _exercise(api, path, mode, None)


class _DriftedView(MemoryView):
    """A view whose SLO rows no longer match the document (a field renamed, a type changed)."""

    def slos(self, target: str | None = None, vantage: str | None = None, limit: int = 100) -> list[JSON]:
        rows = [dict(row) for row in super().slos(target, vantage, limit)]
        for row in rows:
            row["probes"] = str(row["probes"])
        return rows


def test_schemathesis_catches_a_response_that_drifted_from_the_document() -> None:
    view = _DriftedView()
    fill(view)
    with ThreadedAPI(view) as server, pytest.raises(FailureGroup) as caught:
        _exercise(server, "/v1/slos", schemathesis.GenerationMode.POSITIVE, None)
    (failure,) = caught.value.exceptions
    assert "SeriesSLOs/properties/probes" in str(failure)


@pytest.mark.parametrize("path", OPERATIONS)
def test_every_operation_conforms_with_a_token(api_with_token: ThreadedAPI, path: str) -> None:
    _exercise(api_with_token, path, schemathesis.GenerationMode.POSITIVE, TOKEN)


# --- plain tests --------------------------------------------------------------------------------


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def test_incidents_open_and_recent(api: ThreadedAPI) -> None:
    status, content_type, body = await _get(f"{api.url}/v1/incidents")
    assert status == 200 and content_type.startswith("application/json")
    incidents = json.loads(body)["incidents"]
    assert [i["status"] for i in incidents] == ["open", "closed"]  # newest first
    opened, closed = incidents
    assert opened["targets"] == ["api"] and opened["vantages"] == ["eu-1", "us-1"]
    assert opened["causes"][0]["cause"] == "backend_slow" and opened["causes"][0]["scope"] == "target"
    assert closed["causes"][0]["cause"] == "network_latency" and closed["end"] is not None
    assert math.isclose(sum(c["score"] for c in opened["causes"]), 1.0, abs_tol=1e-4)
    assert {c["cause"] for c in opened["causes"]} == set(ROOT_CAUSES)
    assert opened["causes"][0]["evidence"][0]["feature"] == "ttfb_p50_z"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=open", ["open"]),
        ("status=recent", ["closed"]),
        ("status=all&limit=1", ["open"]),
        ("cause=network_latency", ["closed"]),
        ("cause=dns_failure", []),
        ("target=api&vantage=us-1", ["open", "closed"]),
        ("target=web", []),
        ("vantage=ap-9", []),
    ],
)
async def test_incident_filters(api: ThreadedAPI, query: str, expected: list[str]) -> None:
    status, _, body = await _get(f"{api.url}/v1/incidents?{query}")
    assert status == 200
    assert [i["status"] for i in json.loads(body)["incidents"]] == expected


async def test_attribution_filters(api: ThreadedAPI, open_view: MemoryView) -> None:
    _, _, body = await _get(f"{api.url}/v1/attributions?limit=1000")
    every = json.loads(body)["attributions"]
    assert len(every) == 16  # two runs x 4 faulty windows x 2 series
    starts = [a["window_start_unix_nano"] for a in every]
    assert starts == sorted(starts, reverse=True)
    open_id = open_view.incidents("open")[0]["id"]
    _, _, body = await _get(f"{api.url}/v1/attributions?incident={open_id}&vantage=eu-1&limit=2")
    chosen = json.loads(body)["attributions"]
    assert len(chosen) == 2 and {(a["incident"], a["vantage"]) for a in chosen} == {(open_id, "eu-1")}
    since = every[0]["window_start_unix_nano"]
    _, _, body = await _get(f"{api.url}/v1/attributions?since_unix_nano={since}")
    assert {a["window_start_unix_nano"] for a in json.loads(body)["attributions"]} == {since}
    _, _, body = await _get(f"{api.url}/v1/attributions?target=db")
    assert json.loads(body)["attributions"] == []


async def test_slos_give_burn_rates_and_budget(api: ThreadedAPI) -> None:
    status, _, body = await _get(f"{api.url}/v1/slos?target=api&vantage=eu-1")
    assert status == 200
    document = json.loads(body)
    assert {o["slo"] for o in document["objectives"]} == {"availability", "latency"}
    (series,) = document["series"]
    availability = next(s for s in series["slos"] if s["slo"] == "availability")
    rule = availability["burn_rates"][0]
    assert rule["long_burn"] > rule["factor"]  # the failures are still in the long window
    assert availability["error_budget_remaining"] == pytest.approx(1 - rule["long_burn"], abs=1e-5)
    _, _, body = await _get(f"{api.url}/v1/slos?limit=2")
    assert len(json.loads(body)["series"]) == 2


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/incidents?status=closed", "status"),
        ("/v1/incidents?cause=gremlins", "cause"),
        ("/v1/incidents?limit=0", "limit"),
        ("/v1/incidents?limit=1001", "limit"),
        ("/v1/incidents?limit=ten", "limit"),
        ("/v1/incidents?limit=%20%205", "limit"),
        ("/v1/incidents?targt=api", "targt"),
        ("/v1/incidents?target=a&target=b", "target"),
        ("/v1/incidents?target=", "target"),
        ("/v1/attributions?since_unix_nano=-1", "since_unix_nano"),
        ("/v1/attributions?since_unix_nano=99999999999999999999", "since_unix_nano"),
        ("/v1/slos?target=" + "x" * 257, "target"),
        ("/healthz?verbose=1", "verbose"),
    ],
)
async def test_bad_parameters_are_400_problems(api: ThreadedAPI, path: str, parameter: str) -> None:
    status, content_type, body = await _get(f"{api.url}{path}")
    assert status == 400 and content_type.startswith("application/problem+json")
    problem = json.loads(body)
    assert problem["status"] == 400 and problem["parameter"] == parameter and problem["detail"]


async def test_unknown_path_and_method_are_problems(api: ThreadedAPI) -> None:
    status, content_type, _ = await _get(f"{api.url}/v1/nothing")
    assert status == 404 and content_type.startswith("application/problem+json")
    async with aiohttp.ClientSession() as session, session.post(f"{api.url}/v1/incidents") as response:
        assert response.status == 405 and "GET" in response.headers["Allow"]
        assert (await response.json(content_type=None))["status"] == 405


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", TOKEN, f"Basic {TOKEN}", "Bearer"],
)
@pytest.mark.parametrize(
    "path", ["/v1/incidents", "/v1/attributions", "/v1/slos", "/metrics", "/openapi.json"]
)
async def test_token_required(api_with_token: ThreadedAPI, path: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else None
    status, content_type, body = await _get(f"{api_with_token.url}{path}", headers)
    assert status == 401 and content_type.startswith("application/problem+json")
    assert TOKEN not in body


async def test_token_accepted_and_healthz_public(
    api_with_token: ThreadedAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    status, _, _ = await _get(f"{api_with_token.url}/v1/incidents", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    status, _, _ = await _get(f"{api_with_token.url}/healthz")
    assert status == 200
    status, _, body = await _get(f"{api_with_token.url}/openapi.json", {"Authorization": f"Bearer {TOKEN}"})
    document = json.loads(body)
    assert document["security"] == [{"bearer": []}]
    assert "401" in document["paths"]["/v1/slos"]["get"]["responses"]
    assert TOKEN not in caplog.text


async def test_healthz(api: ThreadedAPI, open_view: MemoryView) -> None:
    status, _, body = await _get(f"{api.url}/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok"
    assert health["model"]["version"] == "train-101@0123456789ab"
    assert health["windows_closed"] == 11 + 9 and health["open_incidents"] == 1
    assert health["counters"]["received_spans"] == 1234 and health["attributions"] == 16


def test_healthz_while_warming_up_and_degraded() -> None:
    view = MemoryView()
    assert view.health()["status"] == "starting"
    fill(view, faulty=0)
    view.health_state.warm_series = 3
    assert view.health()["status"] == "warming_up" and view.health()["warmup"] == 0.5
    view.health_state.degraded = "model file rejected: corrupt"
    assert view.health()["status"] == "degraded" and view.health()["reason"].startswith("model")


_SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*",?)*)\})?'
    r" (?P<value>[-+]?(\d+(\.\d*)?([eE][-+]?\d+)?|Inf|NaN))$"
)


def parse_exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A strict reader of the text format 0.0.4: each sample's family declared by TYPE first."""
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    types: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram") and name not in types
            # A histogram's samples are its _bucket (with `le`), _sum and _count series.
            for series in [name] + (
                [f"{name}{s}" for s in ("_bucket", "_sum", "_count")] if kind == "histogram" else []
            ):
                types[series] = kind
                families[series] = []
        elif line.startswith("# HELP "):
            continue
        else:
            match = _SAMPLE.match(line)
            assert match, line
            name = match["name"]
            assert name in types, f"sample before its TYPE: {line}"
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
            families[name].append((labels, float(match["value"])))
    return families


async def test_metrics_parse_as_prometheus_text(api: ThreadedAPI) -> None:
    status, content_type, body = await _get(f"{api.url}/metrics")
    assert status == 200 and content_type.startswith("text/plain") and "version=0.0.4" in content_type
    families = parse_exposition(body)
    assert families["otelprobe_sidecar_open_incidents"] == [({}, 1.0)]
    assert families["otelprobe_sidecar_open_violations"] == [
        ({"cause": "backend_slow", "scope": "target"}, 1.0)
    ]
    assert families["otelprobe_sidecar_windows_closed_total"] == [({}, 20.0)]
    burns = {
        (labels["target"], labels["vantage"], labels["window"]): value
        for labels, value in families["otelprobe_sidecar_slo_burn_rate"]
        if labels["slo"] == "availability"
    }
    assert len(burns) == 6 * 2  # every series, long and short window
    assert all(burns[(*series, "long")] > 14.4 for series in FAULTY)
    violating = {(lab["target"], lab["slo"]): v for lab, v in families["otelprobe_sidecar_slo_violating"]}
    assert violating[("web", "availability")] == 0.0


def test_metrics_escape_label_values() -> None:
    view = MemoryView()
    fill(view)
    view.add_attributions([attribution('we"ird\\name\n', "eu-1", T0_NS + 40 * WINDOW_NS)])
    families = parse_exposition(view.prometheus_text().decode())
    assert families["otelprobe_sidecar_attributions_total"] == [({}, 9.0)]


def test_memory_view_is_bounded() -> None:
    view = MemoryView(max_attributions=5, max_series=3, max_recent_incidents=1)
    fill(view)
    fill(view, top="dns_latency")
    assert len(view.attributions(limit=1000)) == 5
    assert len(view.slos(limit=1000)) == 3
    assert [i["causes"][0]["cause"] for i in view.incidents()] == ["dns_latency"]
