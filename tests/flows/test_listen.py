"""Event-driven gating end to end: a real ``mlflow server`` delivers its webhook to a real
``xai-gate listen`` process on 127.0.0.1; registering a version is all it takes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import mlflow
import pytest
import requests
from mlflow import MlflowClient

from flows.example import start_mlflow_server
from pipelines.tracking.webhooks import sign_delivery

pytestmark = pytest.mark.slow
MODEL = "listened-model"
SECRET = "listen-secret"


@pytest.fixture
def server(tmp_path, monkeypatch) -> Iterator[str]:
    """An MLflow server that may deliver to http on private addresses (127.0.0.1)."""
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    store = tmp_path / "store"
    store.mkdir()
    running = start_mlflow_server(store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", running.uri)
    mlflow.set_tracking_uri(running.uri)
    mlflow.set_experiment("tests")  # forget an experiment id cached from another store
    try:
        yield running.uri
    finally:
        if mlflow.active_run():
            mlflow.end_run()
        running.kill(signal.SIGTERM)


@pytest.fixture
def listener(server, lesion_gate, tmp_path, serve_on_a_free_port) -> Iterator[str]:
    """``xai-gate listen`` as its own process, registered as the server's webhook."""
    from prefect.settings import get_current_settings

    policy = lesion_gate.policy(tmp_path / "gate", MODEL)
    prefect_api = str(get_current_settings().api.url)  # the harness's: its runs can be read

    def launch(port: int, log) -> subprocess.Popen:
        url = f"http://127.0.0.1:{port}"
        return subprocess.Popen(
            [
                sys.executable, "-m", "flows.cli", "listen", "--policy", str(policy),
                "--port", str(port), "--tracking-uri", server, "--register", f"{url}/webhook",
            ],
            env={**os.environ, "XAI_GATE_WEBHOOK_SECRET": SECRET, "PREFECT_API_URL": prefect_api},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    process, port, log = serve_on_a_free_port(
        launch,
        lambda port: f"http://127.0.0.1:{port}/health",
        tmp_path / "listen.log",
        "the listener",
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        log.close()


def _wait_until_gated(url: str, count: int, timeout: float = 240) -> int:
    """The listener's count of finished gates, once it reaches ``count`` with nothing queued."""
    deadline = time.monotonic() + timeout
    while True:
        health = requests.get(f"{url}/health", timeout=5).json()
        if (health["gated"] >= count and not health["waiting"]) or time.monotonic() > deadline:
            return health["gated"]
        time.sleep(0.5)


def _verdict(version: str) -> str | None:
    return MlflowClient().get_model_version(MODEL, version).tags.get("xai_gate.verdict")


def _post(url: str, body: str, *, secret: str | None = SECRET, delivery_id: str | None = None):
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(int(time.time()))
    headers = {"X-MLflow-Delivery-Id": delivery_id, "X-MLflow-Timestamp": stamp}
    if secret is not None:
        headers["X-MLflow-Signature"] = sign_delivery(secret, delivery_id, stamp, body)
    return requests.post(f"{url}/webhook", data=body.encode(), headers=headers, timeout=10)


def _created(name: str, version: str) -> str:
    data = {"name": name, "version": version, "source": "models:/m", "run_id": "r", "tags": {}}
    return json.dumps({"entity": "model_version", "action": "created", "data": data})


def test_registering_a_version_is_all_it_takes_to_gate_it(
    server, listener, trained_pair, lesion_gate
):
    webhooks = list(MlflowClient().list_webhooks())
    assert [(w.url, [str(e) for e in w.events]) for w in webhooks] == [
        (f"{listener}/webhook", ["model_version.created"])
    ]
    lesion_gate.register(trained_pair.shortcut, MODEL)  # nothing else is called
    assert _wait_until_gated(listener, 1) == 1
    assert _verdict("1") == "blocked"
    version = MlflowClient().get_model_version(MODEL, "1")
    assert version.description.startswith("xai-gate: blocked")
    health = requests.get(f"{listener}/health", timeout=5).json()
    assert health["gated"] == 1 and health["waiting"] == []
    assert health["last"].startswith(f"{MODEL} v1 blocked")

    # In Prefect, the gate is a run of the listener's deployment, executed by the listener.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"xai-gate/xai-gate-listen-{MODEL}")
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )
    # The harness's Prefect outlives this test: other tests' listeners ran the same deployment.
    runs = [run for run in runs if run.parameters.get("tracking_uri") == server]
    assert f"model:{MODEL}" in deployment.tags and "trigger:webhook" in deployment.tags
    assert len(runs) == 1 and runs[0].parameters["version"] == "1"
    assert runs[0].state.is_failed() and "blocked" in runs[0].state.message  # blocked: Failed
    assert {f"model:{MODEL}", "trigger:webhook"} <= set(runs[0].tags)


def test_forged_unsigned_replayed_and_malformed_deliveries_gate_nothing(
    listener, trained_pair, lesion_gate
):
    # v1 exists, but the server's own delivery is not what this test sends: it is gated by
    # the real webhook; wait for it so the counts below are about our deliveries alone.
    lesion_gate.register(trained_pair.clean, MODEL)
    assert _wait_until_gated(listener, 1) == 1

    body = _created(MODEL, "1")
    assert _post(listener, body, secret="not-the-secret").status_code == 401
    assert _post(listener, body, secret=None).status_code == 401
    stale = {"X-MLflow-Delivery-Id": "old", "X-MLflow-Timestamp": str(int(time.time()) - 3600)}
    stale["X-MLflow-Signature"] = sign_delivery(SECRET, "old", stale["X-MLflow-Timestamp"], body)
    stale_answer = requests.post(f"{listener}/webhook", data=body, headers=stale, timeout=10)
    assert stale_answer.status_code == 401 and "stale" in stale_answer.json()["refused"]

    other = _created("someone-elses-model", "7")
    assert _post(listener, other, delivery_id="once").status_code == 200  # ignored
    replay = _post(listener, other, delivery_id="once")
    assert replay.status_code == 401 and "replayed" in replay.json()["refused"]

    assert _post(listener, "{not json").status_code == 400
    assert _post(listener, json.dumps({"data": {"name": MODEL}})).status_code == 200  # no event
    health = requests.get(f"{listener}/health", timeout=5).json()  # still serving
    assert health["gated"] == 1 and health["waiting"] == []
    assert _verdict("1") == "passed"


def test_a_listener_stopped_mid_gate_records_error_and_its_prefect_run_fails(
    server, trained_pair, lesion_gate, tmp_path, serve_on_a_free_port
):
    """SIGTERM (``docker stop``) while a delivered version is judged: as the CLI would."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import get_current_settings

    policy = lesion_gate.policy(tmp_path / "gate", MODEL, n=64)
    prefect_api = str(get_current_settings().api.url)

    def launch(port: int, log) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable, "-m", "flows.cli", "listen", "--policy", str(policy),
                "--port", str(port), "--tracking-uri", server,
            ],
            env={**os.environ, "XAI_GATE_WEBHOOK_SECRET": SECRET, "PREFECT_API_URL": prefect_api},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    log_file = tmp_path / "listen.log"
    process, port, log = serve_on_a_free_port(
        launch, lambda port: f"http://127.0.0.1:{port}/health", log_file, "the listener"
    )
    try:
        lesion_gate.register(trained_pair.clean, MODEL)
        assert _post(f"http://127.0.0.1:{port}", _created(MODEL, "1")).status_code == 202
        deadline = time.monotonic() + 240
        while "cam-audit" not in log_file.read_text(errors="replace"):  # the audit is under way
            assert process.poll() is None and time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGTERM)
        code = process.wait(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
    assert code == 128 + signal.SIGTERM, log_file.read_text()
    tags = MlflowClient().get_model_version(MODEL, "1").tags
    reason = f"the listener was stopped (SIGTERM) while it gated {MODEL} v1"
    assert tags["xai_gate.verdict"] == "error" and tags["xai_gate.reason"] == reason
    assert [(h["verdict"], h["reason"]) for h in json.loads(tags["xai_gate.history"])] == [
        ("error", reason)
    ]
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"xai-gate/xai-gate-listen-{MODEL}")
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )
    (run,) = [run for run in runs if run.parameters.get("tracking_uri") == server]
    assert run.state.is_failed() and reason in run.state.message
