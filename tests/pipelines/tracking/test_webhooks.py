"""Webhook deliveries: only signed, fresh, first-time ones are accepted.

The expected signatures are computed here with ``hmac``/``hashlib`` from the
layout MLflow documents (``v1,`` + base64 HMAC-SHA256 of
``"<delivery id>.<timestamp>.<body>"``), not with the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from pipelines.tracking.webhooks import (
    MAX_AGE_S,
    DeliveryRefused,
    ReplayGuard,
    sign_delivery,
    verify_delivery,
)

SECRET = "whsec-test"
NOW = 1_800_000_000
BODY = json.dumps(
    {
        "entity": "model_version",
        "action": "created",
        "timestamp": "2027-01-15T08:00:00+00:00",
        "data": {"name": "lesion-classifier", "version": "3", "run_id": "abc"},
    }
)


def _signature(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    digest = hmac.new(
        secret.encode(), f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(digest).decode()


def _headers(
    delivery_id: str = "d-1", timestamp: int = NOW, body: str = BODY, secret: str = SECRET
):
    return {
        "x-mlflow-delivery-id": delivery_id,
        "x-mlflow-timestamp": str(timestamp),
        "x-mlflow-signature": _signature(secret, delivery_id, str(timestamp), body),
    }


def test_the_signature_is_mlflows_documented_layout():
    assert sign_delivery(SECRET, "d-1", str(NOW), BODY) == _signature(SECRET, "d-1", str(NOW), BODY)


def test_a_signed_fresh_delivery_is_accepted():
    delivery = verify_delivery(SECRET, _headers(), BODY.encode(), guard=ReplayGuard(), now=NOW)
    assert delivery.event == "model_version.created"
    assert delivery.data["name"] == "lesion-classifier" and delivery.data["version"] == "3"
    assert delivery.delivery_id == "d-1" and delivery.timestamp == NOW


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"x-mlflow-delivery-id": "d-1", "x-mlflow-timestamp": str(NOW)}, BODY, "unsigned"),
        (_headers(secret="another-secret"), BODY, "does not match"),
        (_headers(), BODY.replace('"3"', '"4"'), "does not match"),  # body changed in transit
        ({**_headers(), "x-mlflow-delivery-id": "d-2"}, BODY, "does not match"),  # id swapped
        ({**_headers(), "x-mlflow-timestamp": str(NOW + 1)}, BODY, "does not match"),
        (_headers(timestamp=NOW - MAX_AGE_S - 1), BODY, "stale"),
        (_headers(timestamp=NOW + MAX_AGE_S + 1), BODY, "stale"),
        ({"x-mlflow-signature": "v1,AAAA"}, BODY, "without"),
    ],
    ids=["unsigned", "forged", "body", "delivery-id", "timestamp", "old", "future", "no-id"],
)
def test_unsigned_forged_and_stale_deliveries_are_refused(headers, body, message):
    with pytest.raises(DeliveryRefused, match=message) as refused:
        verify_delivery(SECRET, headers, body.encode(), guard=ReplayGuard(), now=NOW)
    assert refused.value.status == 401


def test_a_replayed_delivery_is_refused_while_it_would_still_be_fresh():
    guard = ReplayGuard()
    verify_delivery(SECRET, _headers(), BODY.encode(), guard=guard, now=NOW)
    with pytest.raises(DeliveryRefused, match="replayed"):
        verify_delivery(SECRET, _headers(), BODY.encode(), guard=guard, now=NOW + 10)
    # A different delivery (MLflow's retry carries a new id) is accepted.
    verify_delivery(SECRET, _headers("d-2"), BODY.encode(), guard=guard, now=NOW + 10)


def test_the_guard_forgets_ids_only_once_they_are_stale_anyway():
    guard = ReplayGuard(window_s=100)
    assert guard.first_time("a", 0)
    assert not guard.first_time("a", 150)
    assert guard.first_time("b", 250)  # "a" is now older than twice the window: dropped
    assert guard.first_time("a", 251)


@pytest.mark.parametrize(
    ("body", "message"),
    [("not json", "not JSON"), ('["a list"]', "no 'data'"), ('{"data": 3}', "no 'data'")],
)
def test_a_signed_but_malformed_body_is_a_bad_request(body, message):
    with pytest.raises(DeliveryRefused, match=message) as refused:
        verify_delivery(SECRET, _headers(body=body), body.encode(), guard=ReplayGuard(), now=NOW)
    assert refused.value.status == 400


def test_without_a_secret_nothing_is_accepted():
    with pytest.raises(DeliveryRefused, match="no webhook secret"):
        verify_delivery("", _headers(), BODY.encode(), guard=ReplayGuard(), now=NOW)
