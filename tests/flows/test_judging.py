"""The registrant's code runs in the judging worker, never beside the signing key.

The model is a pickle whose unpickling looks for the key everywhere a process
of the same user can: its own environment, and ``/proc/<pid>/environ`` of
every ancestor, the gate's CLI included. It writes what it found to a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
from mlflow import MlflowClient

from flows.run import run_gate
from pipelines.verdict.decision import Verdict

pytestmark = pytest.mark.slow
MODEL = "prying-model"

PROBE = textwrap.dedent(
    '''
    """A classifier whose unpickling pries for credentials (test_judging.py)."""
    import json
    import os

    import torch


    def _ancestors():
        seen, pid = [], os.getppid()
        while pid > 1 and len(seen) < 12:
            try:
                with open(f"/proc/{pid}/environ", "rb") as handle:
                    environ = handle.read().decode("latin-1")
            except OSError as exc:
                environ = f"unreadable: {type(exc).__name__}"
            seen.append({"pid": pid, "environ": environ})
            with open(f"/proc/{pid}/stat") as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])
        return seen


    class PryingNet(torch.nn.Module):
        def __init__(self, inner, report):
            super().__init__()
            self.inner, self.report = inner, report

        def forward(self, x):
            return self.inner(x)

        def __setstate__(self, state):
            super().__setstate__(state)
            found = {"pid": os.getpid(), "environ": dict(os.environ), "ancestors": _ancestors()}
            with open(self.report, "w") as handle:
                json.dump(found, handle)
    '''
)


@pytest.fixture
def prying_model(trained_pair, lesion_gate, tracking_uri, tmp_path, monkeypatch):
    """The clean model inside a prying pickle, registered; returns (policy, report file)."""
    (tmp_path / "prying_probe.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import prying_probe

    report = tmp_path / "found.json"
    lesion_gate.register(prying_probe.PryingNet(trained_pair.clean, str(report)), MODEL)
    del sys.modules["prying_probe"]  # the gate must not bring it back
    return lesion_gate.policy(tmp_path, MODEL), report


def test_pickle_code_runs_in_the_worker_and_finds_no_key_in_its_environment(
    prying_model, monkeypatch
):
    policy, report = prying_model
    secret = f"key-{uuid.uuid4()}"
    monkeypatch.setenv("XAI_GATE_SECRET", secret)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    outcome = run_gate(MODEL, "1", policy_file=str(policy))
    assert outcome.verdict is Verdict.PASSED and outcome.promoted, outcome.message
    found = json.loads(report.read_text())  # the pickle did run, in another process
    assert found["pid"] != os.getpid()
    assert "XAI_GATE_SECRET" not in found["environ"]
    assert "MLFLOW_TRACKING_PASSWORD" not in found["environ"]
    assert "MLFLOW_TRACKING_URI" not in found["environ"]
    assert secret not in json.dumps(found)
    assert "prying_probe" not in sys.modules  # the gate's process never imported its code
    tags = MlflowClient().get_model_version(MODEL, "1").tags
    assert tags["xai_gate.signature"]  # the parent signed


def test_the_cli_that_holds_the_key_cannot_be_read_by_the_model_it_judges(prying_model, tmp_path):
    """The key in the CLI's own start-up environment: /proc/<cli>/environ is not readable."""
    policy, report = prying_model
    secret = f"key-{uuid.uuid4()}"
    env = {**os.environ, "XAI_GATE_SECRET": secret, "PREFECT_HOME": str(tmp_path / "ph")}
    env.pop("PREFECT_API_URL", None)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    cli = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "gate", "--policy", str(policy), "--version", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    output, _ = cli.communicate(timeout=600)
    assert cli.returncode == 0, output
    found = json.loads(report.read_text())
    ancestors = {entry["pid"]: entry["environ"] for entry in found["ancestors"]}
    assert cli.pid in ancestors, found["ancestors"]  # the walk reached the CLI
    assert ancestors[cli.pid].startswith("unreadable"), "the CLI's environ was readable"
    assert secret not in json.dumps(found)
