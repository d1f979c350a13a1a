"""Ctrl-C during a gate: exit 130 within seconds, one line, nothing half-written, gated again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.interrupt import EXIT_INTERRUPTED
from flows.run import run_gate
from pipelines.verdict.decision import Verdict

pytestmark = pytest.mark.slow
MODEL = "interrupted-model"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_during_a_gate_exits_130_at_once_and_the_next_run_gates_again(
    trained_pair, lesion_gate, tracking_uri, tmp_path
):
    lesion_gate.register(trained_pair.clean, MODEL)
    policy = lesion_gate.policy(tmp_path, MODEL, n=64)
    xai_gate = Path(sys.executable).with_name("xai-gate")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)  # the CLI's own temporary server, as a user runs it
    command = [str(xai_gate), "gate", "--policy", str(policy), "--version", "1"]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    output: list[str] = []
    reading = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reading.start()
    deadline = time.monotonic() + 300
    while not any("cam-audit" in line for line in output):  # the audit is under way
        assert process.poll() is None, "".join(output)
        assert time.monotonic() < deadline, "".join(output)
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    started = time.monotonic()
    code = process.wait(timeout=60)
    elapsed = time.monotonic() - started
    reading.join(timeout=10)
    text = "".join(output)
    after = text[text.rindex("cam-audit") :]
    assert code == EXIT_INTERRUPTED, text
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert "interrupted: xai-gate stopped" in after and "Traceback" not in after
    for _ in range(50):  # Prefect's temporary server went with it
        if not _group_alive(process.pid):
            break
        time.sleep(0.1)
    assert not _group_alive(process.pid)
    tags = MlflowClient().get_model_version(MODEL, "1").tags
    assert "xai_gate.verdict" not in tags  # nothing half-written
    again = run_gate(MODEL, "1", policy_file=str(policy))
    assert again.verdict is Verdict.PASSED and not again.reused and again.promoted
