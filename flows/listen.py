"""Event-driven gating: an HTTP listener for MLflow's ``model_version.created`` webhook.

``xai-gate listen --policy FILE`` is a long-running process: torch, MLflow,
Great Expectations and one Prefect server are started once, so a version
registered on the tracking server is gated as soon as the delivery arrives,
without the ~20 s of start-up a fresh ``xai-gate gate`` pays. Each verified
delivery for the policy's model queues its version; one worker thread gates
the queue in order through :func:`flows.run.run_gate`, so every gate is a
Prefect flow run (tagged with the policy's model and digest) under the same
per-version lock and verdict reuse as any other gate. A version already
queued is not queued twice.

Each gate is a run of the deployment ``xai-gate-listen-MODEL`` (created at
start, the policy's digest as its version), so the Prefect UI lists webhook
gates under it, but it is executed in this process: a served deployment's
runner would start each run in a new process and pay the imports the
listener exists to avoid. The sweeper (``xai-gate serve``) stays the
catch-up path for deliveries MLflow gave up on.

Endpoints: ``POST /webhook`` (202 queued, 200 ignored: another model or
event, 401 refused: unsigned, forged, stale or replayed, 413 larger than
``XAI_GATE_WEBHOOK_MAX_BYTES`` (1 MiB), 400 malformed) and
``GET /health`` (the queue, and the last outcome).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from flows.outcome import GateOutcome
from pipelines.policy import GatePolicy, load_policy
from pipelines.tracking.webhooks import (
    EVENT,
    SIGNATURE_HEADER,
    DeliveryRefused,
    ReplayGuard,
    verify_delivery,
)

__all__ = ["GateQueue", "listener_app", "listener_deployment", "serve_listener"]

SECRET_ENV = "XAI_GATE_WEBHOOK_SECRET"
"""The webhook secret: the same string the MLflow webhook was created with."""

MAX_BODY_ENV = "XAI_GATE_WEBHOOK_MAX_BYTES"
MAX_BODY_BYTES = 1 << 20
"""An MLflow ``model_version.created`` payload is a few KB (name, version, source, run id,
tags, description); a larger body is answered 413 without reading the rest."""
_VERSION = re.compile(r"[0-9]{1,18}")

_log = logging.getLogger("xai_gate.listen")


def max_body_bytes() -> int:
    """The body cap: ``XAI_GATE_WEBHOOK_MAX_BYTES`` when it is a positive integer, else 1 MiB."""
    value = os.environ.get(MAX_BODY_ENV, "")
    return int(value) if value.isascii() and value.isdigit() and int(value) > 0 else MAX_BODY_BYTES


def _too_large(cap: int) -> JSONResponse:
    refused = f"delivery body larger than {cap} bytes ({MAX_BODY_ENV})"
    _log.warning("delivery refused: %s", refused)
    return JSONResponse({"refused": refused}, status_code=413)


@dataclass
class GateQueue:
    """Versions waiting to be gated, gated one at a time by a worker thread, in order."""

    gate: Callable[[str], GateOutcome]
    _pending: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _queued: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: list[GateOutcome] = field(default_factory=list)
    current: str | None = None
    """The version being gated now."""
    _worker: threading.Thread | None = None

    def start(self) -> None:
        self._worker = threading.Thread(target=self._run, name="xai-gate-listen", daemon=True)
        self._worker.start()

    def put(self, version: str) -> bool:
        """Queue ``version``; False when it is already waiting (a retried delivery)."""
        with self._lock:
            if version in self._queued:
                return False
            self._queued.add(version)
        self._pending.put(version)
        return True

    @property
    def waiting(self) -> list[str]:
        with self._lock:
            return sorted(self._queued, key=lambda v: (len(v), v))

    def stop(self, timeout: float | None = None) -> bool:
        """Gate nothing more; wait up to ``timeout`` for the gate in flight. True when done."""
        self._pending.put(None)
        if self._worker is not None:
            self._worker.join(timeout)
            return not self._worker.is_alive()
        return True

    def _run(self) -> None:
        while (version := self._pending.get()) is not None:
            self.current = version
            try:
                outcome = self.gate(version)
            except Exception as exc:  # run_gate turns errors into outcomes; this is a bug
                _log.exception("gating v%s failed outside the gate: %s", version, exc)
            else:
                self.outcomes.append(outcome)
                _log.info(outcome.message)
            finally:
                self.current = None
                with self._lock:
                    self._queued.discard(version)


def listener_app(
    model: str, secret: str, gates: GateQueue, guard: ReplayGuard | None = None
) -> FastAPI:
    """The FastAPI app: verify each delivery, queue new versions of ``model``."""
    guard = guard or ReplayGuard()
    app = FastAPI(title="xai-gate listen", docs_url=None, redoc_url=None, openapi_url=None)

    # FastAPI reads these annotations at runtime: Request and JSONResponse are module-level
    # names, so they resolve although this module postpones annotations.
    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        # The headers first: an unsigned or oversized request costs no memory for its body.
        if not request.headers.get(SIGNATURE_HEADER):
            refused = f"unsigned delivery (no {SIGNATURE_HEADER} header)"
            _log.warning("delivery refused: %s", refused)
            return JSONResponse({"refused": refused}, status_code=401)
        cap = max_body_bytes()
        length = request.headers.get("content-length", "")
        if length and (not length.isascii() or not length.isdigit() or int(length) > cap):
            return _too_large(cap)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cap:
                return _too_large(cap)
        try:
            delivery = verify_delivery(secret, request.headers, bytes(body), guard=guard)
        except DeliveryRefused as refused:
            _log.warning("delivery refused: %s", refused)
            return JSONResponse({"refused": str(refused)}, status_code=refused.status)
        name, version = delivery.data.get("name"), delivery.data.get("version")
        if delivery.event != EVENT or name != model:
            return JSONResponse({"ignored": f"{delivery.event} for {name!r}"}, status_code=200)
        if (
            isinstance(version, bool)
            or not isinstance(version, str | int)
            or not _VERSION.fullmatch(str(version))
        ):  # ASCII digits only: '²'.isdigit() is True, and int('²') fails
            return JSONResponse({"refused": f"version {str(version)[:40]!r} is not a number"}, 400)
        queued = gates.put(str(int(version)))
        return JSONResponse(
            {"queued" if queued else "already queued": f"{model} v{int(version)}"},
            status_code=202,
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        last = gates.outcomes[-1] if gates.outcomes else None
        return {
            "model": model,
            "waiting": gates.waiting,
            "gated": len(gates.outcomes),
            "last": last.message if last else None,
        }

    return app


def serve_listener(
    policy_file: Path,
    *,
    host: str,
    port: int,
    secret: str,
    tracking_uri: str | None,
    register: str | None = None,
) -> None:
    """Run the listener until interrupted; ``register``: first point the server's webhook at
    this public URL (``http(s)://host:port/webhook`` as the MLflow server reaches it)."""
    import uvicorn
    from prefect import tags

    from flows.run import run_gate
    from pipelines.tracking import configure_tracking
    from pipelines.tracking.webhooks import register_webhook

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    _log.addHandler(handler)
    _log.setLevel(logging.INFO)  # deliveries, refusals and verdicts, one line each
    policy = load_policy(policy_file)
    configure_tracking(tracking_uri)
    if register:
        webhook_id = register_webhook(register, secret, model=policy.model)
        _log.info("webhook %s delivers %s of %s to %s", webhook_id, EVENT, policy.model, register)
    labels = (f"model:{policy.model}", f"policy:{policy.digest()[:12]}", "trigger:webhook")
    _warm_up()
    deployment_id = listener_deployment(policy, Path(policy_file), labels)

    def gate(version: str) -> GateOutcome:
        with tags(*labels):
            return run_gate(
                policy.model,
                version,
                policy_file=str(Path(policy_file).absolute()),
                tracking_uri=tracking_uri,
                deployment_id=deployment_id,
            )

    gates = GateQueue(gate)
    gates.start()
    app = listener_app(policy.model, secret, gates)
    received: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):  # uvicorn raises them again once it stopped
        signal.signal(signum, lambda signum, frame: received.append(signum))
    uvicorn.run(app, host=host, port=port, log_level="warning")
    how = "SIGTERM" if signal.SIGTERM in received else "Ctrl-C" if received else "shutdown"
    _finish(gates, policy.model, how, tracking_uri)
    if received:
        raise SystemExit(128 + received[0])


STOP_GRACE_SECONDS = 60.0
"""How long a stopped listener waits for its gate in flight to record its end."""


def _finish(gates: GateQueue, model: str, how: str, tracking_uri: str | None) -> None:
    """A gate in flight when the listener stops ends as the CLI's does: ``error`` recorded
    with why, in its history, and its Prefect run Failed (its judging worker is killed, so
    the flow takes its own error path); queued versions are left to the sweeper."""
    from flows.reporting import tag_error
    from pipelines.judging.sandbox import stop_judging

    version = gates.current
    reason = f"the listener was stopped ({how}) while it gated {model} v{version}"
    if version is not None:
        _log.warning("%s: recording error", reason)
    stop_judging(reason)
    if not gates.stop(timeout=STOP_GRACE_SECONDS) and version is not None:
        tag_error(model, version, reason, tracking_uri)  # the flow did not end in time


def listener_deployment(policy: GatePolicy, policy_file: Path, labels: tuple[str, ...]) -> UUID:
    """The deployment of the gate flow whose runs this listener executes (created or updated):
    in the Prefect UI each webhook gate is a run of it, named after the model, with the
    policy's digest as its version and the policy file as its description."""
    from flows.xai_gate import xai_gate

    deployment = xai_gate.to_deployment(
        name=f"xai-gate-listen-{policy.model}",
        tags=list(labels),
        version=policy.digest()[:12],
        description=f"Webhook gates of {policy.model} under {policy_file.absolute()}",
    )
    return deployment.apply()


def _warm_up() -> None:
    """Pay every one-time cost before the first delivery: Prefect's temporary server (when no
    ``PREFECT_API_URL`` is set; a no-op flow run starts it) and the libraries a gate imports
    on first use (Great Expectations, matplotlib, MLflow's pytorch flavour)."""
    import importlib

    from prefect import flow

    for module in (
        "great_expectations",
        "matplotlib.pyplot",
        "mlflow.pytorch",
        "pipelines.evidence.gx",
        "pipelines.report.html",
        "pipelines.report.plots",
        "scipy.stats",
    ):
        importlib.import_module(module)
    flow(name="xai-gate-listen-ready", log_prints=False)(_nothing)()


def _nothing() -> None:
    return None
