"""``make example``: a small, relocatable MLflow store of the demo, committed for review.

The demo runs at reduced size against a local ``mlflow server`` that serves
artifacts, so every run's artifact URI is ``mlflow-artifacts:/...`` and the
store works from any checkout (a plain sqlite store would record absolute
paths). Model weights and tokenizers are removed afterwards and the figures
stored with a palette: the example is for reviewing evidence, and the text
models alone would take 16 MB.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pipelines.report.html import compact_png

__all__ = ["MlflowServer", "make_example", "mlflow_server", "start_mlflow_server"]

CLIENT_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
WEIGHTS = ("model.pth", "pickle_module_info.txt", "extra_files")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MlflowServer:
    """A running ``mlflow server`` in its own process group (it forks its web workers)."""

    uri: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole group, so no worker keeps the port open."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        self.process.wait(timeout=30)
        self.log.close()


def start_mlflow_server(
    store: Path,
    *,
    port: int | None = None,
    timeout: float = 120,
    registry_store_uri: str | None = None,
    env: dict[str, str] | None = None,
    attempts: int = 3,
) -> MlflowServer:
    """Start ``mlflow server`` on ``store/mlflow.db`` serving ``store/mlartifacts``.

    A port picked here may be taken by another process before the server binds it: the
    server then exits at once, and another free port is tried (``attempts`` in all).
    """
    last_error = ""
    for _ in range(1 if port else attempts):
        server = _launch_mlflow_server(store, port or _free_port(), registry_store_uri, env)
        started, last_error = _wait_for_server(server, timeout)
        if started:
            return server
    raise RuntimeError(f"mlflow server did not start: {last_error}")


def _launch_mlflow_server(
    store: Path, port: int, registry_store_uri: str | None, env: dict[str, str] | None
) -> MlflowServer:
    # A file, not a pipe: a chatty server would block on a full pipe. Closed by kill().
    log = tempfile.TemporaryFile()  # noqa: SIM115
    registry = ["--registry-store-uri", registry_store_uri] if registry_store_uri else []
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", "sqlite:///mlflow.db", *registry,
            "--artifacts-destination", "mlartifacts",
            "--serve-artifacts",
        ],
        cwd=store,
        # The server's stores are its arguments, never a client's URI from this environment.
        env={k: v for k, v in os.environ.items() if k not in CLIENT_URI_ENV} | (env or {}),
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )  # fmt: skip
    return MlflowServer(f"http://127.0.0.1:{port}", process, log)


def _wait_for_server(server: MlflowServer, timeout: float) -> tuple[bool, str]:
    """(started, the end of its log when it did not)."""
    import mlflow

    deadline = time.monotonic() + timeout
    while True:
        try:
            mlflow.MlflowClient(server.uri).search_experiments(max_results=1)
            return True, ""
        except Exception:
            if server.process.poll() is not None or time.monotonic() > deadline:
                server.log.seek(0)
                error = server.log.read().decode(errors="replace")[-2000:]
                server.kill()
                return False, error
            time.sleep(0.5)


@contextmanager
def mlflow_server(store: Path, timeout: float = 120) -> Iterator[str]:
    """A local ``mlflow server`` on ``store``, stopped (with its workers) on exit."""
    server = start_mlflow_server(store, timeout=timeout)
    try:
        yield server.uri
    finally:
        server.kill(signal.SIGTERM)


def make_example(dest: Path, *, n_train: int = 1200, n_audit: int = 24) -> Path:
    """Run the reduced demo into a fresh store at ``dest``; return the store folder."""
    from flows.demo import DemoConfig, demo_succeeded, run_demo

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    # Replace the store, keep what else lives there (its README).
    (dest / "mlflow.db").unlink(missing_ok=True)
    shutil.rmtree(dest / "mlartifacts", ignore_errors=True)
    work = dest / "_work"
    with mlflow_server(dest) as uri:
        rows = run_demo(
            DemoConfig(workdir=work, n_train=n_train, n_audit=n_audit, n_test=300, tracking_uri=uri)
        )
    shutil.rmtree(work)
    artifacts = dest / "mlartifacts"
    for weights in [p for name in WEIGHTS for p in artifacts.rglob(name)]:
        shutil.rmtree(weights) if weights.is_dir() else weights.unlink()
    for png in artifacts.rglob("*.png"):  # review figures: a palette keeps them readable
        png.write_bytes(compact_png(png.read_bytes()))
    if not demo_succeeded(rows):
        raise RuntimeError("the reduced demo did not reach its verdicts; the example is wrong")
    return dest
