"""The sidecar learns, end to end: a real `otelprobe sidecar` process fed the lab's eval-402
recording over OTLP/HTTP, an operator's feedback over real HTTP (and the CLI), retraining in the
background while spans keep arriving, the promotion gate, rollback and a restart.

The scenario (tests run in file order; each checks one step):

- the live model is LightGBM trained here on data/lab/train-101 (few rounds, so the suite stays
  quick); on eval-402 it confuses a vantage's bandwidth limit with packet loss (lab faults 6 and
  40: every one of their symptomatic windows ranked packet_loss first), the confusion the model
  card reports for the shipped model;
- the sidecar retrains on train-101 plus the confirmed windows and gates on data/lab/shifted-503
  (held-out lab campaign) plus the newest confirmed incident (time split);
- an operator confirms fault 6's incident (trained on) and fault 40's (held out) as
  bandwidth_limit; the candidate must rank bandwidth_limit first on fault 40's windows, where the
  live model never did, without losing lab AC@1 beyond the configured tolerance;
- then every other incident is "confirmed" as tls_slow — deliberately wrong — and the gate refuses
  that candidate; rollback brings back the earlier version; a restart keeps all of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from otelprobe.attribution.attribute import iso
from otelprobe.attribution.table_cache import read_table_cached
from otelprobe.attribution.train import train_model
from tests.support.sidecar_learn_replay import LAB, Fault, faults, members_under, recording_lines, replay
from tests.support.sidecar_process import LISTENING

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # incl. the session's table build (conftest)

ROUNDS = 30
"""Boosting rounds of the live model and of the sidecar's candidates (the default is 150)."""
LAB_TRAIN = LAB / "train-101" / "traces.jsonl.gz"
LAB_EVAL = LAB / "shifted-503" / "traces.jsonl.gz"
FIRST_S = 200.0
"""Seconds of eval-402 replayed before the feedback (fault 40 ends at ~190 s)."""
DURING_S = 20.0
"""Seconds more replayed while the sidecar retrains."""
AFTER_S = 60.0
"""And after the swap (eval-402's faults 53-57 fall in it)."""
BANDWIDTH_TRAINED, BANDWIDTH_HELD_OUT = 6, 40
"""eval-402's vantage-wide bandwidth limits (labels.jsonl incident numbers)."""
TOLERANCE = {"ac1": 0.03, "false_attributions": 0.01}
"""Wider than the default (0.01 / 0.005): retraining with a different seed alone moves AC@1 on
shifted-503 by up to 2.5 points at 30 rounds."""


@dataclass
class Sidecar:
    process: subprocess.Popen[bytes]
    api: str
    otlp_http: str
    log: Path
    config: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def start(config: Path, log: Path) -> Sidecar:
    before = log.read_text(errors="replace").count("sidecar listening") if log.exists() else 0
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "otelprobe.cli", "sidecar", str(config)], stdout=out, stderr=out
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [m for line in log.read_text(errors="replace").splitlines() if (m := LISTENING.search(line))]
        if len(found) > before:
            _, http_port, api_port = found[-1].groups()
            return Sidecar(
                process, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{http_port}", log, config
            )
        assert process.poll() is None, log.read_text(errors="replace")
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"the sidecar did not start:\n{log.read_text(errors='replace')}")


async def call(sidecar: Sidecar, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, sidecar.api + path, json=body, **kwargs) as response,
    ):
        text = await response.text()
        return response.status, json.loads(text) if text else None


async def get(sidecar: Sidecar, path: str) -> Any:
    status, body = await call(sidecar, "GET", path)
    assert status == 200, body
    return body


async def until(what: str, timeout_s: float, check: Any) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def idle(sidecar: Sidecar, windows: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        health = await get(sidecar, "/healthz")
        return health if health["queue_depth"] == 0 and health["windows_closed"] >= windows else None

    return dict(await until(f"{windows} windows closed", 150, check))


async def retrained(sidecar: Sidecar, version: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        models = await get(sidecar, "/v1/models")
        last = models["retrain"]["last"]
        return (
            models if models["retrain"]["running"] is None and last and last["version"] == version else None
        )

    return dict(await until(f"retraining {version}", 180, check))


def cli(sidecar: Sidecar, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otelprobe.cli", "sidecar", *args, "--api", sidecar.api],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def lines() -> list[tuple[int, bytes]]:
    return recording_lines("eval-402")


@pytest.fixture(scope="module")
def truth() -> dict[int, Fault]:
    return {fault.incident: fault for fault in faults("eval-402")}


@pytest.fixture(scope="module")
def sidecar(
    tmp_path_factory: pytest.TempPathFactory, lines: list[tuple[int, bytes]], shipped_table_cache: Path
) -> Iterator[Sidecar]:
    """A sidecar that has seen eval-402's first FIRST_S seconds (its baselines warm, its incidents
    open and closed), with learning configured as the module docstring says."""
    home = tmp_path_factory.mktemp("learn")
    # The session's tables (conftest): the sidecar's retraining process reads them there too.
    tables = shipped_table_cache
    train = read_table_cached([LAB_TRAIN], tables)
    stem = home / "live"
    train_model(train.frame, window_s=train.window_s, rounds=ROUNDS, training_info={"name": "lab-101"}).save(
        stem
    )
    config = {
        "receiver": {"grpc_port": None, "http_port": 0},
        "api": {"port": 0},
        "model": str(stem),
        "window": "2s",
        "allowed_lateness": "20s",
        "state_dir": str(home / "state"),
        "learning": {
            "lab_recordings": [str(LAB_TRAIN)],
            "eval_recordings": [str(LAB_EVAL)],
            "table_cache": str(tables),
            "rounds": ROUNDS,
            "feedback_weight": 10,
            "feedback_cap_share": None,  # one confirmed incident against train-101: uncapped, as measured
            "holdout_share": 0.5,
            "tolerance": TOLERANCE,
            "retrain_every": None,
        },
    }
    path = home / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    running = start(path, home / "sidecar.log")
    try:
        first = [line for line in lines if line[0] < lines[0][0] + FIRST_S * 1e9]
        asyncio.run(replay(running.otlp_http, first))
        asyncio.run(idle(running, int(FIRST_S / 2) - 6))
        yield running
    finally:
        running.stop()


def incident_of(incidents: list[dict[str, Any]], fault: Fault) -> tuple[dict[str, Any], list[dict[str, str]]]:
    for incident in incidents:
        members = members_under(incident, fault)
        if members:
            return incident, members
    raise AssertionError(f"no incident holds lab fault {fault.incident}")


def confirmation(fault: Fault, members: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "cause": fault.cause,
        "scope": fault.scope,
        "by": "sre@example.test",
        "note": "rate limit on the uplink",
        "series": members,
        "start": iso(fault.start_ns),
        "end": iso(fault.end_ns),
    }


# --- feedback -------------------------------------------------------------------------------------


async def test_bad_feedback_is_a_clear_4xx_and_changes_nothing(
    sidecar: Sidecar, truth: dict[int, Fault]
) -> None:
    incidents = (await get(sidecar, "/v1/incidents?limit=1000"))["incidents"]
    incident, members = incident_of(incidents, truth[BANDWIDTH_TRAINED])
    good = confirmation(truth[BANDWIDTH_TRAINED], members)
    path = f"/v1/incidents/{incident['id']}/feedback"
    cases: list[tuple[str, Any, int, str]] = [
        (path, {**good, "cause": "gremlins"}, 400, "cause"),
        (path, {**good, "scope": "planet"}, 400, "scope"),
        (path, {k: v for k, v in good.items() if k != "by"}, 400, "by"),
        (path, {**good, "severity": "high"}, 400, "severity"),
        (path, {**good, "not_an_incident": True}, 400, "cause"),
        (path, {**good, "start": "yesterday"}, 400, "start"),
        (path, {**good, "end": good["start"]}, 400, "end"),
        (path, {**good, "series": [{"target": "nowhere", "vantage": "mars"}]}, 422, "series"),
        (path, [good], 400, ""),
        ("/v1/incidents/0000000000000000/feedback", good, 404, ""),
    ]
    for url, body, status, field in cases:
        answer_status, problem = await call(sidecar, "POST", url, body)
        assert (answer_status, problem.get("field", "")) == (status, field), (body, problem)
        assert problem["status"] == status and problem["detail"]
    status, problem = await call(
        sidecar, "POST", path, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and "not JSON" in problem["detail"]
    status, problem = await call(
        sidecar, "POST", path, data=json.dumps(good), headers={"Content-Type": "text/plain"}
    )
    assert status == 415, problem
    assert (await get(sidecar, "/v1/feedback"))["feedback"] == []
    incidents = (await get(sidecar, "/v1/incidents?limit=1000"))["incidents"]
    assert all(i["feedback"] is None for i in incidents)


async def test_confirmed_causes_are_stored_with_their_windows_once(
    sidecar: Sidecar, truth: dict[int, Fault]
) -> None:
    incidents = (await get(sidecar, "/v1/incidents?limit=1000"))["incidents"]
    incident, members = incident_of(incidents, truth[BANDWIDTH_TRAINED])
    status, record = await call(
        sidecar,
        "POST",
        f"/v1/incidents/{incident['id']}/feedback",
        confirmation(truth[BANDWIDTH_TRAINED], members),
    )
    assert status == 201, record
    assert (record["cause"], record["scope"], record["by"]) == (
        "bandwidth_limit",
        "vantage",
        "sre@example.test",
    )
    assert record["windows"] > 0 and record["at"].endswith("Z")
    shown = next(
        i for i in (await get(sidecar, "/v1/incidents?limit=1000"))["incidents"] if i["id"] == incident["id"]
    )
    assert shown["feedback"]["cause"] == "bandwidth_limit"

    # Once per incident: a second verdict is refused and the first one stands.
    status, problem = await call(
        sidecar,
        "POST",
        f"/v1/incidents/{incident['id']}/feedback",
        {"not_an_incident": True, "by": "someone"},
    )
    assert status == 409 and "already has feedback" in problem["detail"]
    assert [f["cause"] for f in (await get(sidecar, "/v1/feedback"))["feedback"]] == ["bandwidth_limit"]

    # The command line does the same for the held-out fault's incident.
    held, held_members = incident_of(incidents, truth[BANDWIDTH_HELD_OUT])
    fault = truth[BANDWIDTH_HELD_OUT]
    series = [f"--series={m['target']}/{m['vantage']}" for m in held_members]
    args = ["feedback", held["id"], "--cause", "bandwidth_limit", "--scope", "vantage", "--by", "oncall"]
    done = cli(sidecar, *args, *series, f"--start={iso(fault.start_ns)}", f"--end={iso(fault.end_ns)}")
    assert done.returncode == 0, done.stderr
    assert f"incident {held['id']}: bandwidth_limit (vantage) by oncall" in done.stdout
    again = cli(sidecar, *args)
    assert again.returncode == 1 and "409" in again.stderr


# --- retraining and the gate ------------------------------------------------------------------------


async def test_a_retrained_model_that_fixes_the_confusion_is_promoted_while_ingest_runs(
    sidecar: Sidecar, lines: list[tuple[int, bytes]]
) -> None:
    before = await get(sidecar, "/healthz")
    status, started = await call(sidecar, "POST", "/v1/models/retrain")
    assert status == 202, started
    version = started["retrain"]["version"]
    assert version == "v0002" and started["retrain"]["live"] == "v0001"
    status, problem = await call(sidecar, "POST", "/v1/models/retrain")
    assert status == 409 and "already running" in problem["detail"]

    # Spans keep arriving during the retrain (windows close while it runs) and after the swap.
    t0 = lines[0][0]
    middle_ns = t0 + (FIRST_S + DURING_S) * 1e9
    during = [line for line in lines if t0 + FIRST_S * 1e9 <= line[0] < middle_ns]
    after_swap = [line for line in lines if middle_ns <= line[0] < middle_ns + AFTER_S * 1e9]
    samples: list[tuple[bool, int]] = []  # (retraining, windows closed), sampled while it runs

    async def sample() -> None:
        while True:
            running = (await get(sidecar, "/v1/models"))["retrain"]["running"] is not None
            samples.append((running, (await get(sidecar, "/healthz"))["windows_closed"]))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    await replay(sidecar.otlp_http, during)
    progressed = await idle(sidecar, before["windows_closed"] + int(DURING_S / 2) - 4)
    models = await retrained(sidecar, version)
    sampler.cancel()
    closed_while_retraining = {closed for running, closed in samples if running}
    assert len(closed_while_retraining) >= 2, f"no window closed during the retrain: {samples[:20]}"
    await replay(sidecar.otlp_http, after_swap)
    after = await idle(sidecar, progressed["windows_closed"] + int(AFTER_S / 2) - 6)
    assert after["counters"]["records"] > progressed["counters"]["records"] > before["counters"]["records"]
    # (Spans right after the wait for the retrain may count as late: while nothing arrives the
    # watermark moves on with the sidecar's clock, and the replay's time runs faster than it.)

    entry = next(m for m in models["models"] if m["version"] == version)
    print(f"{version}: {entry.get('reason')}")  # the gate's comparison, for `pytest -s`
    assert models["live"] == version and entry["status"] == "live", entry.get("reason")
    assert entry["gate"]["passed"] and entry["parent"] == "v0001"
    live_before = next(m for m in models["models"] if m["version"] == "v0001")
    # The held-out confirmed incident (fault 40): the old model (almost) never ranked
    # bandwidth_limit first on its windows, the new one mostly does.
    old_recall = live_before["metrics"]["feedback"]["recall"]["bandwidth_limit"]
    new_recall = entry["metrics"]["feedback"]["recall"]["bandwidth_limit"]
    assert old_recall <= 0.25 and new_recall >= max(0.5, old_recall + 0.3), (old_recall, new_recall)
    # ... without losing AC@1 on the held-out lab campaign beyond the tolerance.
    assert entry["metrics"]["lab"]["ac1"] >= live_before["metrics"]["lab"]["ac1"] - TOLERANCE["ac1"]
    assert entry["data"]["feedback"]["held_out_incidents"] and entry["data"]["feedback"]["trained_incidents"]

    health = await get(sidecar, "/healthz")
    assert health["model"]["registry_version"] == version and health["model"]["version"].startswith(
        f"{version}@"
    )
    log = sidecar.log.read_text()
    assert f"model {version} promoted over v0001" in log
    # Attributions of windows after the swap name the new version.
    since = f"/v1/attributions?limit=1000&since_unix_nano={int(middle_ns) + 4_000_000_000}"
    recent = (await get(sidecar, since))["attributions"]
    assert recent and {a["model_version"] for a in recent} == {version}
    assert all(a["model"].startswith(f"{version}@") for a in recent)
    async with aiohttp.ClientSession() as http, http.get(sidecar.api + "/metrics") as response:
        text = await response.text()
    assert 'otelprobe_sidecar_model_changes_total{outcome="promoted"} 1' in text


async def test_a_candidate_trained_on_wrong_labels_is_refused(sidecar: Sidecar) -> None:
    incidents = (await get(sidecar, "/v1/incidents?limit=1000"))["incidents"]
    wrong = [i for i in incidents if i["feedback"] is None]
    assert wrong
    for incident in wrong:
        body = {"cause": "tls_slow", "scope": "path", "by": "intern"}
        status, record = await call(sidecar, "POST", f"/v1/incidents/{incident['id']}/feedback", body)
        assert status == 201, record
    status, started = await call(sidecar, "POST", "/v1/models/retrain")
    assert status == 202, started
    version = started["retrain"]["version"]
    models = await retrained(sidecar, version)
    entry = next(m for m in models["models"] if m["version"] == version)
    print(f"{version}: {entry.get('reason')}")
    assert entry["status"] == "refused" and not entry["gate"]["passed"]
    assert "lab AC@1" in entry["reason"] and "worse by more than" in entry["reason"]
    assert models["live"] == "v0002"
    assert (await get(sidecar, "/healthz"))["model"]["registry_version"] == "v0002"
    assert f"model {version} refused by the gate, v0002 stays live" in sidecar.log.read_text()
    # A refused candidate is not something to roll back to.
    status, problem = await call(sidecar, "POST", "/v1/models/rollback", {"version": version})
    assert status == 409 and "never live" in problem["detail"]


async def test_rollback_restores_the_previous_version(sidecar: Sidecar) -> None:
    status, answer = await call(sidecar, "POST", "/v1/models/rollback", {})
    assert status == 200, answer
    assert (answer["live"], answer["previous"]) == ("v0001", "v0002")
    health = await get(sidecar, "/healthz")
    assert health["model"]["registry_version"] == "v0001"
    first = next(m for m in (await get(sidecar, "/v1/models"))["models"] if m["version"] == "v0001")
    assert health["model"]["version"] == first["label"]
    assert health["model"]["version"].startswith("lab-101@")  # its training name, then its own digest
    status, problem = await call(sidecar, "POST", "/v1/models/rollback", {})
    assert status == 409, problem  # nothing earlier than the first version
    status, problem = await call(sidecar, "POST", "/v1/models/rollback", {"version": "v0999"})
    assert status == 404, problem
    # The command line: back to the promoted one by name, and the registry as a table.
    done = cli(sidecar, "rollback", "--version", "v0002")
    assert done.returncode == 0 and "v0002 is live (was v0001)" in done.stdout, done.stderr
    listing = cli(sidecar, "models")
    assert listing.returncode == 0 and "live v0002" in listing.stdout and "refused" in listing.stdout


def test_a_restart_keeps_feedback_and_the_live_model(sidecar: Sidecar) -> None:
    async def before() -> tuple[Any, Any]:
        return await get(sidecar, "/v1/feedback"), await get(sidecar, "/v1/models")

    feedback, models = asyncio.run(before())
    assert sidecar.stop() == 0
    again = start(sidecar.config, sidecar.log)
    sidecar.process, sidecar.api, sidecar.otlp_http = again.process, again.api, again.otlp_http

    async def after() -> None:
        assert await get(sidecar, "/v1/feedback") == feedback
        now = await get(sidecar, "/v1/models")
        assert now["live"] == models["live"] == "v0002"
        assert [m["version"] for m in now["models"]] == [m["version"] for m in models["models"]]
        assert (await get(sidecar, "/healthz"))["model"]["registry_version"] == "v0002"
        first = feedback["feedback"][-1]
        status, problem = await call(
            sidecar,
            "POST",
            f"/v1/incidents/{first['incident']}/feedback",
            {"not_an_incident": True, "by": "x"},
        )
        assert status == 409, problem

    asyncio.run(after())
    assert os.path.exists(Path(sidecar.config).parent / "state" / "models" / "v0002.cause.txt")
