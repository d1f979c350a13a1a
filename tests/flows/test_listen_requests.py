"""The listener's answers to hostile requests, on the real app (no gate runs)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from flows.listen import GateQueue, listener_app
from flows.outcome import GateOutcome
from pipelines.tracking.webhooks import sign_delivery
from pipelines.verdict.decision import Verdict

SECRET = "hook-secret"


@pytest.fixture
def client_and_queue():
    gates = GateQueue(gate=lambda version: GateOutcome("m", version, Verdict.PASSED))  # not started
    return TestClient(listener_app("m", SECRET, gates)), gates


def _signed(body: str, delivery_id: str | None = None) -> dict[str, str]:
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(int(time.time()))
    return {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": sign_delivery(SECRET, delivery_id, stamp, body),
    }


def _created(version: object) -> str:
    data = {"name": "m", "version": version, "source": "models:/m", "run_id": "r", "tags": {}}
    return json.dumps({"entity": "model_version", "action": "created", "data": data})


def test_an_unsigned_request_is_401_and_an_oversized_one_413_before_the_body_is_read(
    client_and_queue, monkeypatch
):
    client, gates = client_and_queue
    big = b"x" * (2 << 20)
    unsigned = client.post("/webhook", content=big)
    assert unsigned.status_code == 401 and "unsigned" in unsigned.json()["refused"]
    huge = client.post("/webhook", content=big, headers={"X-MLflow-Signature": "f" * 64})
    assert huge.status_code == 413 and "larger than 1048576 bytes" in huge.json()["refused"]

    def chunks():  # no Content-Length: the cap holds while the body streams in
        for _ in range(40):
            yield b"y" * 65536

    streamed = client.post("/webhook", content=chunks(), headers={"X-MLflow-Signature": "ab"})
    assert streamed.status_code == 413
    monkeypatch.setenv("XAI_GATE_WEBHOOK_MAX_BYTES", "100")
    body = _created("1")
    assert client.post("/webhook", content=body, headers=_signed(body)).status_code == 413
    monkeypatch.delenv("XAI_GATE_WEBHOOK_MAX_BYTES")
    assert client.post("/webhook", content=body, headers=_signed(body)).status_code == 202
    assert gates.waiting == ["1"]


@pytest.mark.parametrize("version", ["²", "١", "1.5", "-1", "", True, None, [1], "9" * 40])
def test_a_signed_delivery_with_a_version_that_is_no_number_is_400_not_500(
    client_and_queue, version
):
    client, gates = client_and_queue
    body = _created(version)
    answer = client.post("/webhook", content=body, headers=_signed(body))
    assert answer.status_code == 400 and "is not a number" in answer.json()["refused"]
    assert gates.waiting == []
