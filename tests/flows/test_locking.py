"""The per-version gate lock: exclusive, and freed the moment a holder is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import flows.locking as locking
from flows.locking import LockTimeout, file_lock_path, version_lock
from pipelines.tracking.config import store_identity

REPO = Path(__file__).resolve().parents[2]


def _held_elsewhere(path: Path) -> bool:
    """Whether another process holds the lock file (probing takes it for an instant)."""
    from filelock import FileLock, Timeout

    try:
        with FileLock(path, timeout=0):
            return False
    except Timeout:
        return True


def _wait_until_held(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and _held_elsewhere(path)):
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"the holder never took the lock:\n{output[-3000:]}")
        time.sleep(0.2)


def _kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_without_a_prefect_server_the_lock_is_exclusive_and_dies_with_its_holder(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(locking, "uses_prefect_server", lambda: False)
    path = file_lock_path("m", "1", str(tmp_path))
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, time; from pathlib import Path; from flows.locking import _file_lock\n"
            "with _file_lock(Path(sys.argv[1]), 5):\n    time.sleep(600)",
            str(path),
        ],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        _wait_until_held(path, holder)
        with (
            pytest.raises(LockTimeout, match="another gate of m v1 held its lock for over 1 s"),
            version_lock("m", "1", scope=str(tmp_path), timeout_seconds=1),
        ):
            pass
        with version_lock("m", "2", scope=str(tmp_path), timeout_seconds=1):
            pass  # another version: another lock
    finally:
        _kill_group(holder)
    # One try, no waiting: the kernel freed it when the holder died, there is no lease to run out.
    with version_lock("m", "1", scope=str(tmp_path), timeout_seconds=0):
        pass


def test_with_a_prefect_server_the_lock_is_a_concurrency_slot():
    """The test harness is a Prefect API: gates on any machine that uses it share the slot."""
    from prefect.client.orchestration import get_client

    assert locking.uses_prefect_server()
    with version_lock("slot-model", "3", timeout_seconds=5):
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name("xai-gate-slot-model-v3")
        assert (limit.limit, limit.active_slots) == (1, 1)
        with (
            pytest.raises(LockTimeout, match="slot-model v3"),
            version_lock("slot-model", "3", timeout_seconds=1),
        ):
            pass
    with get_client(sync_client=True) as client:
        assert (
            client.read_global_concurrency_limit_by_name("xai-gate-slot-model-v3").active_slots == 0
        )


@pytest.mark.slow
def test_a_gate_killed_mid_flow_leaves_no_verdict_and_the_next_gate_runs_at_once(
    trained_pair, lesion_gate, tracking_uri, tmp_path
):
    """Two real ``xai-gate gate`` processes in Prefect's ephemeral mode, the first killed -9."""
    model = "killed-model"
    lesion_gate.register(trained_pair.clean, model)
    policy = lesion_gate.policy(tmp_path, model)
    home = tmp_path / "prefect-home"
    env = {**os.environ, "PREFECT_HOME": str(home), "XAI_GATE_SECRET": "kill-test"}
    env.pop("PREFECT_API_URL", None)  # ephemeral, as a user's CLI runs by default
    command = [sys.executable, "-m", "flows.cli", "gate", "--policy", str(policy), "--version", "1"]
    lock = file_lock_path(model, "1", store_identity(tracking_uri), home=home)

    first = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_until_held(lock, first)  # it has loaded the policy and started its gate
    finally:
        _kill_group(first)  # the CLI and its temporary Prefect server, mid-flow
    client = MlflowClient()
    assert "xai_gate.verdict" not in client.get_model_version(model, "1").tags
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(model, "champion")

    second = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "killed-model v1 passed: all checks passed" in second.stdout
    assert "reused" not in second.stdout
    tags = client.get_model_version(model, "1").tags
    assert tags["xai_gate.verdict"] == "passed"
    assert str(client.get_model_version_by_alias(model, "champion").version) == "1"


@pytest.fixture
def prefect_server(tmp_path, serve_on_a_free_port) -> Iterator[str]:
    """A real ``prefect server start`` whose repossessor looks for expired leases every second
    (the test harness's server is not the service a killed gate's slot depends on)."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-server-home"),
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "1",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)

    def launch(port: int, log) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    server, port, log = serve_on_a_free_port(
        launch,
        lambda port: f"http://127.0.0.1:{port}/api/health",
        tmp_path / "prefect-server.log",
        "the Prefect server",
    )
    try:
        yield f"http://127.0.0.1:{port}/api"
    finally:
        _kill_group(server)
        log.close()


@pytest.mark.slow
def test_a_killed_gates_prefect_slot_is_freed_when_its_lease_runs_out(prefect_server, tmp_path):
    """The slot of a gate killed -9 stays taken while its lease lasts, then the server's
    repossessor frees it and the next gate takes it."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import time; from flows.locking import version_lock\n"
            "with version_lock('lease-model', '1', timeout_seconds=30):\n"
            "    print('held', flush=True); time.sleep(600)",
        ],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held", holder.stdout.read()[-3000:]
    finally:
        _kill_group(holder)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        assert locking.uses_prefect_server()
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name("xai-gate-lease-model-v1")
        assert limit.active_slots == 1  # the dead holder's lease still holds it
        with (
            pytest.raises(LockTimeout, match="lease-model v1"),
            version_lock("lease-model", "1", timeout_seconds=2),
        ):
            pass
        # The wait a lease allows: the repossessor frees the slot once it has run out.
        with version_lock("lease-model", "1", timeout_seconds=locking.LEASE_SECONDS + 60):
            with get_client(sync_client=True) as client:
                limit = client.read_global_concurrency_limit_by_name("xai-gate-lease-model-v1")
            assert limit.active_slots == 1  # now ours
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name("xai-gate-lease-model-v1")
        assert limit.active_slots == 0
