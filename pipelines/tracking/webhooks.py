"""MLflow registry webhooks: verify a delivery, and register the listener with the server.

MLflow 3 signs each delivery with the webhook's secret: ``X-MLflow-Signature:
v1,<base64 HMAC-SHA256>`` over ``"<delivery id>.<timestamp>.<body>"``, with
the delivery id and the Unix timestamp in their own headers
(``mlflow/webhooks/delivery.py``). A delivery is accepted only when it is
signed with our secret, fresh (its timestamp within ``MAX_AGE_S`` of now)
and not seen before (its delivery id is remembered for as long as it would
be fresh), so a forged, unsigned, stale or replayed delivery gates nothing.

The MLflow server delivers only to ``https`` URLs on public addresses unless
it runs with ``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https`` and
``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true`` (for a listener on 127.0.0.1 or a
private network).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.errors import GateError

__all__ = [
    "DELIVERY_HEADER",
    "EVENT",
    "MAX_AGE_S",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Delivery",
    "DeliveryRefused",
    "ReplayGuard",
    "register_webhook",
    "sign_delivery",
    "verify_delivery",
]

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
EVENT = "model_version.created"
"""The event the listener gates on: a new version of the policy's model."""
MAX_AGE_S = 300
"""A delivery older than this (or this far in the future: clock skew) is refused as stale."""
_SIGNATURE_VERSION = "v1"


class DeliveryRefused(GateError, ValueError):
    """A delivery that must gate nothing; ``status`` is the HTTP answer (401 or 400)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    timestamp: int
    entity: str
    action: str
    data: Mapping[str, Any]

    @property
    def event(self) -> str:
        return f"{self.entity}.{self.action}"


class ReplayGuard:
    """Delivery ids seen within the freshness window: a second delivery of one is a replay."""

    def __init__(self, window_s: float = MAX_AGE_S) -> None:
        self._window = window_s
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str, now: float) -> bool:
        """Record ``delivery_id``; False when it was already seen (and is still remembered)."""
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now - 2 * self._window:
                self._seen.popitem(last=False)  # too old to be fresh again: forget it
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = now
            return True


def sign_delivery(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for this delivery."""
    digest = hmac.new(
        secret.encode(), f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256
    ).digest()
    return f"{_SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify_delivery(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    guard: ReplayGuard,
    now: float | None = None,
) -> Delivery:
    """The delivery, if it is signed with ``secret``, fresh and new; else ``DeliveryRefused``.

    ``headers`` is looked up case-insensitively (HTTP header names are). The
    signature is checked before anything in the body is read.
    """
    if not secret:
        raise DeliveryRefused("the listener has no webhook secret: it accepts nothing", 500)
    lower = {key.lower(): value for key, value in headers.items()}
    signature = lower.get(SIGNATURE_HEADER.lower(), "")
    delivery_id = lower.get(DELIVERY_HEADER.lower(), "")
    stamp = lower.get(TIMESTAMP_HEADER.lower(), "")
    if not signature:
        raise DeliveryRefused(f"unsigned delivery (no {SIGNATURE_HEADER} header)")
    if not delivery_id or not stamp:
        raise DeliveryRefused(f"delivery without {DELIVERY_HEADER} or {TIMESTAMP_HEADER}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise DeliveryRefused("delivery body is not UTF-8", 400) from None
    expected = sign_delivery(secret, delivery_id, stamp, text)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise DeliveryRefused("delivery signature does not match the webhook secret")
    now = time.time() if now is None else now
    try:
        timestamp = int(stamp)
    except ValueError:
        raise DeliveryRefused(f"{TIMESTAMP_HEADER} is not a Unix time: {stamp[:40]!r}") from None
    if abs(now - timestamp) > MAX_AGE_S:
        raise DeliveryRefused(
            f"stale delivery: signed {int(now - timestamp)} s from now (at most {MAX_AGE_S} s)"
        )
    if not guard.first_time(delivery_id, now):
        raise DeliveryRefused(f"replayed delivery {delivery_id[:64]!r}")
    try:
        payload = json.loads(text)
    except ValueError:
        raise DeliveryRefused("delivery body is not JSON", 400) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise DeliveryRefused("delivery body has no 'data' object", 400)
    return Delivery(
        delivery_id=delivery_id,
        timestamp=timestamp,
        entity=str(payload.get("entity", "")),
        action=str(payload.get("action", "")),
        data=payload["data"],
    )


def register_webhook(url: str, secret: str, *, model: str) -> str:
    """Create (or update) the tracking server's webhook that calls ``url`` on new versions.

    One webhook per model and URL, named after them, so registering again
    updates it instead of adding a second one that would gate twice. Returns
    its id.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    name = f"xai-gate-{model}"[:60]
    for webhook in _all_webhooks(client):
        if webhook.name == name and webhook.url == url:
            client.update_webhook(webhook.webhook_id, secret=secret, events=[EVENT])
            return webhook.webhook_id
    description = f"xai-gate listen: gate new versions of {model}"
    created = client.create_webhook(
        name=name, url=url, events=[EVENT], secret=secret, description=description
    )
    return created.webhook_id


def _all_webhooks(client: Any) -> list[Any]:
    webhooks, token = [], None
    while True:
        page = client.list_webhooks(page_token=token)
        webhooks += list(page)
        token = page.token
        if not token:
            return webhooks
