"""Registration to verdict: how long a new version waits for its verdict.

A real ``mlflow server`` (sqlite, webhooks allowed to 127.0.0.1) delivers
``model_version.created`` to a real ``xai-gate listen`` process, which was
started (imports, Prefect's temporary server) before the clock runs. Timed
from ``create_model_version`` on the client to the version's finished
``xai_gate.verdict`` tag, polled every 0.1 s, for a small CNN on 16 audit
images with the default checks. The anchor is the way without a listener:
a fresh ``xai-gate gate`` process for the same version (start-up included),
which the sweeper runs once per schedule period on top.

    python -m benchmarks webhook_latency [--quick]
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import Row
from benchmarks.gate_overhead import _env

__all__ = ["run"]

MODEL = "latency-model"
SECRET = "bench-webhook-secret"
GOAL_S = 10.0


def _prepare(workdir: Path, uri: str, n: int) -> tuple[Path, str]:
    """The audit set and policy, and a logged (not yet registered) model; its model id."""
    import mlflow
    import torch

    from pipelines.audit_sets.images import write_audit_set
    from pipelines.policy import GatePolicy, write_policy
    from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions
    from xai_checks.examples.toy_models import SmallCNN

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench")
    torch.manual_seed(0)
    with mlflow.start_run():
        logged = mlflow.pytorch.log_model(
            SmallCNN().eval(),
            name="model",
            serialization_format="pickle",
            metadata={"class_names": list(CLASS_NAMES)},
            pip_requirements=["torch"],
        )
    batch = make_lesions(n, ruler="always", seed=0)
    manifest = write_audit_set(
        workdir / "audit", batch.images, batch.labels, batch.masks, CLASS_NAMES
    )
    policy = GatePolicy.from_options(model=MODEL, audit_set=manifest, sanity_images=4)
    return write_policy(policy, workdir / "policy.yaml"), logged.model_id


def _wait_for_health(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import requests

    deadline = time.monotonic() + 180
    while True:
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"xai-gate listen did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _verdict_seconds(client: object, model_id: str) -> tuple[float, str]:
    """Register the next version of MODEL; seconds until its verdict is finished."""
    start = time.perf_counter()
    created = client.create_model_version(MODEL, f"models:/{model_id}", model_id=model_id)  # type: ignore[attr-defined]
    version = str(created.version)
    while time.perf_counter() - start < 300:
        verdict = client.get_model_version(MODEL, version).tags.get("xai_gate.verdict")  # type: ignore[attr-defined]
        if verdict in ("passed", "blocked", "inconclusive", "error"):
            return time.perf_counter() - start, version
        time.sleep(0.1)
    raise RuntimeError(f"v{version} got no verdict within 300 s")


def run(*, quick: bool = False) -> list[Row]:
    from mlflow import MlflowClient

    from flows.example import _free_port

    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="xai-gate-listen-") as folder:
        workdir = Path(folder)
        (workdir / "store").mkdir()
        server = _webhook_server(workdir / "store")
        listener = None
        try:
            policy, model_id = _prepare(workdir, server.uri, 8 if quick else 16)
            client = MlflowClient(server.uri, registry_uri=server.uri)
            client.create_registered_model(MODEL)
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            env = _env(workdir) | {"XAI_GATE_WEBHOOK_SECRET": SECRET}
            env["MLFLOW_TRACKING_URI"] = server.uri
            log = workdir / "listen.log"
            with log.open("wb") as out:
                listener = subprocess.Popen(
                    [
                        sys.executable, "-m", "flows.cli", "listen", "--policy", str(policy),
                        "--port", str(port), "--register", f"{url}/webhook",
                    ],
                    cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            _wait_for_health(url, listener, log)
            latencies, versions = [], []
            for _ in range(repeats):
                seconds, version = _verdict_seconds(client, model_id)
                latencies.append(seconds)
                versions.append(version)
            fresh = _fresh_gate(workdir, env, policy, versions[-1])
        finally:
            if listener is not None:
                os.killpg(listener.pid, signal.SIGTERM)
                listener.wait(timeout=60)
            server.kill(signal.SIGTERM)
    latency = statistics.median(latencies)
    return [
        Row("webhook_latency", "fresh xai-gate gate process (start-up included)", fresh, "s"),
        Row(
            "webhook_latency",
            f"create_model_version to verdict via xai-gate listen (median of {repeats})",
            latency,
            "s",
            latency / fresh if fresh > 0 else None,
            "a fresh gate process",
            f"<= {GOAL_S:.0f} s",
            latency <= GOAL_S,
        ),
    ]


def _fresh_gate(workdir: Path, env: dict[str, str], policy: Path, version: str) -> float:
    """A cold ``xai-gate gate --force`` of the same version: what one sweeper gate costs."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "gate", "--policy", str(policy), "--version",
         version, "--force"],
        cwd=workdir, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1, 3):
        raise RuntimeError(f"the fresh gate failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def _webhook_server(store: Path):
    """``mlflow server`` allowed to deliver to http on 127.0.0.1 (it reads these at start)."""
    from flows.example import start_mlflow_server

    allow = {
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    }
    before = {key: os.environ.get(key) for key in allow}
    os.environ.update(allow)
    try:
        return start_mlflow_server(store)
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
