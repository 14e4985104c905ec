"""Running the sidecar: a model swapped without a restart (a bad one rejected, the old one kept),
config reloads (a bad file rejected), counters of duplicate and late spans through the real
receiver, state written crash-safely and restored, and the config file's problems with file:line."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from otelprobe.attribution.features import FeatureEngine
from otelprobe.attribution.incidents import IncidentTracker
from otelprobe.attribution.model import ModelError
from otelprobe.attribution.slo import SLOEvaluator
from otelprobe.errors import ConfigError
from otelprobe.sidecar import snapshot
from otelprobe.sidecar.config import load_sidecar_config
from otelprobe.sidecar.model_watch import ModelHolder, model_files
from otelprobe.sidecar.service import SidecarService
from otelprobe.sidecar.state_store import StateStore
from tests.support.sidecar_spans import BASE, S, probe_spans, request

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def copy_model(source: Path, directory: Path, name: str | None = None) -> Path:
    """The model's files copied into `directory` (they keep their names: the metadata names them)."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in model_files(source):
        shutil.copyfile(path, directory / path.name)
    stem = directory / source.name
    if name is not None:
        meta_path = model_files(stem)[0]
        meta = json.loads(meta_path.read_text())
        meta["training"]["name"] = name
        meta_path.write_text(json.dumps(meta))
    return stem


def booster_file(stem: Path, role: str) -> Path:
    return next(p for p in model_files(stem) if p.name.endswith(f".{role}.txt"))


# --- model swap -----------------------------------------------------------------------------


def test_a_changed_model_is_swapped_in_and_a_bad_one_rejected(
    tmp_path: Path, trained_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stem = copy_model(trained_model, tmp_path / "live")
    holder = ModelHolder.load(stem)
    first = holder.label
    assert holder.check() is False  # unchanged files: nothing to do

    copy_model(trained_model, tmp_path / "live", name="retrained")
    assert holder.check() is True and holder.label.startswith("retrained@") and holder.swaps == 1

    running = holder.model
    cause_file = booster_file(stem, "cause")
    cause_file.write_text(cause_file.read_text()[:1000])  # a truncated copy
    assert holder.check() is False
    assert holder.model is running and holder.rejected == 1
    assert "rejected" in caplog.text and "keeping retrained@" in caplog.text
    assert holder.check() is False and holder.rejected == 1  # the same bad files: one log line

    copy_model(trained_model, tmp_path / "live")  # fixed
    assert holder.check() is True and holder.label == first


def test_a_model_of_another_schema_is_refused_at_start(tmp_path: Path, trained_model: Path) -> None:
    stem = copy_model(trained_model, tmp_path / "other")
    meta_path = model_files(stem)[0]
    meta = json.loads(meta_path.read_text())
    meta["feature_names"] = meta["feature_names"][:-1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="feature_names"):
        ModelHolder.load(stem)


# --- a running service in this process --------------------------------------------------------


async def _service(tmp_path: Path, model: Path, **extra: str) -> SidecarService:
    receiver = extra.pop("receiver", "{grpc_port: null, http_port: 0}")
    lines = [
        f"receiver: {receiver}",
        "api: {port: 0}",
        f"model: {model}",
        "window: 1s",
        "allowed_lateness: 500ms",
        *(f"{key}: {value}" for key, value in extra.items()),
    ]
    path = tmp_path / "sidecar.yaml"
    path.write_text("\n".join(lines) + "\n")
    service = SidecarService(load_sidecar_config(path), path)
    await service.start()
    return service


async def _post(service: SidecarService, body: bytes) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{service.receiver.http_endpoint}/v1/traces", data=body, headers=PROTOBUF) as response,
    ):
        return response.status


async def _health(service: SidecarService) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{service.api_port}/healthz") as response,
    ):
        return dict(await response.json())


async def test_duplicates_late_and_out_of_order_spans_are_counted_through_the_receiver(
    tmp_path: Path, trained_model: Path
) -> None:
    service = await _service(tmp_path, trained_model)
    try:
        first = request(*probe_spans(1, BASE), *probe_spans(2, BASE + S // 2)).SerializeToString()
        assert await _post(service, first) == 200
        assert await _post(service, first) == 200  # a Collector's retry
        newer = request(*probe_spans(3, BASE + 3 * S)).SerializeToString()
        older = request(*probe_spans(4, BASE + 2 * S + S // 4)).SerializeToString()
        assert await _post(service, newer) == 200
        assert await _post(service, older) == 200  # out of order, within the lateness
        await asyncio.sleep(0.5)  # the slot [BASE, BASE+1s) closes (watermark 2.5 s)
        late = request(*probe_spans(5, BASE + S // 4)).SerializeToString()
        assert await _post(service, late) == 200
        await asyncio.sleep(0.3)
        health = await _health(service)
        counters = health["counters"]
        # The service hands the receiver's and ingest's own counters to the API (/healthz, /metrics).
        assert health["intake"]["ingest"]["duplicate_traces"] == 2
        assert health["intake"]["receiver"]["requests_refused"]["malformed"] == 0
        assert counters["duplicate"] == 2
        assert counters["late"] == 1
        assert counters["out_of_order"] == 1
        assert counters["records"] == 5 and counters["received_requests"] == 5
    finally:
        await service.stop()


async def test_model_files_swapped_under_a_running_sidecar(tmp_path: Path, trained_model: Path) -> None:
    stem = copy_model(trained_model, tmp_path / "live")
    service = await _service(tmp_path, stem)
    try:
        before = (await _health(service))["model"]["version"]
        booster_file(stem, "scope").write_text("not a model\n")  # the scope booster broken
        service.request_reload()
        await asyncio.sleep(0.5)
        health = await _health(service)
        assert health["model"]["version"] == before
        assert health["status"] == "degraded" and "rejected, keeping" in health["reason"]
        assert service.models.rejected == 1
        copy_model(trained_model, tmp_path / "live", name="swapped")
        service.request_reload()
        await asyncio.sleep(1.0)
        health = await _health(service)
        assert health["model"]["version"].startswith("swapped@")
        assert health["status"] != "degraded" and health["reason"] is None
    finally:
        await service.stop()


async def test_a_bad_config_file_on_reload_is_rejected_and_the_running_one_kept(
    tmp_path: Path, trained_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = await _service(tmp_path, trained_model, output="{jsonl: one.jsonl}")
    try:
        path = tmp_path / "sidecar.yaml"
        good = path.read_text()
        path.write_text(good + "allowed_lateness: soon\n")
        assert service.reload_config() is False
        assert "rejected, keeping the running one" in caplog.text and "allowed_lateness" in caplog.text
        assert service.config.output.jsonl == str(tmp_path / "one.jsonl")
        path.write_text(good.replace("one.jsonl", "two.jsonl").replace("500ms", "2s"))
        assert service.reload_config() is True
        assert service.config.output.jsonl == str(tmp_path / "two.jsonl")
        assert service.windower is not None and service.windower.lateness_ns == 2 * S
    finally:
        await service.stop()


# --- state ----------------------------------------------------------------------------------


def test_pipeline_state_round_trips_through_the_store(tmp_path: Path) -> None:
    from otelprobe.attribution.records import records_frame
    from otelprobe.attribution.windows import assign_windows
    from otelprobe.sidecar.ingest import Ingest

    ingest = Ingest()
    engine, evaluator, tracker = FeatureEngine(), SLOEvaluator(None, 1.0), IncidentTracker()
    for i in range(8):
        records = ingest.add(request(*probe_spans(i + 1, BASE + i * S, ok=i < 6)))
        frame = records_frame(records)
        engine.features(assign_windows(frame, 1.0), 1.0)
        verdicts = evaluator.evaluate(BASE + i * S, frame)
        tracker.update(BASE + i * S, BASE + (i + 1) * S, verdicts)
    assert tracker.open_series == 1
    state = {
        "engine": snapshot.dump_engine(engine),
        "evaluator": snapshot.dump_evaluator(evaluator),
        "tracker": snapshot.dump_tracker(tracker),
    }
    store = StateStore(tmp_path / "state")
    store.save(window_s=1.0, closed_until_ns=BASE + 8 * S, pipeline=state, attributions=[{"target": "api"}])
    store.close()
    saved = StateStore(tmp_path / "state").load()
    assert (
        saved is not None
        and saved.closed_until_ns == BASE + 8 * S
        and saved.attributions == [{"target": "api"}]
    )

    engine2, evaluator2, tracker2 = FeatureEngine(), SLOEvaluator(None, 1.0), IncidentTracker()
    snapshot.load_engine(engine2, saved.pipeline["engine"])
    assert snapshot.load_evaluator(evaluator2, saved.pipeline["evaluator"]) == 1
    snapshot.load_tracker(tracker2, saved.pipeline["tracker"])
    assert snapshot.dump_engine(engine2) == state["engine"]
    assert snapshot.dump_evaluator(evaluator2) == state["evaluator"]
    assert snapshot.dump_tracker(tracker2) == state["tracker"]
    # The restored parts carry on exactly as the originals do.
    more = records_frame(ingest.add(request(*probe_spans(99, BASE + 8 * S, ok=False))))
    a = evaluator.evaluate(BASE + 8 * S, more)
    b = evaluator2.evaluate(BASE + 8 * S, more)
    assert [w.slos for w in a] == [w.slos for w in b]
    assert tracker.update(BASE + 8 * S, BASE + 9 * S, a) == tracker2.update(BASE + 8 * S, BASE + 9 * S, b)


def test_a_store_of_another_version_or_none_loads_as_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "fresh")
    assert store.load() is None
    store.close()


# --- config files ---------------------------------------------------------------------------

BAD_CONFIGS = {
    "receiver:\n  grpc_port: 70000\n": "bad.yaml:2: receiver.grpc_port: must be less than or equal to 65535",
    "receiver:\n  http_prot: 1\n": "bad.yaml:2: receiver.http_prot: unknown key 'http_prot'; did you mean",
    "receiver: {grpc_port: null, http_port: null}\n": "bad.yaml:1: receiver: give grpc_port or http_port",
    "window: soon\n": "bad.yaml:1: window: invalid duration 'soon'",
    "window: 0s\n": "bad.yaml:1: window: the window must be longer than 0 s",
    "limits:\n  max_series: 0\n": "bad.yaml:2: limits.max_series: must be greater than or equal to 1",
    "export:\n  protocol: smoke\n": "bad.yaml:2: export.protocol: expected 'http/protobuf' or 'grpc'",
    "receiver:\n  bearer_token: ${OTELPROBE_TEST_UNSET}\n": "bad.yaml:2: receiver.bearer_token: environment",
    "- a\n- list\n": "bad.yaml:1: a sidecar config must be a mapping",
    "receiver: [\n": "bad.yaml:",
    "receiver:\n  tls:\n    cert_file: no-such.pem\n    key_file: bad.yaml\n": (
        "bad.yaml:3: receiver.tls.cert_file: cannot read 'no-such.pem' (relative to the config file's"
    ),
    "receiver:\n  tls: {cert_file: bad.yaml, key_file: ., client_ca_file: bad.yaml}\n": (
        "bad.yaml:2: receiver.tls.key_file: cannot read '.' (relative to the config file's directory"
    ),
}


@pytest.mark.parametrize(("text", "message"), list(BAD_CONFIGS.items()))
def test_bad_config_files_name_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as failure:
        load_sidecar_config(path)
    assert any(str(p).startswith(str(tmp_path / message)) for p in failure.value.problems), (
        failure.value.problems
    )


def test_the_bearer_token_comes_from_a_file_and_is_never_shown(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok-123456\n")
    path = tmp_path / "ok.yaml"
    path.write_text("receiver:\n  bearer_token: ${file:token}\n")
    config = load_sidecar_config(path)
    assert config.receiver.bearer_token is not None
    assert config.receiver.bearer_token.get_secret_value() == "tok-123456"
    assert "tok-123456" not in repr(config)


def test_the_cli_prints_every_problem_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("window: soon\nlimits:\n  max_series: 0\n")
    completed = subprocess.run(
        [sys.executable, "-m", "otelprobe.cli", "sidecar", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    lines = completed.stderr.strip().splitlines()
    assert lines == [
        f"{path}:1: window: invalid duration 'soon': expected e.g. '250ms', '5s', '1m30s', or 'auto'",
        f"{path}:3: limits.max_series: must be greater than or equal to 1, got 0 (int)",
    ]
    assert "Traceback" not in completed.stderr


async def test_an_overloaded_sidecar_answers_retry_later_and_loses_nothing_it_accepted(
    tmp_path: Path, trained_model: Path
) -> None:
    service = await _service(
        tmp_path, trained_model, receiver="{grpc_port: null, http_port: 0, max_queue: 1}"
    )
    try:
        bodies = [
            request(
                *[s for n in range(k * 200, (k + 1) * 200) for s in probe_spans(n + 1, BASE + n * S // 100)]
            ).SerializeToString()
            for k in range(40)
        ]
        async with aiohttp.ClientSession() as http:

            async def post(body: bytes) -> tuple[int, str | None]:
                url = f"{service.receiver.http_endpoint}/v1/traces"
                async with http.post(url, data=body, headers=PROTOBUF) as response:
                    return response.status, response.headers.get("Retry-After")

            answers = await asyncio.gather(*(post(body) for body in bodies))
        assert {status for status, _ in answers} == {200, 503}
        assert all(hint == "1" for status, hint in answers if status == 503)
        accepted = sum(status == 200 for status, _ in answers)
        await asyncio.sleep(0.3)
        counters = (await _health(service))["counters"]
        assert counters["rejected"] == len(answers) - accepted
        assert counters["records"] == 200 * accepted  # every accepted probe became a record
    finally:
        await service.stop()


def test_a_save_without_baselines_keeps_the_last_ones_and_trims_attributions(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state", max_recent=3)
    store.save(window_s=1.0, closed_until_ns=10, pipeline={"engine": 1}, attributions=[{"n": 0}])
    for n in range(1, 5):
        store.save(window_s=1.0, closed_until_ns=10 + n, pipeline=None, attributions=[{"n": n}])
    saved = store.load()
    assert saved is not None
    assert saved.pipeline == {"engine": 1} and saved.closed_until_ns == 14
    assert [a["n"] for a in saved.attributions] == [2, 3, 4]


async def test_state_it_cannot_read_is_logged_and_the_sidecar_starts_afresh(
    tmp_path: Path, trained_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(tmp_path / "state")
    store.save(window_s=1.0, closed_until_ns=BASE, pipeline={"engine": {"baselines": [[1]]}})
    store.close()
    service = await _service(tmp_path, trained_model, state_dir=str(tmp_path / "state"))
    try:
        assert "not restored" in caplog.text
        assert await _post(service, request(*probe_spans(1, BASE + 5 * S)).SerializeToString()) == 200
        assert service.processor is not None and not service.processor.engine.baselines
    finally:
        await service.stop()


def test_a_problem_with_a_substituted_value_does_not_print_the_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("receiver:\n  grpc_port: ${OTELPROBE_TEST_SECRET}\n")
    completed = subprocess.run(
        [sys.executable, "-m", "otelprobe.cli", "sidecar", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "OTELPROBE_TEST_SECRET": "hunter2-secret"},
    )
    assert completed.returncode == 1
    assert f"{path}:2: receiver.grpc_port:" in completed.stderr
    assert "hunter2-secret" not in completed.stderr


def test_the_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "sidecar" / "sidecar.yaml"
    config = load_sidecar_config(example)
    assert config.receiver.grpc_port == 4327 and config.receiver.http_port == 4328
    assert config.api.port == 8787 and config.window_s == "auto"
